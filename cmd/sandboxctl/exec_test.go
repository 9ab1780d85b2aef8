package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// fakeExecutor runs a few scripted commands:
//
//	echo ARGS...    prints ARGS to stdout
//	exit CODE       prints "out" to stdout and "err" to stderr, exits CODE
//	env             prints the workdir, the env as K=V lines (sorted) and stdin
//	hang            waits for its ctx to end
type fakeExecutor struct{}

func (fakeExecutor) Exec(ctx context.Context, _ string, cmd lifecycle.ExecCommand) (int, error) {
	switch cmd.Cmd[0] {
	case "echo":
		_, err := fmt.Fprintln(cmd.Stdout, strings.Join(cmd.Cmd[1:], " "))
		return 0, err
	case "exit":
		code, _ := strconv.Atoi(cmd.Cmd[1])
		_, _ = io.WriteString(cmd.Stdout, "out")
		_, err := io.WriteString(cmd.Stderr, "err")
		return code, err
	case "env":
		var lines []string
		for k, v := range cmd.Env {
			lines = append(lines, k+"="+v)
		}
		slices.Sort(lines)
		var stdin []byte
		if cmd.Stdin != nil {
			stdin, _ = io.ReadAll(cmd.Stdin)
		}
		_, err := fmt.Fprintf(cmd.Stdout, "workdir=%s\n%s\nstdin=%s\n", cmd.Workdir, strings.Join(lines, "\n"), stdin)
		return 0, err
	case "hang":
		<-ctx.Done()
		return -1, ctx.Err()
	}
	return 127, fmt.Errorf("fake: %q cannot start: %w", cmd.Cmd[0], sandbox.ErrInvalid)
}

func TestExecStreamsAndExitsWithTheCommandsCode(t *testing.T) {
	srv := newServer(t)
	mustRun(t, srv, "create", chatA, "--volume", t.TempDir())

	out, stderr, err := sandboxctl(t, srv, "exec", chatA, "--", "echo", "-n", "hello")
	if err != nil || out != "-n hello\n" || stderr != "" {
		t.Errorf("exec echo: %q %q %v", out, stderr, err)
	}

	out, stderr, err = sandboxctl(t, srv, "exec", chatA, "--", "exit", "7")
	var exit *exitError
	if !errors.As(err, &exit) || exit.code != 7 || out != "out" || stderr != "err" {
		t.Errorf("exec exit 7: stdout %q stderr %q err %v; want exit code 7", out, stderr, err)
	}
	if _, _, err := sandboxctl(t, srv, "exec", chatA, "--", "exit", "0"); err != nil {
		t.Errorf("exec exit 0: %v", err)
	}

	out, _, err = sandboxctl(t, srv, "exec", chatA, "-w", "/workspace/src", "-e", "B=2", "--env", "A=x=y",
		"--stdin", "in put", "--", "env")
	if err != nil || out != "workdir=/workspace/src\nA=x=y\nB=2\nstdin=in put\n" {
		t.Errorf("exec env: %q %v", out, err)
	}

	start := time.Now()
	_, _, err = sandboxctl(t, srv, "exec", chatA, "--timeout", "1s", "--", "hang")
	if !errors.As(err, &exit) || exit.code != timedOutCode || time.Since(start) > 5*time.Second {
		t.Errorf("exec hang --timeout 1s: %v after %s; want exit code %d soon", err, time.Since(start), timedOutCode)
	}

	if _, _, err := sandboxctl(t, srv, "exec", chatB, "--", "echo"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("exec in a chat with no sandbox: %v, want 404", err)
	}
	if _, _, err := sandboxctl(t, srv, "exec", chatA, "-e", "NOEQUALS", "--", "echo"); err == nil {
		t.Error("exec -e NOEQUALS: no error")
	}
	if _, _, err := sandboxctl(t, srv, "exec", chatA, "extra", "--", "echo"); err == nil {
		t.Error("exec with two words before --: no error")
	}
}

func TestExitCodes(t *testing.T) {
	for code, want := range map[int]int{1: 1, 7: 7, 255: 255, 256: 255, -1: 255} {
		if got := exitCode(code); got != want {
			t.Errorf("exitCode(%d) = %d, want %d", code, got, want)
		}
	}
}
