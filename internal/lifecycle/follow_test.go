package lifecycle_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/memstore"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

// countingInventory counts the listings of the runtime (one per reconciliation) and can
// hold them at a gate, or fail them.
type countingInventory struct {
	mu      sync.Mutex
	calls   int
	gate    chan struct{} // when set, Managed waits for it to close
	entered chan struct{} // when set, Managed signals on it once entered
	err     error
}

func (c *countingInventory) Managed(ctx context.Context) ([]lifecycle.Container, error) {
	c.mu.Lock()
	c.calls++
	gate, entered, err := c.gate, c.entered, c.err
	c.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, err
}

func (c *countingInventory) Identity(context.Context) (string, error) { return "engine-a", nil }

func (c *countingInventory) Calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// scriptedWatcher connects each time Watch is called and stays connected until told to
// drop (or ctx ends).
type scriptedWatcher struct{ drop chan struct{} }

func (w *scriptedWatcher) Watch(ctx context.Context, connected func(), _ func(lifecycle.Ending)) error {
	connected()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-w.drop:
		return errors.New("stream dropped")
	}
}

func followingService(t *testing.T, inv *countingInventory) (*lifecycle.Service, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	svc, err := lifecycle.New(lifecycle.Config{
		Store: memstore.New(), Locker: keylock.New(), Runtime: &lifecycletest.Runtime{}, TTL: ttl,
		Clock: lifecycletest.NewClock(now), Inventory: inv,
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return svc, logs
}

// The start-up reconciliation, begun once the event stream has connected, stands for the
// stream's own: the runtime is listed once between them. A later reconnection, with no
// reconciliation begun since, reconciles again.
func TestStartUpAndStreamReconcileOnce(t *testing.T) {
	ctx := context.Background()
	inv := &countingInventory{}
	svc, logs := followingService(t, inv)
	begun := svc.ReconcilesBegun()
	w := &scriptedWatcher{drop: make(chan struct{})}
	f := svc.Follow(ctx, w, time.Millisecond, time.Millisecond)
	defer f.Stop()
	<-f.Connected()
	if _, _, err := svc.ReconcileSince(ctx, begun); err != nil {
		t.Fatal(err)
	}
	// Whichever took the token first ran; the other found it done.
	waitfor.True(t, 10*time.Second, "the stream's reconciliation asked for and decided", func() bool {
		l := logs.String()
		return strings.Contains(l, `"msg":"reconcile_skipped"`) || strings.Contains(l, `"msg":"reconciled","after":"event_stream_connected"`)
	})
	if n := inv.Calls(); n != 1 {
		t.Fatalf("the runtime was listed %d times by the start-up and the stream's first connection, want 1", n)
	}
	// Once more, the caller's way: nothing began since begun's successor ran.
	if _, ran, err := svc.ReconcileSince(ctx, begun); err != nil || ran {
		t.Fatalf("ReconcileSince after one ran: ran %v, %v; want skipped", ran, err)
	}

	w.drop <- struct{}{}
	waitfor.True(t, 10*time.Second, "the reconnection's reconciliation", func() bool { return inv.Calls() == 2 })
	waitfor.True(t, 10*time.Second, "its log record", func() bool {
		return strings.Contains(logs.String(), `"msg":"reconciled","after":"event_stream_connected"`) &&
			strings.Count(logs.String(), `"msg":"event_stream_connected"`) == 2
	})
}

// A reconciliation that began before the stream connected does not stand for the
// connection's: what ended between its reading and the connection would be missed.
func TestReconciliationBegunBeforeTheConnectionDoesNotCount(t *testing.T) {
	ctx := context.Background()
	inv := &countingInventory{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	svc, logs := followingService(t, inv)
	done := make(chan error, 1)
	go func() { _, err := svc.Reconcile(ctx); done <- err }()
	<-inv.entered // it has read the registry and is listing the runtime

	inv.mu.Lock()
	inv.entered = nil
	inv.mu.Unlock()
	w := &scriptedWatcher{drop: make(chan struct{})}
	f := svc.Follow(ctx, w, time.Millisecond, time.Millisecond)
	defer f.Stop()
	<-f.Connected()
	close(inv.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 10*time.Second, "the stream's own reconciliation", func() bool {
		return strings.Contains(logs.String(), `"msg":"reconciled","after":"event_stream_connected"`)
	})
	if n := inv.Calls(); n != 2 {
		t.Fatalf("the runtime was listed %d times, want 2 (the earlier reconciliation and the stream's)", n)
	}
	if strings.Contains(logs.String(), "reconcile_skipped") {
		t.Fatalf("the stream's reconciliation was skipped:\n%s", logs)
	}
}

// A reconciliation that failed stands for nobody's.
func TestFailedReconciliationDoesNotCount(t *testing.T) {
	ctx := context.Background()
	inv := &countingInventory{err: errors.New("engine away")}
	svc, _ := followingService(t, inv)
	begun := svc.ReconcilesBegun()
	if _, ran, err := svc.ReconcileSince(ctx, begun); err == nil || !ran {
		t.Fatalf("ReconcileSince with the runtime away: ran %v, %v; want ran and failed", ran, err)
	}
	inv.mu.Lock()
	inv.err = nil
	inv.mu.Unlock()
	if _, ran, err := svc.ReconcileSince(ctx, begun); err != nil || !ran {
		t.Fatalf("ReconcileSince after a failed one: ran %v, %v; want it run", ran, err)
	}
	if _, ran, err := svc.ReconcileSince(ctx, begun); err != nil || ran {
		t.Fatalf("ReconcileSince after a successful one: ran %v, %v; want skipped", ran, err)
	}
	if n := inv.Calls(); n != 2 {
		t.Fatalf("the runtime was listed %d times, want 2", n)
	}
}
