// Package memstore provides an in-memory lifecycle.Store (and Binding), for tests: the
// reference the conformance suites run against besides the real registries. No setting
// of sandboxd selects it.
package memstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

var (
	_ lifecycle.Store   = (*Store)(nil)
	_ lifecycle.Binding = (*Store)(nil)
)

// Store keeps sessions in a map keyed by chat: one session per chat by construction.
type Store struct {
	mu       sync.Mutex
	byChat   map[uuid.UUID]sandbox.Session
	identity string          // the runtime the sessions belong to (Bind)
	id       string          // the registry's own id, random (Registry)
	adopted  map[string]bool // the registries whose sandboxes it adopted
}

// New returns an empty Store with a registry id of its own.
func New() *Store {
	return &Store{byChat: make(map[uuid.UUID]sandbox.Session), id: uuid.NewString(), adopted: map[string]bool{}}
}

// Registry returns the store's id and the registries it adopted (see lifecycle.Binding).
func (st *Store) Registry(context.Context) (string, []string, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.id, slices.Sorted(maps.Keys(st.adopted)), nil
}

// Adopt records that the store took over registry id's sandboxes.
func (st *Store) Adopt(_ context.Context, id string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.adopted[id] = true
	return nil
}

// Bind ties the store to the runtime identity (see lifecycle.Binding).
func (st *Store) Bind(_ context.Context, identity string, rebind bool) (string, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	previous := st.identity
	tie, err := lifecycle.Rebinding(previous, identity, rebind)
	if err != nil {
		return previous, fmt.Errorf("memstore: %w", err)
	}
	if tie {
		st.identity = identity
	}
	return previous, nil
}

// Save records s; a chat that already has a session is a sandbox.ErrConflict.
func (st *Store) Save(_ context.Context, s sandbox.Session) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if cur, ok := st.byChat[s.ChatID]; ok {
		return fmt.Errorf("memstore: chat %s already has session %s: %w", s.ChatID, cur.ID, sandbox.ErrConflict)
	}
	for _, cur := range st.byChat {
		if cur.ID == s.ID {
			return fmt.Errorf("memstore: session %s exists: %w", s.ID, sandbox.ErrConflict)
		}
	}
	st.byChat[s.ChatID] = s
	return nil
}

// Get returns the chat's session or sandbox.ErrNotFound.
func (st *Store) Get(_ context.Context, chatID uuid.UUID) (sandbox.Session, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.byChat[chatID]
	if !ok {
		return sandbox.Session{}, fmt.Errorf("memstore: chat %s: %w", chatID, sandbox.ErrNotFound)
	}
	return s, nil
}

// ListExpired returns up to limit sessions expired at now after the cursor, oldest
// expiry first.
func (st *Store) ListExpired(_ context.Context, now time.Time, after lifecycle.ExpiredAfter, limit int) ([]sandbox.Session, error) {
	st.mu.Lock()
	var out []sandbox.Session
	for _, s := range st.byChat {
		if !s.Expired(now) {
			continue
		}
		if c := s.ExpiresAt.Compare(after.ExpiresAt); c < 0 || (c == 0 && compareUUID(s.ChatID, after.ChatID) <= 0) {
			continue
		}
		out = append(out, s)
	}
	st.mu.Unlock()
	slices.SortFunc(out, func(a, b sandbox.Session) int {
		if c := a.ExpiresAt.Compare(b.ExpiresAt); c != 0 {
			return c
		}
		return compareUUID(a.ChatID, b.ChatID)
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// List returns one page of sessions ordered by chat id.
func (st *Store) List(_ context.Context, f lifecycle.ListFilter) ([]sandbox.Session, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	st.mu.Lock()
	var out []sandbox.Session
	for _, s := range st.byChat {
		if compareUUID(s.ChatID, f.After) <= 0 {
			continue
		}
		if f.Tenant != "" && s.TenantOf() != f.Tenant {
			continue
		}
		if f.AgentID != "" && s.AgentID != f.AgentID {
			continue
		}
		if f.VolumeHostPath != "" && s.VolumeHostPath != f.VolumeHostPath {
			continue
		}
		if f.Expired != nil && s.Expired(f.Now) != *f.Expired {
			continue
		}
		out = append(out, s)
	}
	st.mu.Unlock()
	slices.SortFunc(out, func(a, b sandbox.Session) int { return compareUUID(a.ChatID, b.ChatID) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Count returns the number of sessions.
func (st *Store) Count(context.Context) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.byChat), nil
}

// CountTenant returns the number of sessions of tenant.
func (st *Store) CountTenant(_ context.Context, tenant string) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, s := range st.byChat {
		if s.TenantOf() == tenant {
			n++
		}
	}
	return n, nil
}

// SetExpiry moves the expiry of session id, or returns sandbox.ErrNotFound.
func (st *Store) SetExpiry(_ context.Context, id uuid.UUID, expiresAt time.Time) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	for chat, s := range st.byChat {
		if s.ID == id {
			s.ExpiresAt = expiresAt
			st.byChat[chat] = s
			return nil
		}
	}
	return fmt.Errorf("memstore: session %s: %w", id, sandbox.ErrNotFound)
}

// Remove forgets session id; a missing session is no error.
func (st *Store) Remove(_ context.Context, id uuid.UUID) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	for chat, s := range st.byChat {
		if s.ID == id {
			delete(st.byChat, chat)
			return nil
		}
	}
	return nil
}

// RemoveExpired forgets session id if it is still chatID's session and expired at now.
func (st *Store) RemoveExpired(_ context.Context, chatID, id uuid.UUID, now time.Time) (bool, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if s, ok := st.byChat[chatID]; ok && s.ID == id && s.Expired(now) {
		delete(st.byChat, chatID)
		return true, nil
	}
	return false, nil
}

func compareUUID(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) }
