package lifecycle_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/memstore"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

// scriptedExecutor writes out and errOut, then either exits with code or, when hang is
// set, waits for ctx to end and reports whether it saw that (the "kill").
type scriptedExecutor struct {
	out, errOut string
	code        int
	hang        bool
	running     chan struct{} // closed when a hanging command has started, if not nil
	killed      chan struct{}
	got         lifecycle.ExecCommand
	container   string
}

func (e *scriptedExecutor) Exec(ctx context.Context, containerID string, cmd lifecycle.ExecCommand) (int, error) {
	e.got, e.container = cmd, containerID
	if cmd.Stdin != nil {
		in, _ := io.ReadAll(cmd.Stdin)
		_, _ = cmd.Stdout.Write(in)
	}
	_, _ = io.WriteString(cmd.Stdout, e.out)
	_, _ = io.WriteString(cmd.Stderr, e.errOut)
	if e.hang {
		if e.running != nil {
			close(e.running)
		}
		<-ctx.Done()
		close(e.killed)
		return 0, ctx.Err()
	}
	return e.code, nil
}

type agentEnv struct {
	store *memstore.Store
	exec  *scriptedExecutor
	tel   *telemetry
	svc   *lifecycle.Service
}

func newAgentEnv(t *testing.T, exec *scriptedExecutor, cfg lifecycle.Config, sessions ...sandbox.Session) *agentEnv {
	t.Helper()
	e := &agentEnv{store: storeWith(t, sessions...), exec: exec, tel: newTelemetry(t)}
	cfg.Store, cfg.Locker, cfg.Runtime, cfg.TTL, cfg.Clock = e.store, keylock.New(), &lifecycletest.Runtime{}, ttl, lifecycletest.NewClock(now)
	cfg.Executor, cfg.Tracer, cfg.MeterProvider = exec, e.tel.tp, e.tel.mp
	svc, err := lifecycle.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	return e
}

func TestExecRunsInTheLiveSandboxAndReportsOutput(t *testing.T) {
	exec := &scriptedExecutor{out: "hello\n", errOut: "warn\n", code: 3}
	e := newAgentEnv(t, exec, lifecycle.Config{}, liveSession())
	var stdout, stderr bytes.Buffer
	res, err := e.svc.Exec(context.Background(), lifecycle.ExecRequest{
		ChatID: chatID, Cmd: []string{"sh", "-c", "x"}, Env: map[string]string{"A": "1"}, Workdir: "/workspace/sub",
		Stdin: strings.NewReader("in:"), Stdout: &stdout, Stderr: &stderr,
	})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	assertEqual(t, "result", res, lifecycle.ExecResult{ExitCode: 3})
	assertEqual(t, "stdout", stdout.String(), "in:hello\n")
	assertEqual(t, "stderr", stderr.String(), "warn\n")
	assertEqual(t, "container", exec.container, "container-1")
	assertEqual(t, "env", exec.got.Env, map[string]string{"A": "1"})
	assertEqual(t, "workdir", exec.got.Workdir, "/workspace/sub")
	assertCounted(t, e.tel, "sandbox.exec.total", map[string]any{"result": "completed"})
	if _, ok := e.tel.metric(t, "sandbox.exec.duration"); !ok {
		t.Fatal("exec duration not recorded")
	}
}

