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
// sandbox.ErrNotFound.
func (s *Service) Get(ctx context.Context, chatID uuid.UUID) (sandbox.Session, error) {
	session, err := s.store.Get(ctx, chatID)
	if errors.Is(err, sandbox.ErrNotFound) {
		return sandbox.Session{}, noSandbox(chatID)
	}
	if err != nil {
		return sandbox.Session{}, fmt.Errorf("get chat %s: %w", chatID, err)
	}
	return session, nil
}

// List returns one page of the registry.
func (s *Service) List(ctx context.Context, filter ListFilter) ([]sandbox.Session, error) {
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

// liveSession returns the chat's session if it has not expired.
func (s *Service) liveSession(ctx context.Context, chatID uuid.UUID) (sandbox.Session, error) {
	session, err := s.store.Get(ctx, chatID)
	if errors.Is(err, sandbox.ErrNotFound) {
		return sandbox.Session{}, noSandbox(chatID)
	}
	if err != nil {
		return sandbox.Session{}, fmt.Errorf("chat %s: %w", chatID, err)
	}
	if session.Expired(s.clock.Now()) {
		return sandbox.Session{}, fmt.Errorf("chat %s: sandbox %s expired at %s: %w",
			chatID, session.ID, session.ExpiresAt.Format(time.RFC3339), sandbox.ErrExpired)
	}
	return session, nil
}
