package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// ReconcileReport counts what one reconciliation did.
type ReconcileReport struct {
	Containers      int // labelled containers seen
	Records         int // registry records seen
	OrphansRemoved  int // labelled containers of this registry without a record, removed
	RecordsRepaired int // records whose container was gone or dead, forgotten
	Foreign         int // containers of other registries, left alone
	// RemovalsRefused counts the orphans a reconciliation did not remove because they
	// were too many at once (see MassRemovalMin).
	RemovalsRefused int
	Errors          int
}

// MassRemovalMin is the brake on a reconciliation's removals: one that would remove more
// than MassRemovalMin orphans and more than half of the instance's sandboxes at once
// removes none (unless ForceMassRemoval is set). So many orphans at once say the registry
// lost its records (a restored backup, rows deleted by hand), not that creates crashed.
const MassRemovalMin = 10

// Reconcile makes the runtime and the registry agree, repairing what a crash left:
//   - a labelled container of this registry (see Binding) with no record, older than the
//     grace period, is removed, unless that would remove too many at once
//     (MassRemovalMin): then none is, and the refusal is logged and counted;
//   - a record whose container is gone or no longer running is removed (its container too),
//     so the next create makes a fresh sandbox.
//
// Containers without this instance's labels are never seen, and those of other
// registries never touched. When the runtime or the registry cannot be listed, or the
// registry is tied to another runtime (CheckBinding), nothing is deleted and the error is
// returned. Every repair happens under the chat's lock after reading the registry again.
func (s *Service) Reconcile(ctx context.Context) (ReconcileReport, error) {
	rep, _, err := s.reconcile(ctx, false, 0)
	return rep, err
}

// ReconcilesBegun returns how many reconciliations have begun so far, for ReconcileSince.
func (s *Service) ReconcilesBegun() uint64 { return s.reconciles.Load() }

// ReconcileSince is Reconcile, unless a reconciliation that began after begun (a count
// ReconcilesBegun returned) has already succeeded: then it does nothing and reports
// false. It waits for the reconciliation under way, if any, before it decides. A caller
// that needs the runtime and the registry compared since some moment (the start, the
// event stream's connection) reads begun at that moment; two such callers (the start-up
// and the stream's first connection) then reconcile once between them.
func (s *Service) ReconcileSince(ctx context.Context, begun uint64) (ReconcileReport, bool, error) {
	return s.reconcile(ctx, true, begun)
}

// reconcile runs one reconciliation under the token; with since, none when one that
// began after begun has succeeded (ran is then false).
func (s *Service) reconcile(ctx context.Context, since bool, begun uint64) (rep ReconcileReport, ran bool, err error) {
	ctx, span := s.tracer.Start(ctx, "usecase.reconcile")
	defer span.End()
	select {
	case s.reconciling <- struct{}{}:
		defer func() { <-s.reconciling }()
	case <-ctx.Done():
		return rep, false, fmt.Errorf("reconcile: wait for the one under way: %w", ctx.Err())
	}
	if since && s.reconciled > begun {
		span.SetAttributes(attribute.Bool("sandbox.reconcile.skipped", true))
		return rep, false, nil
	}
	n := s.reconciles.Add(1) // before anything is read: this one began after the caller's begun
	rep, err = s.reconcileHeld(ctx, span)
	if err == nil {
		s.reconciled = n
	}
	return rep, true, err
}

// reconcileHeld is Reconcile's work, done holding the token.
func (s *Service) reconcileHeld(ctx context.Context, span trace.Span) (ReconcileReport, error) {
	var rep ReconcileReport
	fail := func(err error) (ReconcileReport, error) {
		err = fmt.Errorf("reconcile: %w", err)
		failSpan(span, err)
		return rep, err
	}
	if s.inventory == nil {
		return rep, fmt.Errorf("reconcile: no inventory configured: %w", sandbox.ErrUnavailable)
	}
	// Every time: a registry that records another runtime's sandboxes would have all its
	// records forgotten, and what they do not name removed.
	if err := s.CheckBinding(ctx); err != nil {
		return fail(err)
	}
	mine := registries("", nil)
	if s.binding != nil {
		own, adopted, err := s.binding.Registry(ctx)
		if err != nil {
			return fail(fmt.Errorf("registry id: %w", err))
		}
		mine = registries(own, adopted)
	}

	// Records first, then containers: a record saved after the first listing has its
	// container in the second, so it is never mistaken for a record without one.
	records, err := s.allRecords(ctx)
	if err != nil {
		return fail(err)
	}
	containers, err := s.inventory.Managed(ctx)
	if err != nil {
		return fail(fmt.Errorf("list containers: %w", err))
	}
	rep.Records, rep.Containers = len(records), len(containers)

	byID := make(map[string]Container, len(containers))
	for _, c := range containers {
		byID[c.ID] = c
	}
	recorded := make(map[string]bool, len(records))
	for _, r := range records {
		recorded[r.ContainerID] = true
	}
	now := s.clock.Now()
	var orphans []Container
	for _, c := range containers {
		switch {
		case !mine(c):
			rep.Foreign++
		case now.Sub(c.CreatedAt) >= s.reconcileGrace && !recorded[c.ID]:
			orphans = append(orphans, c)
		}
	}
	if n := len(orphans); n > MassRemovalMin && 2*n > len(containers) && !s.forceMass {
		rep.RemovalsRefused = n
		s.log.ErrorContext(ctx, "reconcile_mass_removal_refused", slog.Int("orphans", n),
			slog.Int("containers", len(containers)), slog.Int("records", len(records)),
			slog.String("reason", fmt.Sprintf("removing more than %d sandboxes and more than half of the instance's at once says the registry lost its records; restore it, or set reconcile.force to remove them", MassRemovalMin)))
		s.m.reconcileTotal.Add(ctx, 1, metric.WithAttributes(result(string(massRemovalRefused))))
		orphans = nil
	}
	for _, c := range orphans {
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
		attribute.Int("sandbox.reconcile.foreign", rep.Foreign),
		attribute.Int("sandbox.reconcile.removals_refused", rep.RemovalsRefused),
		attribute.Int("sandbox.reconcile.errors", rep.Errors))
	if rep.OrphansRemoved+rep.RecordsRepaired > 0 {
		s.recordActive(ctx)
	}
	return rep, nil
}

// allRecords lists every record of the registry.
func (s *Service) allRecords(ctx context.Context) ([]sandbox.Session, error) {
	var records []sandbox.Session
	for after := uuid.Nil; ; {
		page, err := s.store.List(ctx, ListFilter{After: after, Limit: 500})
		if err != nil {
			return nil, fmt.Errorf("list registry: %w", err)
		}
		records = append(records, page...)
		if len(page) < 500 {
			return records, nil
		}
		after = page[len(page)-1].ChatID
	}
}

const (
	orphanRemoved  Outcome = "orphan_removed"
	recordRepaired Outcome = "record_repaired"
	unchanged      Outcome = "unchanged"
	// massRemovalRefused counts the reconciliations that refused to remove their orphans.
	massRemovalRefused Outcome = "mass_removal_refused"
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
		s.touchWorkspace(ctx, r)
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
