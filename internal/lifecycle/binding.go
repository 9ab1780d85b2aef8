package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// CheckBinding ties the registry to the runtime's identity, or checks that it is tied to
// it (see Binding). Without a Binding or an Inventory there is nothing to check. Errors:
// sandbox.ErrConflict when the registry belongs to another runtime (the message names
// both and the way out); sandbox.ErrUnavailable when the runtime or the registry cannot
// be asked. Call it at start-up to refuse to run on the wrong engine; Reconcile and the
// first Create call it too.
func (s *Service) CheckBinding(ctx context.Context) error {
	if s.binding == nil || s.inventory == nil {
		return nil
	}
	id, err := s.inventory.Identity(ctx)
	if err != nil {
		return fmt.Errorf("runtime identity: %w", err)
	}
	previous, err := s.binding.Bind(ctx, id, s.rebind)
	if errors.Is(err, sandbox.ErrConflict) {
		return fmt.Errorf("the registry records the sandboxes of %q, this service runs on %q: refusing to take its records for this runtime's (start once with rebind_runtime to take the registry over; the reconciler then forgets the records it cannot find): %w",
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

// ensureBound checks the binding until one check has passed.
func (s *Service) ensureBound(ctx context.Context) error {
	if s.bound.Load() {
		return nil
	}
	err := s.CheckBinding(ctx)
	if errors.Is(err, sandbox.ErrConflict) {
		// A misconfigured service, not a conflict of the caller's request.
		return fmt.Errorf("%v: %w", err, sandbox.ErrUnavailable)
	}
	return err
}
