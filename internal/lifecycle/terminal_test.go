package lifecycle_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/memstore"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// terminals is a Terminals that holds each session until its context ends or exit is
// closed, and then returns code.
type terminals struct {
	opened chan lifecycle.TerminalIO
	exit   chan struct{}
	code   int
}

func (f *terminals) Terminal(ctx context.Context, _ string, t lifecycle.TerminalIO) (int, error) {
	f.opened <- t
	select {
	case <-ctx.Done():
		return -1, ctx.Err()
	case <-f.exit:
		return f.code, nil
	}
}

type sink struct {
	mu     sync.Mutex
	events []lifecycle.Event
}

func (s *sink) Record(e lifecycle.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, e)
}

func (s *sink) types() []lifecycle.EventType {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []lifecycle.EventType
	for _, e := range s.events {
		out = append(out, e.Type)
	}
	return out
}

// A terminal holds one of the sandbox's exec slots while it lasts, is another tenant's
// chat's not found, returns the shell's exit code, ends with its caller, and is reported
// as events.
func TestTerminalHoldsAnExecSlotAndKeepsToItsTenant(t *testing.T) {
	ctx := sandbox.WithTenant(context.Background(), "t1")
	term := &terminals{opened: make(chan lifecycle.TerminalIO, 1), exit: make(chan struct{}), code: 7}
	events := &sink{}
	svc, err := lifecycle.New(lifecycle.Config{
		Store: memstore.New(), Locker: keylock.New(), Runtime: &lifecycletest.Runtime{}, TTL: ttl,
		Clock: lifecycletest.NewClock(now), Executor: &lifecycletest.Executor{}, Terminals: term,
		ExecMaxConcurrent: 1, Events: events,
	})
	if err != nil {
		t.Fatal(err)
	}
	chat := uuid.New()
	if _, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Terminal(sandbox.WithTenant(context.Background(), "t2"), lifecycle.TerminalRequest{ChatID: chat}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("another tenant's terminal: %v, want not found", err)
	}

	done := make(chan error, 1)
	var code int
	go func() {
		var err error
		code, err = svc.Terminal(ctx, lifecycle.TerminalRequest{ChatID: chat, TerminalIO: lifecycle.TerminalIO{Size: lifecycle.TermSize{Cols: 90, Rows: 20}}})
		done <- err
	}()
	if got := <-term.opened; got.Size != (lifecycle.TermSize{Cols: 90, Rows: 20}) {
		t.Errorf("the runtime got size %+v", got.Size)
	}
	if _, err := svc.Exec(ctx, lifecycle.ExecRequest{ChatID: chat, Cmd: []string{"true"}}); !errors.Is(err, sandbox.ErrBusy) {
		t.Errorf("exec beside the terminal with ExecMaxConcurrent 1: %v, want busy", err)
	}
	close(term.exit)
	if err := <-done; err != nil || code != 7 {
		t.Fatalf("terminal = %d, %v; want the shell's 7", code, err)
	}
	if _, err := svc.Exec(ctx, lifecycle.ExecRequest{ChatID: chat, Cmd: []string{"echo"}}); err != nil {
		t.Errorf("exec once the terminal ended: %v", err)
	}

	// A caller that leaves ends it (the runtime kills the shell).
	term.exit = make(chan struct{})
	cctx, cancel := context.WithCancel(ctx)
	go func() { _, err := svc.Terminal(cctx, lifecycle.TerminalRequest{ChatID: chat}); done <- err }()
	<-term.opened
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("terminal of a caller that left: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal outlived its caller")
	}
	// The refused exec is no event: it never ran.
	want := []lifecycle.EventType{lifecycle.EventCreated, lifecycle.EventTerminal, lifecycle.EventTerminal,
		lifecycle.EventExec, lifecycle.EventTerminal, lifecycle.EventTerminal}
	if got := events.types(); !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}
