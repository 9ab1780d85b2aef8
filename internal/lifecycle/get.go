package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Get returns the chat's session, expired or not, or an error wrapping
// sandbox.ErrNotFound, also when the session is another tenant's (the caller's tenant
// comes with ctx).
func (s *Service) Get(ctx context.Context, chatID uuid.UUID) (sandbox.Session, error) {
	return s.ownSession(ctx, chatID)
}

// List returns one page of the caller's tenant's sessions (the tenant comes with ctx;
// filter.Tenant is set to it).
func (s *Service) List(ctx context.Context, filter ListFilter) ([]sandbox.Session, error) {
	filter.Tenant = sandbox.TenantFrom(ctx)
	if filter.Now.IsZero() {
		filter.Now = s.clock.Now()
	}
	sessions, err := s.store.List(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return sessions, nil
}

// noSandbox is the error for a chat without a sandbox, in words fit for the client (the
// store's own error names its internals).
func noSandbox(chatID uuid.UUID) error {
	return fmt.Errorf("chat %s has no sandbox: %w", chatID, sandbox.ErrNotFound)
}

// ownSession returns the chat's session if it is the caller's tenant's (ctx tells which):
// another tenant's is answered as no session at all, in the same words, so that a
// caller learns nothing of other tenants' chats.
func (s *Service) ownSession(ctx context.Context, chatID uuid.UUID) (sandbox.Session, error) {
	session, err := s.store.Get(ctx, chatID)
	if errors.Is(err, sandbox.ErrNotFound) || err == nil && session.TenantOf() != sandbox.TenantFrom(ctx) {
		return sandbox.Session{}, noSandbox(chatID)
	}
	if err != nil {
		return sandbox.Session{}, fmt.Errorf("chat %s: %w", chatID, err)
	}
	return session, nil
}

// liveSession returns the caller's tenant's session of the chat if it has not expired.
func (s *Service) liveSession(ctx context.Context, chatID uuid.UUID) (sandbox.Session, error) {
	session, err := s.ownSession(ctx, chatID)
	if err != nil {
		return sandbox.Session{}, err
	}
	if session.Expired(s.clock.Now()) {
		return sandbox.Session{}, fmt.Errorf("chat %s: sandbox %s expired at %s: %w",
			chatID, session.ID, session.ExpiresAt.Format(time.RFC3339), sandbox.ErrExpired)
	}
	return session, nil
}
