package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// CleanupExpired stops and forgets the sessions whose TTL has passed and returns those it
// cleaned, in snapshot order (oldest expiry first). The snapshot is read page by page
// (SweepBatch at a time), so sessions whose stop keeps failing never hide the ones behind
// them. A session replaced or extended since the snapshot is skipped; a failure is logged
// and counted and the sweep goes on. When ctx ends (shutdown) no further session is
// started; those left wait for the next sweep. The error is only for a registry that
// cannot give the snapshot; the sessions cleaned before it are returned with it.
func (s *Service) CleanupExpired(ctx context.Context) ([]sandbox.Session, error) {
	ctx, span := s.tracer.Start(ctx, "usecase.cleanup_expired_sandboxes")
	defer span.End()

	now := s.clock.Now()
	var (
		expired  []sandbox.Session
		outcomes []Outcome
		listErr  error
	)
	for after := (ExpiredAfter{}); ctx.Err() == nil; {
		page, err := s.store.ListExpired(ctx, now, after, s.sweepBatch)
		if err != nil {
			listErr = fmt.Errorf("sweep: list expired: %w", err)
			break
		}
		expired = append(expired, page...)
		outcomes = append(outcomes, s.cleanAll(ctx, page)...)
		if len(page) < s.sweepBatch {
			break
		}
		after = After(page[len(page)-1])
	}

	var cleaned []sandbox.Session
	failures := 0
	for i, o := range outcomes {
		switch o {
		case Cleaned:
			cleaned = append(cleaned, expired[i])
		case Failed:
			failures++
		}
	}
	s.recordActive(ctx)
	status := "completed"
	if failures > 0 {
		status = "completed_with_errors"
	}
	if listErr != nil {
		status = string(Failed)
		failSpan(span, listErr)
	}
	span.SetAttributes(
		attribute.Int("sandbox.expired_count", len(expired)),
		attribute.Int("sandbox.cleaned_count", len(cleaned)),
		attribute.Int("sandbox.error_count", failures),
		attribute.String("sandbox.result", status))
	return cleaned, listErr
}

// cleanAll cleans one page of the snapshot, SweepParallelism chats at a time, and returns
// each entry's outcome. Once ctx ends it starts no more.
func (s *Service) cleanAll(ctx context.Context, page []sandbox.Session) []Outcome {
	outcomes := make([]Outcome, len(page))
	sem := make(chan struct{}, s.sweepParallelism)
	var wg sync.WaitGroup
	for i, snap := range page {
		outcomes[i] = skipped
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return outcomes
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			outcomes[i] = s.cleanOne(ctx, snap)
		}()
	}
	wg.Wait()
	return outcomes
}

// skipped marks a snapshot entry that was no longer the chat's expired session.
const skipped Outcome = "skipped"

// cleanOne cleans one snapshot entry under its chat's lock, after reading the chat's
// session again: the snapshot may be stale.
func (s *Service) cleanOne(ctx context.Context, snap sandbox.Session) Outcome {
	outcome := skipped
	err := s.locked(ctx, snap.ChatID, func(ctx context.Context) error {
		current, err := s.store.Get(ctx, snap.ChatID)
		if errors.Is(err, sandbox.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("sweep: read registry: %w", err)
		}
		if current.ID != snap.ID || !current.Expired(s.clock.Now()) {
			return nil
		}
		outcome = s.clean(ctx, current)
		return nil
	})
	if err != nil && ctx.Err() != nil {
		return skipped // shutting down: the next sweep takes it
	}
	if err != nil {
		// The lock or the re-read failed: nothing was touched; count it as a failure.
		s.log.ErrorContext(ctx, "sandbox_clean_failed",
			append(sessionAttrs(snap.ChatID, snap.ID, snap.ContainerID),
				slog.String("error", sandbox.ErrorType(err)))...)
		s.m.cleanupErrorTotal.Add(ctx, 1, metric.WithAttributes(attribute.String("error.type", sandbox.ErrorType(err))))
		return Failed
	}
	return outcome
}

func (s *Service) clean(ctx context.Context, current sandbox.Session) Outcome {
	ctx, span := s.tracer.Start(ctx, "usecase.cleanup_expired_sandbox", trace.WithAttributes(
		attribute.String("chat.id", current.ChatID.String()),
		attribute.String("session.id", current.ID.String()),
		attribute.String("container.id", current.ContainerID)))
	defer span.End()

	attrs := sessionAttrs(current.ChatID, current.ID, current.ContainerID)
	// The record goes first, conditionally, and the sandbox only once it is gone: should
	// this replica have lost the chat's lock, a session another replica extended or
	// replaced meanwhile keeps both its record and its running sandbox (stopping first
	// would leave the extended session's record naming a removed container). A stop that
	// fails puts the record back, so the next sweep tries again; should that fail too, the
	// container is labelled and unrecorded, and the reconciler removes it.
	var err error
	removed, rmErr := s.store.RemoveExpired(ctx, current.ChatID, current.ID, s.clock.Now())
	switch {
	case rmErr != nil:
		err = fmt.Errorf("sweep: forget session %s: %w", current.ID, rmErr)
	case !removed:
		err = fmt.Errorf("sweep: session %s was extended or replaced meanwhile: %w", current.ID, sandbox.ErrConflict)
	default:
		// The span and log already name the container: the runtime's error is recorded as is.
		if err = s.runtime.Stop(ctx, current.ContainerID); err != nil {
			if saveErr := s.store.Save(ctx, current); saveErr != nil {
				s.log.ErrorContext(ctx, "sandbox_untracked", append(logAttrs(current),
					slog.String("error", sandbox.ErrorType(saveErr)))...)
			}
		}
	}
	if err != nil {
		errType := sandbox.ErrorType(err)
		s.log.ErrorContext(ctx, "sandbox_clean_failed", append(attrs, slog.String("error", errType))...)
		s.m.cleanupErrorTotal.Add(ctx, 1, metric.WithAttributes(attribute.String("error.type", errType)))
		span.SetAttributes(attribute.String("sandbox.result", string(Failed)))
		failSpan(span, err)
		return Failed
	}
	s.touchWorkspace(ctx, current)
	s.log.InfoContext(ctx, "sandbox_cleaned", attrs...)
	s.event(current, EventCleaned, "expired at "+current.ExpiresAt.UTC().Format(time.RFC3339))
	s.m.cleanupTotal.Add(ctx, 1, metric.WithAttributes(result(string(Cleaned))))
	span.SetAttributes(attribute.String("sandbox.result", string(Cleaned)))
	return Cleaned
}
