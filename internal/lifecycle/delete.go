package lifecycle

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// DeleteResult tells what Delete did. The ids are empty when the chat had no sandbox.
type DeleteResult struct {
	ChatID      uuid.UUID
	Result      Outcome // Deleted or NotFound
	SessionID   uuid.UUID
	ContainerID string
}

// Delete removes the chat's sandbox and forgets it. A chat with no sandbox is no error
// (Result NotFound): delete is idempotent. On a runtime or registry error the record
// stays, so a retry finishes the job.
func (s *Service) Delete(ctx context.Context, chatID uuid.UUID) (DeleteResult, error) {
	tenant := sandbox.TenantFrom(ctx)
	ctx, span := s.tracer.Start(ctx, "usecase.delete_sandbox",
		trace.WithAttributes(attribute.String("chat.id", chatID.String()), tenantAttr(tenant)))
	defer span.End()

	res := DeleteResult{ChatID: chatID}
	err := s.locked(ctx, chatID, func(ctx context.Context) error {
		current, err := s.store.Get(ctx, chatID)
		if err != nil && !errors.Is(err, sandbox.ErrNotFound) {
			return fmt.Errorf("delete: read registry: %w", err)
		}
		if err != nil || current.TenantOf() != tenant {
			// Another tenant's chat is answered as one that has no sandbox.
			res.Result = NotFound
			return nil
		}
		span.SetAttributes(
			attribute.String("session.id", current.ID.String()),
			attribute.String("container.id", current.ContainerID))
		if err := s.runtime.Delete(ctx, current.ContainerID); err != nil {
			return fmt.Errorf("delete: remove sandbox %s: %w", current.ContainerID, err)
		}
		if err := s.store.Remove(ctx, current.ID); err != nil {
			return fmt.Errorf("delete: forget session %s: %w", current.ID, err)
		}
		s.recordActive(ctx)
		s.touchWorkspace(ctx, current)
		s.log.InfoContext(ctx, "sandbox_deleted", logAttrs(current)...)
		s.event(current, EventDeleted, "")
		res.Result, res.SessionID, res.ContainerID = Deleted, current.ID, current.ContainerID
		return nil
	})
	if err != nil {
		res = DeleteResult{ChatID: chatID, Result: Failed}
	}
	s.m.deleteTotal.Add(ctx, 1, metric.WithAttributes(result(string(res.Result)), s.tenantMetric(tenant)))
	span.SetAttributes(attribute.String("sandbox.result", string(res.Result)))
	if err != nil {
		failSpan(span, err)
		return res, err
	}
	return res, nil
}
