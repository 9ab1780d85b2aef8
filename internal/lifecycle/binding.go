package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// CheckBinding ties the registry to the runtime's identity, or checks that it is tied to
// it (see Binding); with Adopt it ties it to this runtime whatever it was tied to. Without
// a Binding or an Inventory there is nothing to check. Errors: sandbox.ErrConflict when
// the registry belongs to another runtime (the message names both and the way out);
// sandbox.ErrUnavailable when the runtime or the registry cannot be asked. CheckRegistry
// calls it at start-up; Reconcile and the first Create call it too.
func (s *Service) CheckBinding(ctx context.Context) error {
	if s.binding == nil || s.inventory == nil {
		return nil
	}
	id, err := s.inventory.Identity(ctx)
	if err != nil {
		return fmt.Errorf("runtime identity: %w", err)
	}
	previous, err := s.binding.Bind(ctx, id, s.adopt)
	if errors.Is(err, sandbox.ErrConflict) {
		return fmt.Errorf("the registry records the sandboxes of %q, this service runs on %q: refusing to take its records for this runtime's (start once with adopt to take the registry over; the reconciler then forgets the records it cannot find): %w",
			previous, id, err)
	}
	if err != nil {
		return fmt.Errorf("bind the registry to %q: %w", id, err)
	}
	if previous != "" && previous != id {
		s.log.WarnContext(ctx, "registry_rebound", slog.String("previous", previous), slog.String("runtime", id))
	}
	s.bound.Store(true)
	return nil
}

// boundYet reports whether ensureBound has nothing left to check.
func (s *Service) boundYet() bool {
	return s.binding == nil || s.inventory == nil || s.bound.Load()
}

// ensureBound checks the binding until one check has passed.
func (s *Service) ensureBound(ctx context.Context) error {
	if s.boundYet() {
		return nil
	}
	err := s.CheckBinding(ctx)
	if errors.Is(err, sandbox.ErrConflict) {
		// A misconfigured service, not a conflict of the caller's request.
		return fmt.Errorf("%v: %w", err, sandbox.ErrUnavailable)
	}
	return err
}

// CheckRegistry is the start-up check of the registry against the runtime, both ways:
// the registry must be tied to this runtime (CheckBinding), and the runtime must hold no
// sandbox of this instance that another registry (or none) recorded and this one did not
// (a fresh or lost registry file, another database, another working directory): its
// reconciler would leave them alone, but they would be nobody's. Such sandboxes make it
// refuse with an error wrapping sandbox.ErrConflict that says how many it found, which
// registries recorded them, and the ways on; with Adopt it takes them over instead
// (adopt). Without a Binding or an Inventory there is nothing to check. Other errors wrap
// sandbox.ErrUnavailable when the runtime or the registry cannot be asked.
func (s *Service) CheckRegistry(ctx context.Context) error {
	if s.binding == nil || s.inventory == nil {
		return nil
	}
	if err := s.CheckBinding(ctx); err != nil {
		return err
	}
	own, adopted, err := s.binding.Registry(ctx)
	if err != nil {
		return fmt.Errorf("registry id: %w", err)
	}
	records, err := s.allRecords(ctx)
	if err != nil {
		return err
	}
	containers, err := s.inventory.Managed(ctx)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	recorded := make(map[string]bool, len(records))
	for _, r := range records {
		recorded[r.ContainerID] = true
	}
	mine := registries(own, adopted)
	foreign := map[string][]Container{} // by the registry their labels name
	for _, c := range containers {
		if !mine(c) && !recorded[c.ID] {
			foreign[c.Registry] = append(foreign[c.Registry], c)
		}
	}
	if len(foreign) == 0 {
		return nil
	}
	if !s.adopt {
		return fmt.Errorf("%s, which this registry (id %s) did not record: refusing to start, as they would be nobody's. Point the registry setting at the registry that recorded them, or start once with adopt to take them over (their records are rebuilt from their labels): %w",
			describeForeign(foreign), own, sandbox.ErrConflict)
	}
	for _, id := range slices.Sorted(maps.Keys(foreign)) {
		if err := s.adoptAll(ctx, id, foreign[id]); err != nil {
			return err
		}
	}
	return nil
}

// describeForeign says how many sandboxes of which registries there are.
func describeForeign(foreign map[string][]Container) string {
	total := 0
	var parts []string
	for _, id := range slices.Sorted(maps.Keys(foreign)) {
		total += len(foreign[id])
		name := "registry " + id
		if id == "" {
			name = "no registry (made before sandboxes named theirs)"
		}
		parts = append(parts, fmt.Sprintf("%d of %s", len(foreign[id]), name))
	}
	return fmt.Sprintf("the runtime holds %d sandboxes of this instance recorded by another registry or none (%s)",
		total, strings.Join(parts, ", "))
}

