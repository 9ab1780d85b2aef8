package lifecycle

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// timedStore and timedBinding give every registry call its own deadline
// (Config.RegistryTimeout): a database that hangs (a backend that stopped answering)
// fails the call instead of holding the use case, the sweep or a chat's lock for good.

type timedStore struct {
	Store
	d time.Duration
}

func (t timedStore) Save(ctx context.Context, s sandbox.Session) error {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.Store.Save(ctx, s)
}

func (t timedStore) Get(ctx context.Context, chatID uuid.UUID) (sandbox.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.Store.Get(ctx, chatID)
}

func (t timedStore) ListExpired(ctx context.Context, now time.Time, after ExpiredAfter, limit int) ([]sandbox.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.Store.ListExpired(ctx, now, after, limit)
}

func (t timedStore) List(ctx context.Context, f ListFilter) ([]sandbox.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.Store.List(ctx, f)
}

func (t timedStore) Count(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.Store.Count(ctx)
}

func (t timedStore) CountTenant(ctx context.Context, tenant string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.Store.CountTenant(ctx, tenant)
}

func (t timedStore) SetExpiry(ctx context.Context, sessionID uuid.UUID, expiresAt time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.Store.SetExpiry(ctx, sessionID, expiresAt)
}

func (t timedStore) Remove(ctx context.Context, sessionID uuid.UUID) error {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.Store.Remove(ctx, sessionID)
}

func (t timedStore) RemoveExpired(ctx context.Context, chatID, sessionID uuid.UUID, now time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.Store.RemoveExpired(ctx, chatID, sessionID, now)
}

type timedBinding struct {
	Binding
	d time.Duration
}

func (t timedBinding) Bind(ctx context.Context, identity string, rebind bool) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.Binding.Bind(ctx, identity, rebind)
}

func (t timedBinding) Registry(ctx context.Context) (string, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.Binding.Registry(ctx)
}

func (t timedBinding) Adopt(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.Binding.Adopt(ctx, id)
}
