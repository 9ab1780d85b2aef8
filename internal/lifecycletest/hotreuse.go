package lifecycletest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Replica is one process's view of a registry for TestHotReuse: its Store and its Locker.
type Replica struct {
	Store  lifecycle.Store
	Locker lifecycle.Locker
}

// TestHotReuse races creates that reuse one chat's sandbox (which a store offering
// lifecycle.Snapshots lets answer without the chat's lock) against everything that may
// change the chat's session under them: delete, keepalive, the sweep, a replacement and,
// when replicas is set, a delete by another replica on the same registry. No reuse may
// answer stale: a container removed, or an expiry moved, before the request began.
// newRegistry makes a fresh registry and returns how to open it; each call of open gives
// another replica on that same registry (called once unless replicas is set).
func TestHotReuse(t *testing.T, newRegistry func(t *testing.T) (open func(t *testing.T) Replica), replicas bool) {
	t.Run("ReusesTakeNoLock", func(t *testing.T) { testReusesTakeNoLock(t, newRegistry(t)(t)) })
	t.Run("AgainstDelete", func(t *testing.T) {
		h := newHot(t, newRegistry(t)(t))
		h.race(t, 20, func(t *testing.T, round int) { h.delete(t, h.svc) })
	})
	t.Run("AgainstKeepalive", func(t *testing.T) {
		h := newHot(t, newRegistry(t)(t))
		h.race(t, 20, func(t *testing.T, round int) {
			h.clock.Advance(time.Minute) // keepalive then moves the expiry a minute on
			s, err := h.svc.Keepalive(context.Background(), h.chat, hotTTL)
			if err != nil {
				t.Errorf("Keepalive: %v", err)
				return
			}
			h.extended(s.ExpiresAt)
		})
	})
	t.Run("AgainstSweepAndReplace", func(t *testing.T) {
		h := newHot(t, newRegistry(t)(t))
		h.race(t, 20, func(t *testing.T, round int) {
			// The session expires; the sweep and the reusers (which replace it) race.
			h.clock.Advance(hotTTL + time.Second)
			if _, err := h.svc.CleanupExpired(context.Background()); err != nil {
				t.Errorf("CleanupExpired: %v", err)
			}
		})
	})
	if replicas {
		t.Run("AgainstAnotherReplicasDelete", func(t *testing.T) {
			open := newRegistry(t)
			h := newHot(t, open(t))
			other := h.service(t, open(t))
			h.race(t, 10, func(t *testing.T, round int) { h.delete(t, other) })
		})
	}
}

const hotTTL = 10 * time.Minute

// countingLocker counts the locks taken.
type countingLocker struct {
	lifecycle.Locker
	n atomic.Int64
}

func (l *countingLocker) Lock(ctx context.Context, chat uuid.UUID) (func(), error) {
	l.n.Add(1)
	return l.Locker.Lock(ctx, chat)
}

