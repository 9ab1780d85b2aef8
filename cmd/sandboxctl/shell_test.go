package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testing/sandboxdtest"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
)

// sandboxctl shell under a pseudo-terminal, against a real sandboxd (binary, Docker):
// the terminal's size reaches the sandbox's, a window size change is forwarded, typed
// keys run, and the shell's exit code is sandboxctl's. On both of sandboxd's paths: the
// in-sandbox agent's pseudo-terminal, and the engine's exec with a TTY.
func TestShellUnderAPseudoTerminal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin, remove, err := sandboxdtest.Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	t.Run("agent", func(t *testing.T) { shellUnderAPseudoTerminal(ctx, t, sandboxdtest.StartT(t, bin), true) })
	t.Run("engine", func(t *testing.T) {
		shellUnderAPseudoTerminal(ctx, t, sandboxdtest.StartT(t, bin, "SANDBOXD_DOCKER_AGENT=none"), false)
	})
}

func shellUnderAPseudoTerminal(ctx context.Context, t *testing.T, srv *sandboxdtest.Server, viaAgent bool) {
	api, err := client.New(srv.URL, sandboxdtest.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	chat := uuid.NewString()
	if _, _, err := api.Create(ctx, chat, client.CreateBody{}); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0], "shell", chat, "--server", srv.URL, "--token", sandboxdtest.Token)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	var out syncbuf.Buffer
	go func() { _, _ = io.Copy(&out, ptmx) }()
	typeLine := func(line, want string) {
		t.Helper()
		from := len(out.String())
		if _, err := ptmx.Write([]byte(line + "\r")); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String()[from:], want); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q after typing %q; output:\n%q", want, line, out.String())
			}
		}
	}
	// The shell's prompt first: typed before it, a line may reach a half-set-up terminal.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), "$ "); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no prompt; output:\n%q", out.String())
		}
	}
	typeLine("stty size", "30 100")
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	// The resize travels as a signal, then a message: ask until it has come.
	for deadline := time.Now().Add(20 * time.Second); ; {
		from := len(out.String())
		typeLine("stty size", "\n")
		time.Sleep(200 * time.Millisecond)
		if strings.Contains(out.String()[from:], "40 120") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new size never reached the sandbox; output:\n%q", out.String())
		}
	}
	typeLine("echo typed-$((2+3))", "typed-5")
	// The path taken: the agent is the shell's parent, or the engine's wrapper execs it.
	from := len(out.String())
	typeLine(`echo "parent:$(tr '\0' ' ' </proc/$PPID/cmdline 2>/dev/null):"`, ":\r\n")
	if got := out.String()[from:]; strings.Contains(got, "parent:/.sandboxd-agent :") != viaAgent {
		t.Errorf("the shell's parent: %q; through the agent: %v", got, viaAgent)
	}
	if _, err := ptmx.Write([]byte("exit 5\r")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 5 {
			t.Fatalf("sandboxctl shell ended with %v, want exit code 5; output:\n%q", err, out.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("sandboxctl shell did not end after exit 5; output:\n%q", out.String())
	}
}
