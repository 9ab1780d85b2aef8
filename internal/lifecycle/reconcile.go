package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// ReconcileReport counts what one reconciliation did.
type ReconcileReport struct {
	Containers      int // labelled containers seen
	Records         int // registry records seen
	OrphansRemoved  int // labelled containers without a record, removed
	RecordsRepaired int // records whose container was gone or dead, forgotten
	Errors          int
}

// Reconcile makes the runtime and the registry agree, repairing what a crash left:
//   - a labelled container with no record, older than the grace period, is removed;
//   - a record whose container is gone or no longer running is removed (its container too),
//     so the next create makes a fresh sandbox.
//
// Containers without this instance's labels are never seen, so never touched. When the
// runtime or the registry cannot be listed, or the registry is tied to another runtime
// (CheckBinding), nothing is deleted and the error is returned.
// Every repair happens under the chat's lock after reading the registry again.
func (s *Service) Reconcile(ctx context.Context) (ReconcileReport, error) {
	ctx, span := s.tracer.Start(ctx, "usecase.reconcile")
	defer span.End()
	var rep ReconcileReport
	select {
	case s.reconciling <- struct{}{}:
		defer func() { <-s.reconciling }()
	case <-ctx.Done():
		return rep, fmt.Errorf("reconcile: wait for the one under way: %w", ctx.Err())
	}
	if s.inventory == nil {
		return rep, fmt.Errorf("reconcile: no inventory configured: %w", sandbox.ErrUnavailable)
	}
	// Every time: a registry that records another runtime's sandboxes would have all its
	// records forgotten, and what they do not name removed.
	if err := s.CheckBinding(ctx); err != nil {
		err = fmt.Errorf("reconcile: %w", err)
		failSpan(span, err)
		return rep, err
	}

	// Records first, then containers: a record saved after the first listing has its
	// container in the second, so it is never mistaken for a record without one.
	var records []sandbox.Session
	for after := uuid.Nil; ; {
		page, err := s.store.List(ctx, ListFilter{After: after, Limit: 500})
		if err != nil {
			err = fmt.Errorf("reconcile: list registry: %w", err)
			failSpan(span, err)
			return rep, err
		}
		records = append(records, page...)
		if len(page) < 500 {
			break
		}
		after = page[len(page)-1].ChatID
	}
	containers, err := s.inventory.Managed(ctx)
	if err != nil {
		err = fmt.Errorf("reconcile: list containers: %w", err)
		failSpan(span, err)
		return rep, err
	}
	rep.Records, rep.Containers = len(records), len(containers)

	byID := make(map[string]Container, len(containers))
	for _, c := range containers {
		byID[c.ID] = c
	}
	now := s.clock.Now()
	for _, c := range containers {
		if now.Sub(c.CreatedAt) < s.reconcileGrace {
			continue
		}
		s.tally(ctx, &rep, s.removeOrphan(ctx, c))
	}
	for _, r := range records {
		if c, ok := byID[r.ContainerID]; ok && c.Running {
			continue
		}
		s.tally(ctx, &rep, s.repairRecord(ctx, r))
	}
	span.SetAttributes(
		attribute.Int("sandbox.reconcile.containers", rep.Containers),
		attribute.Int("sandbox.reconcile.records", rep.Records),
		attribute.Int("sandbox.reconcile.orphans_removed", rep.OrphansRemoved),
		attribute.Int("sandbox.reconcile.records_repaired", rep.RecordsRepaired),
		attribute.Int("sandbox.reconcile.errors", rep.Errors))
	if rep.OrphansRemoved+rep.RecordsRepaired > 0 {
		s.recordActive(ctx)
	}
	return rep, nil
}

const (
	orphanRemoved  Outcome = "orphan_removed"
	recordRepaired Outcome = "record_repaired"
	unchanged      Outcome = "unchanged"
)

func (s *Service) tally(ctx context.Context, rep *ReconcileReport, o Outcome) {
	switch o {
	case orphanRemoved:
		rep.OrphansRemoved++
	case recordRepaired:
		rep.RecordsRepaired++
	case Failed:
		rep.Errors++
	default:
		return
	}
	s.m.reconcileTotal.Add(ctx, 1, metric.WithAttributes(result(string(o))))
}

// removeOrphan removes c if, under its chat's lock, the registry has no record of it.
func (s *Service) removeOrphan(ctx context.Context, c Container) Outcome {
	attrs := sessionAttrs(c.ChatID, c.SessionID, c.ID)
	outcome := unchanged
	err := s.locked(ctx, c.ChatID, func(ctx context.Context) error {
		current, err := s.store.Get(ctx, c.ChatID)
		switch {
		case err == nil && current.ContainerID == c.ID:
			return nil
		case err != nil && !errors.Is(err, sandbox.ErrNotFound):
			return fmt.Errorf("read registry: %w", err) // unhealthy registry: delete nothing
		}
		if err := s.runtime.Delete(ctx, c.ID); err != nil {
			return fmt.Errorf("remove orphan: %w", err)
		}
		outcome = orphanRemoved
		return nil
	})
	if err != nil {
		s.log.ErrorContext(ctx, "reconcile_failed", append(attrs, slog.String("error", sandbox.ErrorType(err)))...)
		return Failed
	}
	if outcome == orphanRemoved {
		s.log.InfoContext(ctx, "sandbox_orphan_removed", attrs...)
	}
	return outcome
}

// repairRecord forgets r, and removes its dead container, if r is still the chat's record.
func (s *Service) repairRecord(ctx context.Context, r sandbox.Session) Outcome {
	attrs := sessionAttrs(r.ChatID, r.ID, r.ContainerID)
	outcome := unchanged
	err := s.locked(ctx, r.ChatID, func(ctx context.Context) error {
		current, err := s.store.Get(ctx, r.ChatID)
		if errors.Is(err, sandbox.ErrNotFound) || (err == nil && current.ID != r.ID) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read registry: %w", err)
		}
		if err := s.runtime.Delete(ctx, r.ContainerID); err != nil {
			return fmt.Errorf("remove dead container: %w", err)
		}
		if err := s.store.Remove(ctx, r.ID); err != nil {
			return fmt.Errorf("forget session: %w", err)
		}
		outcome = recordRepaired
		return nil
	})
	if err != nil {
		s.log.ErrorContext(ctx, "reconcile_failed", append(attrs, slog.String("error", sandbox.ErrorType(err)))...)
		return Failed
	}
	if outcome == recordRepaired {
		s.log.InfoContext(ctx, "sandbox_record_repaired", attrs...)
	}
	return outcome
}
