package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/client"
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

func TestCopyBothWaysAndList(t *testing.T) {
	srv := newServer(t)
	workspace := t.TempDir()
	mustRun(t, srv, "create", chatA, "--volume", workspace)
	local := t.TempDir()
	content := make([]byte, 100<<10)
	_, _ = rand.Read(content)
	src := filepath.Join(local, "blob.bin")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}

	mustRun(t, srv, "cp", src, chatA+":in/blob.bin")
	if got, err := os.ReadFile(filepath.Join(workspace, "in", "blob.bin")); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("uploaded file: %d bytes, %v", len(got), err)
	}
	mustRun(t, srv, "cp", src, chatA+":/workspace/in/") // a folder: the local name is kept

	back := filepath.Join(local, "back.bin")
	mustRun(t, srv, "cp", chatA+":/workspace/in/blob.bin", back)
	if got, err := os.ReadFile(back); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("downloaded file: %d bytes, %v", len(got), err)
	}
	into := t.TempDir()
	mustRun(t, srv, "cp", chatA+":in/blob.bin", into) // a folder: the remote name is kept
	if got, err := os.ReadFile(filepath.Join(into, "blob.bin")); err != nil || !bytes.Equal(got, content) {
		t.Errorf("download into a folder: %d bytes, %v", len(got), err)
	}
	if out := mustRun(t, srv, "cp", chatA+":in/blob.bin", "-"); out != string(content) {
		t.Errorf("download to stdout: %d bytes", len(out))
	}

	// A failed download leaves the local file alone and no temporary file behind.
	if err := os.WriteFile(back, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sandboxctl(t, srv, "cp", chatA+":nope", back); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("cp of a missing file: %v, want 404", err)
	}
	if got, _ := os.ReadFile(back); string(got) != "mine" {
		t.Errorf("the local file after a failed download: %q", got)
	}
	if des, _ := os.ReadDir(local); len(des) != 2 {
		t.Errorf("the local folder holds %d entries, want 2", len(des))
	}

	out := mustRun(t, srv, "ls", chatA, "in")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "MODE") || !strings.HasPrefix(lines[1], "-rw-r--r--  102400  ") ||
		!strings.HasSuffix(lines[1], " in/blob.bin") {
		t.Errorf("ls table:\n%s", out)
	}
	var items []client.FileInfo
	decode(t, mustRun(t, srv, "ls", chatA, "--json"), &items)
	if len(items) != 1 || items[0].Path != "in" || !items[0].IsDir {
		t.Errorf("ls --json = %+v", items)
	}

	for _, args := range [][]string{
		{"cp", src, back},                         // both local
		{"cp", chatA + ":a", chatA + ":b"},        // both remote
		{"cp", chatA + ":../../etc/passwd", back}, // outside the workspace
		{"cp", filepath.Join(local, "nope"), chatA + ":x"},
	} {
		if _, _, err := sandboxctl(t, srv, args...); err == nil {
			t.Errorf("sandboxctl %s: no error", strings.Join(args, " "))
		}
	}
}

// "cp - <chat>:<path>" uploads what comes on stdin; it must name the file.
func TestCopyFromStdin(t *testing.T) {
	srv := newServer(t)
	workspace := t.TempDir()
	mustRun(t, srv, "create", chatA, "--volume", workspace)
	env := map[string]string{"SANDBOXD_URL": srv.URL, "SANDBOXD_TOKEN": token}
	cp := func(dst string) error {
		var out, errOut bytes.Buffer
		return run(context.Background(), []string{"cp", "-", dst}, func(k string) string { return env[k] },
			strings.NewReader("from stdin\n"), &out, &errOut)
	}
	if err := cp(chatA + ":notes/in.txt"); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(workspace, "notes", "in.txt")); err != nil || string(got) != "from stdin\n" {
		t.Errorf("uploaded from stdin: %q, %v", got, err)
	}
	if err := cp(chatA + ":notes/"); err == nil || !strings.Contains(err.Error(), "name the file") {
		t.Errorf("cp - to a folder: %v, want an error that asks for a file name", err)
	}
}

func TestKeepalive(t *testing.T) {
	srv := newServer(t)
	mustRun(t, srv, "create", chatA)
	var before, after client.Session
	decode(t, mustRun(t, srv, "get", chatA, "--json"), &before)

	decode(t, mustRun(t, srv, "keepalive", chatA, "--ttl", "90m", "--json"), &after)
	if d := after.ExpiresAt.Sub(before.ExpiresAt); d < 29*time.Minute || d > 31*time.Minute {
		t.Errorf("keepalive --ttl 90m moved expiry by %s, want about 30m", d)
	}
	decode(t, mustRun(t, srv, "keepalive", chatA, "--ttl", "10h", "--json"), &after)
	if want := before.CreatedAt.Add(2 * time.Hour); !after.ExpiresAt.Equal(want) {
		t.Errorf("keepalive --ttl 10h: expires %v, want capped at %v", after.ExpiresAt, want)
	}
	if out := mustRun(t, srv, "keepalive", chatA, "--ttl", "1m"); !strings.Contains(out, "EXPIRES    "+after.ExpiresAt.Format(time.RFC3339)) {
		t.Errorf("keepalive table (never shortens):\n%s", out)
	}
	if _, _, err := sandboxctl(t, srv, "keepalive", chatA); err == nil {
		t.Error("keepalive without --ttl: no error")
	}
	if _, _, err := sandboxctl(t, srv, "keepalive", chatB, "--ttl", "1m"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("keepalive of a chat with no sandbox: %v, want 404", err)
	}
}
