package lifecycle_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/memstore"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

func cappedService(t *testing.T, store lifecycle.Store, runtime lifecycle.Runtime, maxSandboxes int) (*lifecycle.Service, *telemetry) {
	t.Helper()
	tel := newTelemetry(t)
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Locker: keylock.New(), Runtime: runtime, TTL: ttl, Clock: lifecycletest.NewClock(now),
		MaxSandboxes: maxSandboxes, Tracer: tel.tp, MeterProvider: tel.mp,
	})
	if err != nil {
		t.Fatal(err)
	}
	return svc, tel
}

func TestMaxSandboxesRefusesNewChatsAndNothingElse(t *testing.T) {
	ctx := context.Background()
	store, runtime := memstore.New(), &lifecycletest.Runtime{}
	svc, tel := cappedService(t, store, runtime, 3)
	chats := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	for _, c := range chats {
		if _, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: c}); err != nil {
			t.Fatalf("create under the cap: %v", err)
		}
	}
	_, outcome, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: uuid.New()})
	if !errors.Is(err, sandbox.ErrBusy) || outcome != lifecycle.AtCapacity {
		t.Fatalf("create over the cap = %s, %v; want at_capacity, ErrBusy", outcome, err)
	}
	if creates, _, _ := runtime.Calls(); len(creates) != 3 {
		t.Fatalf("runtime creates = %d, want 3: the refused create made something", len(creates))
	}
	if n, _ := store.Count(ctx); n != 3 {
		t.Fatalf("registry holds %d, want 3", n)
	}
	if got := tel.counter(t, "sandbox.create.total", map[string]any{"result": "at_capacity"}); got != 1 {
		t.Errorf("at_capacity creates counted %d, want 1", got)
	}
	// At the cap, a chat that has its sandbox still gets it.
	if _, outcome, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: chats[0]}); err != nil || outcome != lifecycle.Reused {
		t.Fatalf("reuse at the cap = %s, %v", outcome, err)
	}
	// Room made by a delete is room again.
	if _, err := svc.Delete(ctx, chats[1]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: uuid.New()}); err != nil {
		t.Fatalf("create after a delete: %v", err)
	}
}

func TestMaxSandboxesHoldsUnderConcurrentCreates(t *testing.T) {
	ctx := context.Background()
	store, runtime := memstore.New(), &lifecycletest.Runtime{}
	const limit, n = 5, 40
	svc, _ := cappedService(t, store, runtime, limit)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
	)
	for range n {
		wg.Go(func() {
			_, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: uuid.New()})
			switch {
			case err == nil:
				mu.Lock()
				created++
				mu.Unlock()
			case !errors.Is(err, sandbox.ErrBusy):
				t.Errorf("create: %v, want success or ErrBusy", err)
			}
		})
	}
	wg.Wait()
	count, _ := store.Count(ctx)
	creates, _, _ := runtime.Calls()
	if created == 0 || created > limit || count != created || len(creates) != created {
		t.Fatalf("created %d, registry %d, runtime creates %d; want 1..%d, all equal", created, count, len(creates), limit)
	}
}
