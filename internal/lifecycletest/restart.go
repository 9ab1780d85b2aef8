package lifecycletest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// TestRestart checks that a durable registry survives a restart: a new Store on the same
// file or database sees every session, and the first sweep after the restart cleans what
// expired while the service was down. Each call of open must return a new Store on one
// and the same backing database, and a function that closes it.
func TestRestart(t *testing.T, open func(t *testing.T) (st lifecycle.Store, close func() error)) {
	ctx := context.Background()
	clock := NewClock(Base)
	rt := &Runtime{}

	before, closeBefore := open(t)
	svc := newService(t, before, rt, clock)
	made := map[uuid.UUID]sandbox.Session{}
	var early []uuid.UUID
	for i := range 5 {
		if i == 3 {
			clock.Set(Base.Add(5 * time.Minute))
		}
		chat := uuid.New()
		s, outcome, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat, AgentID: "agent-alpha"})
		if err != nil || outcome != lifecycle.Created {
			t.Fatalf("Create: %v, %v", outcome, err)
		}
		made[chat] = s
		if i < 3 {
			early = append(early, chat)
		}
	}
	if err := closeBefore(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// The process restarts: new Store, new Service, the clock past the first three expiries.
	after, closeAfter := open(t)
	t.Cleanup(func() {
		if err := closeAfter(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if n, err := after.Count(ctx); err != nil || n != 5 {
		t.Fatalf("after restart: Count = %d, %v; want 5", n, err)
	}
	for chat, want := range made {
		got, err := after.Get(ctx, chat)
		if err != nil || !Equal(got, want) {
			t.Fatalf("after restart: Get(%s) = %+v, %v; want %+v", chat, got, err, want)
		}
	}
	clock.Set(Base.Add(12 * time.Minute)) // TTL 10m: the first three expired
	cleaned, err := newService(t, after, rt, clock).CleanupExpired(ctx)
	if err != nil {
		t.Fatalf("CleanupExpired: %v", err)
	}
	if len(cleaned) != 3 {
		t.Fatalf("swept %d sessions, want 3", len(cleaned))
	}
	for _, chat := range early {
		if _, err := after.Get(ctx, chat); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("expired chat %s still registered: %v", chat, err)
		}
		if !rt.Stopped(made[chat].ContainerID) {
			t.Errorf("container of expired chat %s not stopped", chat)
		}
	}
	if n, err := after.Count(ctx); err != nil || n != 2 {
		t.Fatalf("after sweep: Count = %d, %v; want 2", n, err)
	}
}

func newService(t *testing.T, st lifecycle.Store, rt lifecycle.Runtime, clock lifecycle.Clock) *lifecycle.Service {
	t.Helper()
	svc, err := lifecycle.New(lifecycle.Config{
		Store: st, Locker: keylock.New(), Runtime: rt, TTL: 10 * time.Minute, Clock: clock,
	})
	if err != nil {
		t.Fatalf("lifecycle.New: %v", err)
	}
	return svc
}
