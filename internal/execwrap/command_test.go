package execwrap_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/execwrap"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// command is a Command whose wrapper printed first (nothing when first is ""), and
// whose Run answers with the codes given in turn (its last one after), or with err.
func command(first string, err error, codes ...int) (execwrap.Command, *[][]string) {
	header := execwrap.NewHeaderWriter(io.Discard)
	if first != "" {
		_, _ = io.WriteString(header, first+"\nthe command's output")
	}
	var runs [][]string
	return execwrap.Command{
		Where: "test: exec in box", Starter: "engine", Header: header, Token: "tok",
		Run: func(_ context.Context, argv []string) (int, string, error) {
			runs = append(runs, argv)
			if err != nil {
				return -1, "", err
			}
			return codes[min(len(runs), len(codes))-1], "resisted", nil
		},
	}, &runs
}

// Result is the command's exit code once the wrapper ran it, and otherwise the reason
// it did not run, as the domain's sentinels, its message naming the command.
func TestResult(t *testing.T) {
	for _, c := range []struct {
		first   string
		code    int
		wantErr error
		words   string
	}{
		{first: "42 1234", code: 3},
		{first: execwrap.HeaderNotFound, code: 127, wantErr: sandbox.ErrInvalid, words: "command not found"},
		{first: execwrap.HeaderNoSession, code: 126, wantErr: sandbox.ErrUnavailable, words: "the engine did not start the command in a session of its own"},
		{first: "OCI runtime exec failed: chdir to /nope", code: 126, wantErr: sandbox.ErrInvalid, words: "cannot start (exit 126): OCI runtime exec failed"},
		{first: "", code: 126, wantErr: sandbox.ErrInvalid, words: "cannot start (exit 126)"},
	} {
		cmd, _ := command(c.first, nil)
		code, err := cmd.Result(c.code)
		if c.wantErr == nil {
			if err != nil || code != c.code {
				t.Errorf("%q: Result = %d, %v; want %d", c.first, code, err, c.code)
			}
			continue
		}
		if !errors.Is(err, c.wantErr) || code != -1 || !strings.HasPrefix(err.Error(), "test: exec in box: "+c.words) {
			t.Errorf("%q: Result = %d, %v; want -1 and %q wrapping %v", c.first, code, err, c.words, c.wantErr)
		}
	}
}

// A command that started is killed with KillScript, by its pid, start time and token;
// one that never started is not; a kill refused for want of a pid (exit 126) is tried
// again; a sandbox gone is nothing left to kill; a kill that fails says so.
func TestKill(t *testing.T) {
	cmd, runs := command("42 1234", nil, 0)
	if err := cmd.Kill(nil); err != nil {
		t.Fatal(err)
	}
	want := []string{"/bin/sh", "-c", execwrap.KillScript, "sandboxd-kill", "42", "1234", "tok"}
	if len(*runs) != 1 || !slices.Equal((*runs)[0], want) {
		t.Errorf("ran %q, want the kill script once", *runs)
	}

	for _, first := range []string{"", execwrap.HeaderNotFound, execwrap.HeaderNoSession} {
		cmd, runs := command(first, nil, 0)
		if err := cmd.Kill(nil); err != nil || len(*runs) != 0 {
			t.Errorf("%q: Kill = %v after %d runs, want nothing run", first, err, len(*runs))
		}
	}

	cmd, runs = command("42 1234", nil, 126, 126, 0)
	if err := cmd.Kill(nil); err != nil || len(*runs) != 3 {
		t.Errorf("Kill = %v after %d runs, want success at the third", err, len(*runs))
	}

	cmd, _ = command("42 1234", fmt.Errorf("inspect: %w", sandbox.ErrNotFound))
	if err := cmd.Kill(nil); err != nil {
		t.Errorf("Kill in a sandbox that is gone = %v, want nil", err)
	}
	down := errors.New("engine down")
	cmd, _ = command("42 1234", down)
	if err := cmd.Kill(nil); !errors.Is(err, down) || !strings.HasPrefix(err.Error(), "test: exec in box: kill 42: ") {
		t.Errorf("Kill = %v, want the run's error, named", err)
	}
	cmd, _ = command("42 1234", nil, 1)
	if err := cmd.Kill(nil); !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "exit 1: resisted") {
		t.Errorf("Kill = %v, want ErrUnavailable with the script's exit and output", err)
	}
}

// With the command's output still open, Kill waits for the wrapper's pid on it, kills,
// then waits for the output to end; an output that ends before any pid came means
// nothing to kill.
func TestKillWaitsForThePidAndTheEnd(t *testing.T) {
	header := execwrap.NewHeaderWriter(io.Discard)
	ended := make(chan error, 1)
	killed := make(chan struct{})
	cmd := execwrap.Command{
		Where: "test: exec in box", Header: header, Token: "tok",
		Run: func(_ context.Context, argv []string) (int, string, error) {
			if argv[4] != "7" {
				t.Errorf("killed pid %s, want 7", argv[4])
			}
			close(killed)
			return 0, "", nil
		},
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Kill(ended) }()
	time.Sleep(20 * time.Millisecond) // Kill waits for the pid: nothing to kill yet
	select {
	case <-killed:
		t.Fatal("killed before the pid came")
	default:
	}
	_, _ = io.WriteString(header, "7 99\n")
	<-killed
	select {
	case err := <-done:
		t.Fatalf("Kill returned %v before the output ended", err)
	case <-time.After(20 * time.Millisecond):
	}
	ended <- nil
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	cmd, runs := command("", nil, 0)
	ended = make(chan error, 1)
	ended <- errors.New("stream broken")
	if err := cmd.Kill(ended); err != nil || len(*runs) != 0 {
		t.Errorf("Kill after an output without a pid = %v after %d runs, want nothing run", err, len(*runs))
	}
}

// A command runs in the sandbox's folder, or in dir, taken from there when relative.
func TestWorkdir(t *testing.T) {
	for _, c := range []struct{ base, dir, want string }{
		{"/workspace", "", "/workspace"},
		{"", "", ""},
		{"/workspace", "/tmp/../etc", "/etc"},
		{"/workspace", "src/../lib", "/workspace/lib"},
		{"", "src", "/src"},
	} {
		if got := execwrap.Workdir(c.base, c.dir); got != c.want {
			t.Errorf("Workdir(%q, %q) = %q, want %q", c.base, c.dir, got, c.want)
		}
	}
}
