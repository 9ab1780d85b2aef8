package poolset_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/poolset"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/metrictest"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeRuntime makes numbered members, finds the member dead dead, and counts what it
// made and removed.
type fakeRuntime struct {
	made, destroyed, dead atomic.Int32
	failMake              atomic.Bool
}

func (f *fakeRuntime) make(context.Context, *poolset.Profile[int]) (int, error) {
	if f.failMake.Load() {
		return 0, errors.New("engine down")
	}
	return int(f.made.Add(1)), nil
}

func (f *fakeRuntime) findDead(_ context.Context, _ *poolset.Profile[int], ready []int) []int {
	var out []int
	for _, m := range ready {
		if int32(m) == f.dead.Load() {
			out = append(out, m)
		}
	}
	return out
}

func (f *fakeRuntime) destroy(context.Context, int) error { f.destroyed.Add(1); return nil }

type poolFixture struct {
	pool   *poolset.Pool[int]
	rt     *fakeRuntime
	reader *sdkmetric.ManualReader
	log    *syncbuf.Buffer
}

// newPool makes a pool of the default profile with pool.min and pool.max as given,
// checked every interval, and stops it when the test ends.
func newPool(t *testing.T, min, max int, interval time.Duration) poolFixture {
	t.Helper()
	profiles, err := profile.New(profile.Agents{Default: profile.Spec{Pool: profile.Pool{Min: min, Max: max}}})
	if err != nil {
		t.Fatal(err)
	}
	f := poolFixture{rt: &fakeRuntime{}, reader: sdkmetric.NewManualReader(), log: &syncbuf.Buffer{}}
	f.pool, err = poolset.NewPool(poolset.Config[int]{
		Profiles:    profiles,
		Meter:       sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.reader)).Meter("test"),
		MissReasons: []string{"busy", "empty", "error"},
		Interval:    interval,
		Log:         slog.New(slog.NewTextHandler(f.log, nil)),
		ID:          strconv.Itoa,
		Make:        f.rt.make,
		Dead:        f.rt.findDead,
		Destroy:     f.rt.destroy,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.pool.Stop() })
	return f
}

// run starts the pool and waits until it holds pool.min members.
func (f poolFixture) run(t *testing.T) {
	t.Helper()
	if err := f.pool.Start(); err != nil {
		t.Fatal(err)
	}
	f.pool.Run(t.Context())
	waitfor.True(t, 5*time.Second, "the pool filled", func() bool { return f.ready() == f.target() })
}

func (f poolFixture) ready() int { return f.pool.Fill()[0].Ready }

func (f poolFixture) target() int { return f.pool.Fill()[0].Target }

func (f poolFixture) metric(t *testing.T, name string, want ...string) float64 {
	t.Helper()
	return metrictest.Value(t, f.reader, name, want...)
}

func spec() lifecycle.CreateSpec {
	return lifecycle.CreateSpec{ChatID: uuid.New(), SessionID: uuid.New(), CreatedAt: time.Unix(100, 0), ExpiresAt: time.Unix(200, 0)}
}

func never() string { return "" }