func testReusesTakeNoLock(t *testing.T, r Replica) {
	if _, ok := r.Store.(lifecycle.Snapshots); !ok {
		t.Fatalf("%T offers no lifecycle.Snapshots", r.Store)
	}
	locker := &countingLocker{Locker: r.Locker}
	r.Locker = locker
	h := newHot(t, r)
	before := locker.n.Load()
	const reuses = 2000
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range reuses / 8 {
				if _, outcome, err := h.svc.Create(context.Background(), h.req); err != nil || outcome != lifecycle.Reused {
					t.Errorf("Create = %v, %v; want reused", outcome, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// A lease may lapse (its linger) and be taken again under the lock now and then.
	if n := locker.n.Load() - before; n > reuses/20 {
		t.Fatalf("%d reuses of a live session took %d locks", reuses, n)
	}
}

// hot is one hot chat, its service and what its runtime and use cases have done, in one
// order: every event takes the next number of seq.
type hot struct {
	chat  uuid.UUID
	req   lifecycle.CreateRequest
	clock *Clock
	svc   *lifecycle.Service
	seq   atomic.Uint64

	mu       sync.Mutex
	gone     map[string]uint64 // container -> when the runtime had removed it
	expiries []expiry          // expiries keepalives returned, in order
}

type expiry struct {
	at      uint64
	expires time.Time
}

func newHot(t *testing.T, r Replica) *hot {
	h := &hot{chat: uuid.New(), clock: NewClock(time.Now().UTC().Truncate(time.Second)), gone: map[string]uint64{}}
	h.req = lifecycle.CreateRequest{ChatID: h.chat, AgentID: "agent-alpha", VolumeHostPath: "/volumes/hot"}
	h.svc = h.service(t, r)
	if _, _, err := h.svc.Create(context.Background(), h.req); err != nil {
		t.Fatalf("first Create: %v", err)
	}
	return h
}

func (h *hot) service(t *testing.T, r Replica) *lifecycle.Service {
	t.Helper()
	svc, err := lifecycle.New(lifecycle.Config{
		Store: r.Store, Locker: r.Locker, Runtime: &goneRuntime{h: h}, TTL: hotTTL, Clock: h.clock,
		MaxLifetime: 1000 * time.Hour,
	})
	if err != nil {
		t.Fatalf("lifecycle.New: %v", err)
	}
	return svc
}

func (h *hot) extended(expires time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.expiries = append(h.expiries, expiry{at: h.seq.Add(1), expires: expires})
}

// delete deletes the chat through svc and creates it again.
func (h *hot) delete(t *testing.T, svc *lifecycle.Service) {
	if _, err := svc.Delete(context.Background(), h.chat); err != nil {
		t.Errorf("Delete: %v", err)
	}
}

// race runs 8 reusers of the chat while writer runs rounds times, and checks every answer
// a reuser got against what had happened before its request began.
func (h *hot) race(t *testing.T, rounds int, writer func(t *testing.T, round int)) {
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reused atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := h.seq.Add(1)
				now := h.clock.Now()
				got, outcome, err := h.svc.Create(ctx, h.req)
				if err != nil {
					t.Errorf("Create: %v", err)
					return
				}
				if outcome == lifecycle.Reused {
					reused.Add(1)
				}
				if err := h.check(got, start, now); err != nil {
					t.Errorf("Create answered %s %s (expires %s): %v", outcome, got.ContainerID, got.ExpiresAt, err)
					return
				}
			}
		}()
	}
	for round := range rounds {
		time.Sleep(2 * time.Millisecond) // let the reusers run hot
		writer(t, round)
	}
	close(stop)
	wg.Wait()
	if reused.Load() == 0 {
		t.Fatal("no create reused the chat's sandbox")
	}
}

// check tells why s was a stale answer to a create that began at start (clock at now).
func (h *hot) check(s sandbox.Session, start uint64, now time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if at, ok := h.gone[s.ContainerID]; ok && at < start {
		return errors.New("its container was removed before the request began")
	}
	if !s.ExpiresAt.After(now) {
		return errors.New("it had expired when the request began")
	}
	for _, e := range h.expiries {
		if e.at < start && s.ExpiresAt.Before(e.expires) {
			return errors.New("a keepalive had moved its expiry later before the request began")
		}
	}
	return nil
}

// goneRuntime makes pretend sandboxes and records when each was removed; it then dawdles
// a little, as a real engine does, before the use case goes on to the registry.
type goneRuntime struct {
	Runtime
	h *hot
}

func (r *goneRuntime) removed(containerID string) {
	r.h.mu.Lock()
	if _, ok := r.h.gone[containerID]; !ok {
		r.h.gone[containerID] = r.h.seq.Add(1)
	}
	r.h.mu.Unlock()
	time.Sleep(time.Millisecond)
}

func (r *goneRuntime) Stop(ctx context.Context, containerID string) error {
	r.removed(containerID)
	return nil
}

func (r *goneRuntime) Delete(ctx context.Context, containerID string) error {
	r.removed(containerID)
	return nil
}