func TestExecCapsOutputAndSaysSo(t *testing.T) {
	exec := &scriptedExecutor{out: strings.Repeat("o", 60), errOut: strings.Repeat("e", 60)}
	e := newAgentEnv(t, exec, lifecycle.Config{ExecOutputCap: 100}, liveSession())
	var stdout, stderr bytes.Buffer
	res, err := e.svc.Exec(context.Background(), lifecycle.ExecRequest{ChatID: chatID, Cmd: []string{"x"}, Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if !res.Truncated {
		t.Fatal("120 bytes under a cap of 100 not flagged as truncated")
	}
	assertEqual(t, "bytes kept", stdout.Len()+stderr.Len(), 100)
}

func TestExecTimeoutKillsTheCommand(t *testing.T) {
	exec := &scriptedExecutor{hang: true, killed: make(chan struct{})}
	e := newAgentEnv(t, exec, lifecycle.Config{}, liveSession())
	res, err := e.svc.Exec(context.Background(), lifecycle.ExecRequest{ChatID: chatID, Cmd: []string{"sleep", "60"}, Timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	assertEqual(t, "result", res, lifecycle.ExecResult{ExitCode: -1, TimedOut: true})
	<-exec.killed
	assertCounted(t, e.tel, "sandbox.exec.total", map[string]any{"result": "timed_out"})
}

func TestExecOfACallerThatLeavesKillsTheCommand(t *testing.T) {
	exec := &scriptedExecutor{hang: true, running: make(chan struct{}), killed: make(chan struct{})}
	e := newAgentEnv(t, exec, lifecycle.Config{}, liveSession())
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-exec.running; cancel() }() // leave once the command runs
	if _, err := e.svc.Exec(ctx, lifecycle.ExecRequest{ChatID: chatID, Cmd: []string{"sleep", "60"}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Exec: err = %v, want context.Canceled", err)
	}
	<-exec.killed
}

func TestExecRefusals(t *testing.T) {
	expired := liveSession()
	expired.ExpiresAt = now
	for _, tc := range []struct {
		name    string
		session *sandbox.Session
		req     lifecycle.ExecRequest
		want    error
	}{
		{"no sandbox", nil, lifecycle.ExecRequest{ChatID: chatID, Cmd: []string{"true"}}, sandbox.ErrNotFound},
		{"expired sandbox", &expired, lifecycle.ExecRequest{ChatID: chatID, Cmd: []string{"true"}}, sandbox.ErrExpired},
		{"empty command", &expired, lifecycle.ExecRequest{ChatID: chatID}, sandbox.ErrInvalid},
		{"timeout over the maximum", &expired, lifecycle.ExecRequest{ChatID: chatID, Cmd: []string{"true"}, Timeout: time.Hour}, sandbox.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sessions []sandbox.Session
			if tc.session != nil {
				sessions = append(sessions, *tc.session)
			}
			exec := &scriptedExecutor{}
			e := newAgentEnv(t, exec, lifecycle.Config{}, sessions...)
			if _, err := e.svc.Exec(context.Background(), tc.req); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if exec.container != "" {
				t.Fatal("the executor was called")
			}
		})
	}
}

// gateExecutor holds every command until release is closed, counting those it holds.
type gateExecutor struct {
	running atomic.Int32
	release chan struct{}
}

func (g *gateExecutor) Exec(ctx context.Context, _ string, _ lifecycle.ExecCommand) (int, error) {
	g.running.Add(1)
	defer g.running.Add(-1)
	select {
	case <-g.release:
		return 0, nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// One sandbox runs at most ExecMaxConcurrent commands at once: one more is refused as
// busy without reaching the runtime, other sandboxes are not held back, and a slot is
// free again once a command ends.
func TestExecConcurrencyIsBoundedPerSandbox(t *testing.T) {
	other := liveSession()
	other.ID, other.ChatID, other.ContainerID = uuid.New(), uuid.New(), "container-2"
	gate := &gateExecutor{release: make(chan struct{})}
	tel := newTelemetry(t)
	svc, err := lifecycle.New(lifecycle.Config{
		Store: storeWith(t, liveSession(), other), Locker: keylock.New(), Runtime: &lifecycletest.Runtime{}, TTL: ttl,
		Clock: lifecycletest.NewClock(now), Executor: gate, ExecMaxConcurrent: 2, Tracer: tel.tp, MeterProvider: tel.mp,
	})
	if err != nil {
		t.Fatal(err)
	}
	run := func(chat uuid.UUID) <-chan error {
		done := make(chan error, 1)
		go func() {
			_, err := svc.Exec(context.Background(), lifecycle.ExecRequest{ChatID: chat, Cmd: []string{"sleep"}, Timeout: time.Minute})
			done <- err
		}()
		return done
	}
	waitRunning := func(n int32) {
		t.Helper()
		waitfor.True(t, 5*time.Second, fmt.Sprintf("%d commands running", n), func() bool { return gate.running.Load() == n })
	}
	held := []<-chan error{run(chatID), run(chatID)}
	waitRunning(2)
	if _, err := svc.Exec(context.Background(), lifecycle.ExecRequest{ChatID: chatID, Cmd: []string{"true"}}); !errors.Is(err, sandbox.ErrBusy) {
		t.Fatalf("a third command in the sandbox: err = %v, want ErrBusy", err)
	}
	assertCounted(t, tel, "sandbox.exec.total", map[string]any{"result": "busy"})
	held = append(held, run(other.ChatID)) // another sandbox is not held back
	waitRunning(3)
	close(gate.release)
	for _, done := range held {
		if err := <-done; err != nil {
			t.Fatalf("held command: %v", err)
		}
	}
	if _, err := svc.Exec(context.Background(), lifecycle.ExecRequest{ChatID: chatID, Cmd: []string{"true"}}); err != nil {
		t.Fatalf("a command once the others ended: %v", err)
	}
}
