package lifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Keepalive sets the chat's sandbox to expire ttl from now, but never later than the
// configured maximum lifetime after its creation. Errors: sandbox.ErrInvalid (ttl <= 0),
// sandbox.ErrNotFound, sandbox.ErrExpired (an expired sandbox is not revived: create
// replaces it).
func (s *Service) Keepalive(ctx context.Context, chatID uuid.UUID, ttl time.Duration) (sandbox.Session, error) {
	ctx, span := s.tracer.Start(ctx, "usecase.keepalive_sandbox",
		trace.WithAttributes(attribute.String("chat.id", chatID.String())))
	defer span.End()

	var session sandbox.Session
	err := func() error {
		if ttl <= 0 {
			return fmt.Errorf("keepalive: ttl %s is not positive: %w", ttl, sandbox.ErrInvalid)
		}
		return s.locked(ctx, chatID, func(ctx context.Context) error {
			var err error
			session, err = s.extend(ctx, chatID, ttl)
			return err
		})
	}()
	outcome := "extended"
	if err != nil {
		outcome = string(Failed)
	}
	s.m.keepaliveTotal.Add(ctx, 1, metric.WithAttributes(result(outcome)))
	span.SetAttributes(attribute.String("sandbox.result", outcome))
	if err != nil {
		failSpan(span, err)
		return sandbox.Session{}, err
	}
	span.SetAttributes(
		attribute.String("session.id", session.ID.String()),
		attribute.String("container.id", session.ContainerID))
	return session, nil
}

// extend moves the live session's expiry to now+ttl, capped by the maximum lifetime.
// The caller holds the chat's lock.
func (s *Service) extend(ctx context.Context, chatID uuid.UUID, ttl time.Duration) (sandbox.Session, error) {
	session, err := s.liveSession(ctx, chatID)
	if err != nil {
		return sandbox.Session{}, fmt.Errorf("keepalive: %w", err)
	}
	expires := s.clock.Now().Add(ttl)
	if limit := session.CreatedAt.Add(s.maxLifetime); expires.After(limit) {
		expires = limit
	}
	if !expires.After(session.ExpiresAt) {
		return session, nil // never shortens
	}
	if err := s.store.SetExpiry(ctx, session.ID, expires); err != nil {
		return sandbox.Session{}, fmt.Errorf("keepalive: %w", err)
	}
	session.ExpiresAt = expires
	s.log.InfoContext(ctx, "sandbox_kept_alive",
		append(logAttrs(session), slog.Time("expires_at", expires))...)
	s.event(session, EventKeptAlive, "until "+expires.UTC().Format(time.RFC3339))
	return session, nil
}

// touch extends the session by the TTL when its agent's profile says activity does.
func (s *Service) touch(ctx context.Context, session sandbox.Session) {
	if s.extendOnActivity == nil || !s.extendOnActivity(session.AgentID) {
		return
	}
	err := s.locked(ctx, session.ChatID, func(ctx context.Context) error {
		_, err := s.extend(ctx, session.ChatID, s.ttl)
		return err
	})
	if err != nil {
		s.log.WarnContext(ctx, "sandbox_keepalive_failed",
			append(logAttrs(session), slog.String("error", sandbox.ErrorType(err)))...)
	}
}
