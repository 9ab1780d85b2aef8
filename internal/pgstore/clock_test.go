package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/pgtest"
)

// fastClock is a replica's clock that runs a minute fast.
type fastClock struct{}

func (fastClock) Now() time.Time { return time.Now().Add(time.Minute) }

// stoppingRuntime stops whatever it is asked to; the sweep needs no more.
type stoppingRuntime struct{ stopped []string }

func (r *stoppingRuntime) Create(context.Context, lifecycle.CreateSpec) (sandbox.Session, error) {
	panic("not used")
}
func (r *stoppingRuntime) Stop(_ context.Context, id string) error {
	r.stopped = append(r.stopped, id)
	return nil
}
func (r *stoppingRuntime) Delete(ctx context.Context, id string) error { return r.Stop(ctx, id) }

// A replica whose clock runs a minute fast tells the database's time through the store's
// Clock, and its sweep leaves alone a session that expires in 30 s by the database's
// clock; on its own clock it would have stopped it half a minute early.
func TestAReplicaWithAFastClockNeverSweepsEarly(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.DSN(t))
	st := newStore(t, pool)
	clock := st.Clock(fastClock{}.Now)
	offset, err := clock.Sync(ctx)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if offset > -59*time.Second || offset < -61*time.Second {
		t.Fatalf("offset = %v, want about -1m", offset)
	}
	var dbNow time.Time
	if err := pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&dbNow); err != nil {
		t.Fatal(err)
	}
	if d := clock.Now().Sub(dbNow); d.Abs() > time.Second {
		t.Fatalf("Clock.Now is %v off the database's time", d)
	}

	s := lifecycletest.NewSession(uuid.New(), dbNow.Add(30*time.Second).Truncate(time.Microsecond))
	if err := st.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	sweep := func(c lifecycle.Clock) (int, *stoppingRuntime) {
		t.Helper()
		rt := &stoppingRuntime{}
		svc, err := lifecycle.New(lifecycle.Config{Store: st, Locker: keylock.New(), Runtime: rt, TTL: time.Hour, Clock: c})
		if err != nil {
			t.Fatal(err)
		}
		cleaned, err := svc.CleanupExpired(ctx)
		if err != nil {
			t.Fatalf("CleanupExpired: %v", err)
		}
		return len(cleaned), rt
	}
	if n, rt := sweep(clock); n != 0 || len(rt.stopped) != 0 {
		t.Fatalf("on the database's clock the sweep cleaned %d, stopped %v; want none", n, rt.stopped)
	}
	if got, err := st.Get(ctx, s.ChatID); err != nil || got.ID != s.ID {
		t.Fatalf("the live session after the sweep: %+v, %v", got, err)
	}
	// What the database's clock prevents: on its own clock the replica sweeps it now.
	if n, rt := sweep(fastClock{}); n != 1 || len(rt.stopped) != 1 {
		t.Fatalf("on the fast clock the sweep cleaned %d, stopped %v; want the session", n, rt.stopped)
	}
}
