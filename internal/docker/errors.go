package docker

import (
	"context"
	"errors"
	"fmt"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// engineError wraps an engine error with op, translating it into the domain's sentinels:
// NotFound into sandbox.ErrNotFound, an unreachable or overloaded engine into
// sandbox.ErrUnavailable.
func engineError(op string, err error) error {
	switch {
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("docker: %s: %w: %w", op, sandbox.ErrNotFound, err)
	case client.IsErrConnectionFailed(err), cerrdefs.IsUnavailable(err),
		cerrdefs.IsDeadlineExceeded(err), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("docker: %s: %w: %w", op, sandbox.ErrUnavailable, err)
	}
	return fmt.Errorf("docker: %s: %w", op, err)
}

// gone turns "not found" into success: what is already gone needs no removing.
func gone(err error) error {
	if errors.Is(err, sandbox.ErrNotFound) {
		return nil
	}
	return err
}