// A started pool fills to pool.min; a claim takes a member, counts a hit, returns the
// session the member now is, and the pool makes another. Stop ends it all and forgets
// the ready members, which the runtime removes.
func TestPoolFillsClaimsAndStops(t *testing.T) {
	f := newPool(t, 2, 2, time.Hour)
	if err := f.pool.Start(); err != nil {
		t.Fatal(err)
	}
	if err := f.pool.Start(); err == nil {
		t.Error("a second Start succeeded")
	}
	f.pool.Run(t.Context())
	waitfor.True(t, 5*time.Second, "two ready", func() bool { return f.ready() == 2 })
	if got := f.metric(t, "sandbox.pool.size", "profile=default"); got != 2 {
		t.Errorf("sandbox.pool.size = %g, want 2", got)
	}

	sp := spec()
	var handed int
	s, ok := f.pool.Claim(t.Context(), sp, never, func(_ context.Context, pp *poolset.Profile[int], m int) error {
		handed = m
		if pp.Name != poolset.DefaultName {
			t.Errorf("handed out from pool %q", pp.Name)
		}
		return nil
	})
	want := sandbox.Session{ID: sp.SessionID, ChatID: sp.ChatID, ContainerID: strconv.Itoa(handed), Status: sandbox.StatusRunning,
		CreatedAt: sp.CreatedAt, ExpiresAt: sp.ExpiresAt}
	if !ok || handed == 0 || s != want {
		t.Fatalf("Claim = %+v, %v; want %+v", s, ok, want)
	}
	if hits, timed := f.metric(t, "sandbox.pool.hits"), f.metric(t, "sandbox.pool.claim.duration"); hits != 1 || timed != 1 {
		t.Errorf("hits = %g, claim durations = %g, want 1 and 1", hits, timed)
	}
	waitfor.True(t, 5*time.Second, "refilled after the claim", func() bool { return f.rt.made.Load() == 3 && f.ready() == 2 })

	if !f.pool.Stop() {
		t.Fatal("Stop: not the first")
	}
	if f.pool.Stop() {
		t.Error("a second Stop reported it stopped the pool")
	}
	if f.ready() != 0 {
		t.Errorf("ready after Stop = %d, want 0", f.ready())
	}
	if _, ok := f.pool.Claim(t.Context(), spec(), never, nil); ok {
		t.Error("a claim after Stop was served")
	}
	if got := f.metric(t, "sandbox.pool.misses", "reason=empty"); got != 1 {
		t.Errorf("misses{empty} after Stop = %g, want 1", got)
	}
	f.pool.Run(t.Context()) // starts nothing: goleak would see its loops
}

// A claim is cold for the reason cold gives, for an empty pool, for a hand-out's Cold
// reason (the member is the runtime's, no other tried, nothing logged), and after its
// attempts fail ("error": each failure logged, a Final one ends the claim).
func TestPoolClaimMisses(t *testing.T) {
	f := newPool(t, 3, 3, time.Hour)
	if err := f.pool.Start(); err != nil {
		t.Fatal(err)
	}

	if _, ok := f.pool.Claim(t.Context(), spec(), func() string { return "busy" }, nil); ok {
		t.Error("served although cold said busy")
	}
	if _, ok := f.pool.Claim(t.Context(), spec(), never, nil); ok {
		t.Error("served from an empty pool")
	}
	if f.target() != 3 {
		t.Errorf("target = %d, want pool.min 3 until a check", f.target())
	}

	f.pool.Run(t.Context())
	waitfor.True(t, 5*time.Second, "three ready", func() bool { return f.ready() == 3 })

	var tried []int
	handOut := func(err error) func(context.Context, *poolset.Profile[int], int) error {
		return func(_ context.Context, _ *poolset.Profile[int], m int) error { tried = append(tried, m); return err }
	}
	if _, ok := f.pool.Claim(t.Context(), spec(), never, handOut(poolset.Cold("busy"))); ok || len(tried) != 1 {
		t.Errorf("Cold hand-out: served %v, tried %v; want one tried, cold", ok, tried)
	}
	if strings.Contains(f.log.String(), "sandbox_pool_claim_failed") {
		t.Errorf("a Cold hand-out was logged: %s", f.log)
	}
	tried = nil
	if _, ok := f.pool.Claim(t.Context(), spec(), never, handOut(poolset.Final(errors.New("half done")))); ok || len(tried) != 1 {
		t.Errorf("Final hand-out: served %v, tried %v; want one tried, cold", ok, tried)
	}
	if !strings.Contains(f.log.String(), "error=\"half done\"") {
		t.Errorf("the Final failure is not logged as itself: %s", f.log)
	}
	for reason, want := range map[string]float64{"busy": 2, "empty": 1, "error": 1} {
		if got := f.metric(t, "sandbox.pool.misses", "profile=default", "reason="+reason); got != want {
			t.Errorf("misses{%s} = %g, want %g", reason, got, want)
		}
	}
	if got := f.metric(t, "sandbox.pool.hits"); got != 0 {
		t.Errorf("hits = %g, want 0", got)
	}
}

