package main

import (
	"errors"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
)

func TestExecStreamsAndExitsWithTheCommandsCode(t *testing.T) {
	srv := newServer(t)
	mustRun(t, srv, "create", chatA, "--volume", t.TempDir())

	out, stderr, err := sandboxctl(t, srv, "exec", chatA, "--", "echo", "-n", "hello")
	if err != nil || out != "-n hello\n" || stderr != "" {
		t.Errorf("exec echo: %q %q %v", out, stderr, err)
	}

	out, stderr, err = sandboxctl(t, srv, "exec", chatA, "--", "exit", "7", "out", "err")
	var exit *exitError
	if !errors.As(err, &exit) || exit.code != 7 || out != "out" || stderr != "err" {
		t.Errorf("exec exit 7: stdout %q stderr %q err %v; want exit code 7", out, stderr, err)
	}
	if _, _, err := sandboxctl(t, srv, "exec", chatA, "--", "exit", "0"); err != nil {
		t.Errorf("exec exit 0: %v", err)
	}

	out, _, err = sandboxctl(t, srv, "exec", chatA, "-w", "/workspace/src", "-e", "B=2", "--env", "A=x=y",
		"--stdin", "in put", "--", "env")
	if err != nil || out != "workdir=/workspace/src\nA=x=y\nB=2\n" {
		t.Errorf("exec env: %q %v", out, err)
	}
	out, _, err = sandboxctl(t, srv, "exec", chatA, "--stdin", "in put", "--", "cat")
	if err != nil || out != "in put" {
		t.Errorf("exec --stdin: %q %v", out, err)
	}

	start := time.Now()
	_, _, err = sandboxctl(t, srv, "exec", chatA, "--timeout", "1s", "--", "hang")
	if !errors.As(err, &exit) || exit.code != timedOutCode || time.Since(start) > 5*time.Second {
		t.Errorf("exec hang --timeout 1s: %v after %s; want exit code %d soon", err, time.Since(start), timedOutCode)
	}

	if _, _, err := sandboxctl(t, srv, "exec", chatB, "--", "echo"); !errors.Is(err, client.ErrNotFound) {
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
