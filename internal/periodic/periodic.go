// Package periodic runs background jobs at fixed intervals: sandboxd's expiry sweep and
// reconciler. A job never overlaps itself: its runs happen one after the other in one
// goroutine, and ticks that fall due while it runs are dropped, not queued. A run that
// overruns its job's Timeout is cut off (its context ends), so a run stuck on a hung
// dependency never stalls the job: the next one runs at the next tick.
package periodic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Job is work to repeat.
type Job struct {
	// Name identifies the job in logs.
	Name string
	// Interval is the time between the starts of two runs (> 0).
	Interval time.Duration
	// Immediately runs the job once when it starts, before the first interval.
	Immediately bool
	// Timeout, when > 0, bounds each run: its context ends then, and the run, which must
	// return once its context ends, is logged as overrun ("job_overran"); the job goes on.
	Timeout time.Duration
	// Run does the work once. Its error is logged; the job goes on.
	Run func(ctx context.Context) error
}

// Runner runs jobs until it is stopped.
type Runner struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start checks the jobs and starts each in its own goroutine; they run until ctx ends or
// Stop is called. A job with no Run or a non-positive Interval is an error, and then
// nothing is started. A nil log discards.
func Start(ctx context.Context, log *slog.Logger, jobs ...Job) (*Runner, error) {
	var errs []error
	for i, j := range jobs {
		if j.Run == nil {
			errs = append(errs, fmt.Errorf("periodic: job %d (%q) has no Run", i, j.Name))
		}
		if j.Interval <= 0 {
			errs = append(errs, fmt.Errorf("periodic: job %q: interval %s must be > 0", j.Name, j.Interval))
		}
		if j.Timeout < 0 {
			errs = append(errs, fmt.Errorf("periodic: job %q: timeout %s must be >= 0", j.Name, j.Timeout))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &Runner{cancel: cancel}
	for _, j := range jobs {
		r.wg.Go(func() { loop(ctx, log.With(slog.String("job", j.Name)), j) })
	}
	return r, nil
}

// Stop ends every job and waits for the runs in progress to return. The context a run
// gets is cancelled, so a run only lasts as long as its own cleanup. Safe to call twice.
func (r *Runner) Stop() {
	r.cancel()
	r.wg.Wait()
}

func loop(ctx context.Context, log *slog.Logger, j Job) {
	if j.Immediately {
		runOnce(ctx, log, j)
	}
	t := time.NewTicker(j.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A run that ended with the context is not run again; a tick and the end of
			// ctx both ready at once must not start one more run.
			if ctx.Err() != nil {
				return
			}
			runOnce(ctx, log, j)
		}
	}
}

func runOnce(ctx context.Context, log *slog.Logger, j Job) {
	start := time.Now()
	run := ctx
	if j.Timeout > 0 {
		var cancel context.CancelFunc
		run, cancel = context.WithTimeout(ctx, j.Timeout)
		defer cancel()
	}
	err := j.Run(run)
	elapsed := slog.Duration("elapsed", time.Since(start))
	switch {
	case err == nil:
		log.DebugContext(ctx, "job_done", elapsed)
	case ctx.Err() != nil:
		log.InfoContext(ctx, "job_interrupted", elapsed, slog.String("error", err.Error()))
	case run.Err() != nil:
		log.ErrorContext(ctx, "job_overran", elapsed, slog.Duration("timeout", j.Timeout),
			slog.String("error", err.Error()))
	default:
		log.ErrorContext(ctx, "job_failed", elapsed, slog.String("error", err.Error()))
	}
}
