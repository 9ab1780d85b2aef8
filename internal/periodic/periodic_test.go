package periodic

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunsEveryIntervalUntilStopped(t *testing.T) {
	var runs atomic.Int32
	var stopped atomic.Bool
	r, err := Start(context.Background(), nil, Job{
		Name: "sweep", Interval: 5 * time.Millisecond,
		Run: func(context.Context) error {
			if stopped.Load() {
				t.Error("a run started after Stop returned")
			}
			runs.Add(1)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return runs.Load() >= 3 })
	r.Stop()
	// No run starts once Stop returned: a run that did fails the test, and a job that
	// outlived Stop is a leaked goroutine, which goleak (TestMain) fails.
	stopped.Store(true)
	r.Stop() // twice is fine
}

func TestImmediately(t *testing.T) {
	ran := make(chan struct{}, 1)
	r, err := Start(context.Background(), nil, Job{
		Name: "reconcile", Interval: time.Hour, Immediately: true,
		Run: func(context.Context) error { ran <- struct{}{}; return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("the job did not run at start")
	}
}

// A run slower than the interval delays the next one: runs never overlap.
func TestNeverOverlaps(t *testing.T) {
	var running, maxRunning, runs atomic.Int32
	r, err := Start(context.Background(), nil, Job{
		Name: "slow", Interval: time.Millisecond,
		Run: func(context.Context) error {
			n := running.Add(1)
			for {
				m := maxRunning.Load()
				if n <= m || maxRunning.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(10 * time.Millisecond) // the behaviour under test: a run slower than the interval
			running.Add(-1)
			runs.Add(1)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return runs.Load() >= 5 })
	r.Stop()
	if m := maxRunning.Load(); m != 1 {
		t.Errorf("%d runs at once, want 1", m)
	}
}

// Stop cancels the run in progress and waits for it to return.
func TestStopCancelsAndWaits(t *testing.T) {
	started := make(chan struct{})
	var returned atomic.Bool
	r, err := Start(context.Background(), nil, Job{
		Name: "long", Interval: time.Hour, Immediately: true,
		Run: func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			time.Sleep(5 * time.Millisecond) // the behaviour under test: cleanup after cancellation, which Stop waits for
			returned.Store(true)
			return ctx.Err()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	r.Stop()
	if !returned.Load() {
		t.Error("Stop returned before the run did")
	}
}

// The parent context ending stops the jobs too.
func TestParentContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var runs atomic.Int32
	r, err := Start(ctx, nil, Job{Name: "j", Interval: time.Millisecond,
		Run: func(context.Context) error { runs.Add(1); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return runs.Load() >= 1 })
	cancel()
	r.Stop()
}

// A failing run is logged and the job goes on.
func TestErrorsAreLoggedAndJobGoesOn(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, nil))
	var runs atomic.Int32
	r, err := Start(context.Background(), log, Job{
		Name: "sweep", Interval: time.Millisecond,
		Run: func(context.Context) error { runs.Add(1); return errors.New("registry down") },
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return runs.Load() >= 3 })
	r.Stop()
	mu.Lock()
	defer mu.Unlock()
	out := buf.String()
	if !strings.Contains(out, "job_failed") || !strings.Contains(out, "job=sweep") ||
		!strings.Contains(out, `error="registry down"`) {
		t.Errorf("log lacks the failure:\n%s", out)
	}
}

// A run that hangs (on a dependency that never answers, here a channel nobody writes to)
// is cut off at the job's timeout, logged, and the next run comes at the next tick.
func TestAnOverrunningRunIsCutOffAndTheNextRuns(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, nil))
	never := make(chan struct{})
	var runs, cut atomic.Int32
	r, err := Start(context.Background(), log, Job{
		Name: "sweep", Interval: 20 * time.Millisecond, Timeout: 30 * time.Millisecond,
		Run: func(ctx context.Context) error {
			runs.Add(1)
			if _, ok := ctx.Deadline(); !ok {
				t.Error("a run's context has no deadline")
			}
			select {
			case <-never:
				return nil
			case <-ctx.Done():
				cut.Add(1)
				return ctx.Err()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return cut.Load() >= 3 })
	r.Stop()
	mu.Lock()
	defer mu.Unlock()
	if out := buf.String(); !strings.Contains(out, "job_overran") || !strings.Contains(out, "timeout=30ms") {
		t.Errorf("log lacks the overrun:\n%s", out)
	}
}

func TestBadJobs(t *testing.T) {
	_, err := Start(context.Background(), nil,
		Job{Name: "a", Interval: 0, Run: func(context.Context) error { return nil }},
		Job{Name: "b", Interval: time.Second},
		Job{Name: "c", Interval: time.Second, Timeout: -1, Run: func(context.Context) error { return nil }})
	if err == nil || !strings.Contains(err.Error(), `"a"`) || !strings.Contains(err.Error(), `"b"`) || !strings.Contains(err.Error(), `"c"`) {
		t.Errorf("err = %v, want both jobs named", err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	waitfor.True(t, 5*time.Second, "the condition", cond)
}
