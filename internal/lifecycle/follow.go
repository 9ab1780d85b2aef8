package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Ending is a sandbox that stopped running on its own or was removed behind sandboxd's
// back, as the runtime reports it.
type Ending struct {
	ContainerID string
	ChatID      uuid.UUID
	SessionID   uuid.UUID
	// Removed: the container is gone (not only stopped).
	Removed bool
	// OOM: the kernel killed the sandbox for going past its memory limit.
	OOM bool
	// ExitCode is the exit code of the sandbox's main process (when not Removed).
	ExitCode int
}

// Reason names why the sandbox ended, as logs and metrics give it: "oom", "exited"
// or "removed".
func (e Ending) Reason() string {
	switch {
	case e.OOM:
		return "oom"
	case e.Removed:
		return "removed"
	}
	return "exited"
}

// Watcher follows the sandboxes of this runtime (those Inventory lists) as they end.
type Watcher interface {
	// Watch calls connected once it follows the runtime, then ended for each sandbox that
	// ends from then on, until the stream breaks or ctx ends; it returns why (ctx's error
	// once ctx ended). Both callbacks run on Watch's goroutine and return at once.
	Watch(ctx context.Context, connected func(), ended func(Ending)) error
}

// Follower keeps the registry in step with the runtime between reconciliations: a sandbox
// that dies is repaired at once, as Reconcile would repair it.
type Follower struct {
	cancel    context.CancelFunc
	done      chan struct{}
	connected chan struct{} // closed once the stream first connected
}

// Follow follows w until ctx ends or Stop is called:
//   - each sandbox that ends is repaired at once under its chat's lock: if it is still
//     its chat's recorded sandbox, its container is removed and its record forgotten, so
//     the chat's next create makes a fresh one on the same workspace (logged as
//     sandbox_died with the reason, counted in sandbox.died.total);
//   - when the stream breaks (the engine restarted, the connection dropped) it is opened
//     again, after a pause that grows while it keeps failing (retry to maxRetry);
//   - every time the stream is (re)opened a full reconciliation runs, since what ended
//     while nobody was listening was not reported; unless one that began after the
//     stream connected has already run (ReconcileSince): sandboxd's start-up waits for
//     the stream to connect (Connected) and then reconciles once for both.
func (s *Service) Follow(ctx context.Context, w Watcher, retry, maxRetry time.Duration) *Follower {
	ctx, cancel := context.WithCancel(ctx)
	f := &Follower{cancel: cancel, done: make(chan struct{}), connected: make(chan struct{})}
	retry, maxRetry = orDefault(retry, 100*time.Millisecond), orDefault(maxRetry, 5*time.Second)
	go func() {
		defer close(f.done)
		var repairs sync.WaitGroup
		defer repairs.Wait()
		// One reconciliation asked for and not yet begun: the count of those begun when
		// the stream connected (ReconcileSince).
		reconcile := make(chan uint64, 1)
		repairs.Go(func() { s.reconcileOnConnect(ctx, reconcile) })
		first := true
		pause := retry
		for {
			connected, began := false, time.Now()
			err := w.Watch(ctx, func() {
				connected = true
				s.log.InfoContext(ctx, "event_stream_connected")
				begun := s.reconciles.Load()
				select {
				case <-reconcile: // not begun yet: the newer connection's stands for both
				default:
				}
				reconcile <- begun // this goroutine alone sends: there is room
				if first {
					first = false
					close(f.connected)
				}
			}, func(e Ending) {
				repairs.Go(func() { s.ended(ctx, e) })
			})
			if ctx.Err() != nil {
				return
			}
			if connected && time.Since(began) >= maxRetry {
				pause = retry // it had worked for a while: retry soon
			}
			s.log.WarnContext(ctx, "event_stream_lost", slog.String("error", errText(err)),
				slog.Duration("retry_in", pause))
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, maxRetry)
		}
	}()
	return f
}

// Connected is closed once the stream has first connected (and its reconciliation has
// been asked for).
func (f *Follower) Connected() <-chan struct{} { return f.connected }

// Stop stops following and waits for the repairs under way. Safe to call twice.
func (f *Follower) Stop() {
	f.cancel()
	<-f.done
}

// reconcileOnConnect runs a reconciliation each time one is asked for, until ctx ends.
func (s *Service) reconcileOnConnect(ctx context.Context, asked <-chan uint64) {
	for {
		var begun uint64
		select {
		case <-ctx.Done():
			return
		case begun = <-asked:
		}
		rep, ran, err := s.ReconcileSince(ctx, begun)
		if err != nil {
			s.log.ErrorContext(ctx, "reconcile_failed", slog.String("after", "event_stream_connected"),
				slog.String("error", err.Error()))
			continue
		}
		if !ran {
			s.log.InfoContext(ctx, "reconcile_skipped", slog.String("after", "event_stream_connected"),
				slog.String("reason", "a reconciliation that began after the stream connected has run"))
			continue
		}
		s.log.InfoContext(ctx, "reconciled", slog.String("after", "event_stream_connected"),
			slog.Int("containers", rep.Containers), slog.Int("records", rep.Records),
			slog.Int("orphans_removed", rep.OrphansRemoved),
			slog.Int("records_repaired", rep.RecordsRepaired), slog.Int("errors", rep.Errors))
	}
}

// ended repairs the chat of a sandbox that ended, if it is still the chat's sandbox: its
// container is removed and its record forgotten. A sandbox that sandboxd itself stopped
// (sweep, delete, replace) has no record left by the time the lock is free: nothing to do.
func (s *Service) ended(ctx context.Context, e Ending) {
	if e.ChatID == uuid.Nil {
		return // not a chat's sandbox (an unclaimed pool container, an unreadable label)
	}
	attrs := append(sessionAttrs(e.ChatID, e.SessionID, e.ContainerID), slog.String("reason", e.Reason()))
	if !e.Removed && !e.OOM {
		attrs = append(attrs, slog.Int("exit_code", e.ExitCode))
	}
	repaired := false
	var tenant string
	err := s.locked(ctx, e.ChatID, func(ctx context.Context) error {
		current, err := s.store.Get(ctx, e.ChatID)
		switch {
		case errors.Is(err, sandbox.ErrNotFound):
			return nil
		case err != nil:
			return fmt.Errorf("read registry: %w", err)
		case current.ContainerID != e.ContainerID:
			return nil // an earlier sandbox of the chat, already replaced
		}
		if err := s.runtime.Delete(ctx, e.ContainerID); err != nil {
			return fmt.Errorf("remove dead container: %w", err)
		}
		if err := s.store.Remove(ctx, current.ID); err != nil {
			return fmt.Errorf("forget session: %w", err)
		}
		repaired, tenant = true, current.TenantOf()
		return nil
	})
	if err != nil {
		// The next reconciliation repairs it.
		s.log.ErrorContext(ctx, "sandbox_died_unrepaired", append(attrs, slog.String("error", err.Error()))...)
		return
	}
	if repaired {
		s.log.WarnContext(ctx, "sandbox_died", attrs...)
		s.eventOf(tenant, e.ChatID, EventDied, e.Reason())
		s.m.diedTotal.Add(ctx, 1, metric.WithAttributes(reasonAttr(e.Reason())))
		s.recordActive(ctx)
	}
}

func errText(err error) string {
	if err == nil {
		return "the stream ended"
	}
	return err.Error()
}