// registries returns whether a container belongs to this registry: it was made by it
// (own) or by a registry it adopted. Without a registry id every container does.
func registries(own string, adopted []string) func(Container) bool {
	if own == "" {
		return func(Container) bool { return true }
	}
	set := map[string]bool{own: true}
	for _, a := range adopted {
		set[a] = true
	}
	return func(c Container) bool { return set[c.Registry] }
}

// adoptAll takes over the sandboxes of registry id: each running one gets its record
// rebuilt from its labels, under its chat's lock, then the registry records that it
// adopted id. That order matters: a crash in between leaves the rest foreign (refused
// again at the next start, adopted then), never orphans of this registry that its
// reconciler would remove. A sandbox that is not running, or whose chat has a session in
// this registry already, gets no record: as a sandbox of an adopted registry without one,
// the reconciler removes it.
func (s *Service) adoptAll(ctx context.Context, id string, containers []Container) error {
	adopted := 0
	for _, c := range containers {
		attrs := append(sessionAttrs(c.ChatID, c.SessionID, c.ID), slog.String("registry", id))
		rec, reason := s.adoptedSession(c)
		if reason == "" {
			var err error
			reason, err = s.adoptOne(ctx, rec)
			if err != nil {
				return fmt.Errorf("adopt the sandbox %s of registry %q: %w", c.ID, id, err)
			}
		}
		if reason != "" {
			s.log.WarnContext(ctx, "sandbox_not_adopted", append(attrs, slog.String("reason", reason))...)
			continue
		}
		adopted++
		s.log.InfoContext(ctx, "sandbox_adopted", append(attrs, slog.Time("expires_at", rec.ExpiresAt))...)
	}
	if err := s.binding.Adopt(ctx, id); err != nil {
		return fmt.Errorf("adopt registry %q: %w", id, err)
	}
	s.log.WarnContext(ctx, "registry_adopted", slog.String("registry", id),
		slog.Int("sandboxes", len(containers)), slog.Int("adopted", adopted))
	return nil
}

// adoptedSession rebuilds the record of c from its labels, or says why it cannot. The
// labels carry the expiry the sandbox was made with, not a later keepalive: an adopted
// sandbox lives at least one TTL from now (within MaxLifetime of its creation), so that
// none is swept the moment it is found.
func (s *Service) adoptedSession(c Container) (sandbox.Session, string) {
	switch {
	case !c.Running:
		return sandbox.Session{}, "not_running"
	case c.ChatID == uuid.Nil || c.SessionID == uuid.Nil:
		return sandbox.Session{}, "no_chat_or_session_label"
	case strings.TrimSpace(c.VolumeHostPath) == "":
		return sandbox.Session{}, "no_workspace"
	}
	now := s.clock.Now()
	created := c.SessionCreatedAt
	if created.IsZero() {
		created = c.CreatedAt
	}
	expires := now.Add(s.ttl)
	if limit := created.Add(s.maxLifetime); expires.After(limit) {
		expires = limit
	}
	if c.ExpiresAt.After(expires) {
		expires = c.ExpiresAt
	}
	return sandbox.Session{
		ID:             c.SessionID,
		ChatID:         c.ChatID,
		ContainerID:    c.ID,
		Status:         sandbox.StatusRunning,
		CreatedAt:      created.UTC(),
		ExpiresAt:      expires.UTC(),
		Tenant:         c.Tenant,
		AgentID:        c.AgentID,
		VolumeHostPath: c.VolumeHostPath,
	}, ""
}

// adoptOne saves rec under its chat's lock, unless the chat has a session already; an
// adoption run again finds its own record and is done.
func (s *Service) adoptOne(ctx context.Context, rec sandbox.Session) (reason string, err error) {
	err = s.locked(ctx, rec.ChatID, func(ctx context.Context) error {
		current, err := s.store.Get(ctx, rec.ChatID)
		switch {
		case err == nil && current.ID == rec.ID:
			return nil
		case err == nil:
			reason = "chat_has_a_session"
			return nil
		case !errors.Is(err, sandbox.ErrNotFound):
			return fmt.Errorf("read registry: %w", err)
		}
		return s.store.Save(ctx, rec)
	})
	return reason, err
}