// A member a hand-out puts back is ready again, unless the pool stopped meanwhile: then
// it is removed.
func TestPoolPutBack(t *testing.T) {
	f := newPool(t, 3, 3, time.Hour)
	f.run(t)

	_, ok := f.pool.Claim(t.Context(), spec(), never, func(ctx context.Context, pp *poolset.Profile[int], m int) error {
		f.pool.PutBack(ctx, pp, m)
		return poolset.Cold("busy")
	})
	if destroyed := f.rt.destroyed.Load(); ok || destroyed != 0 || f.ready() != 3 {
		t.Errorf("put back while running: served %v, %d destroyed, %d ready; want 3 ready", ok, destroyed, f.ready())
	}

	// Another pool, whose refill loop no claim has woken: nothing is made meanwhile.
	f = newPool(t, 3, 3, time.Hour)
	f.run(t)
	stopped := make(chan bool)
	_, ok = f.pool.Claim(t.Context(), spec(), never, func(ctx context.Context, pp *poolset.Profile[int], m int) error {
		go func() { stopped <- f.pool.Stop() }() // waits for this claim
		waitfor.True(t, 5*time.Second, "the ready members forgotten", func() bool { return f.ready() == 0 })
		f.pool.PutBack(ctx, pp, m)
		return poolset.Cold("busy")
	})
	if !<-stopped {
		t.Error("Stop did not stop the pool")
	}
	if destroyed := f.rt.destroyed.Load(); ok || destroyed != 1 || f.ready() != 0 {
		t.Errorf("put back after Stop: served %v, %d destroyed, %d ready; want it destroyed", ok, destroyed, f.ready())
	}
}

// A claim tries the next member after a failed hand-out, at most two in all.
func TestPoolClaimTriesTwo(t *testing.T) {
	f := newPool(t, 3, 3, time.Hour)
	f.run(t)

	var tried []int
	_, ok := f.pool.Claim(t.Context(), spec(), never, func(_ context.Context, _ *poolset.Profile[int], m int) error {
		tried = append(tried, m)
		return errors.New("not running")
	})
	if ok || len(tried) != 2 || tried[0] == tried[1] {
		t.Errorf("served %v after trying %v; want two members tried, cold", ok, tried)
	}
	if got := strings.Count(f.log.String(), "sandbox_pool_claim_failed"); got != 2 {
		t.Errorf("%d claim failures logged, want 2", got)
	}
	if got := f.metric(t, "sandbox.pool.misses", "reason=error"); got != 1 {
		t.Errorf("misses{error} = %g, want 1", got)
	}
}

// Each check replaces the dead members and moves the target: up after a create found
// the pool empty (at most pool.max), down again after a quiet period (at least pool.min).
// A fill that fails is logged and waits for the next check.
func TestPoolChecksAndTargets(t *testing.T) {
	f := newPool(t, 1, 2, 20*time.Millisecond)
	f.run(t)

	f.rt.dead.Store(1)
	waitfor.True(t, 5*time.Second, "the dead member replaced", func() bool {
		return f.rt.destroyed.Load() == 1 && f.ready() == 1
	})
	if !strings.Contains(f.log.String(), "sandbox_pool_member_dead") || !strings.Contains(f.log.String(), "container.id=1") {
		t.Errorf("the dead member is not logged: %s", f.log)
	}

	// Nothing can be made now: every create finds the pool empty, check after check.
	f.rt.failMake.Store(true)
	hand := func(context.Context, *poolset.Profile[int], int) error { return nil }
	for deadline := time.Now().Add(10 * 20 * time.Millisecond); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		f.pool.Claim(t.Context(), spec(), never, hand)
		if got := f.target(); got > 2 {
			t.Fatalf("target = %d, over pool.max 2", got)
		}
	}
	if f.target() != 2 {
		t.Errorf("target = %d after checks that found the pool empty, want pool.max 2", f.target())
	}
	waitfor.True(t, 5*time.Second, "the failed fill logged", func() bool {
		return strings.Contains(f.log.String(), "sandbox_pool_fill_failed")
	})
	waitfor.True(t, 5*time.Second, "the target back to pool.min", func() bool { return f.target() == 1 })
	if got := f.pool.Fill()[0]; got.Max != 2 || got.Profile != poolset.DefaultName {
		t.Errorf("Fill = %+v, want the default profile's, max 2", got)
	}
}
