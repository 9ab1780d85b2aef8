package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// registryOps: the store's operations, one at a time on a fresh registry, against the
// round trip of a trivial statement (Ping, SELECT 1) on the same store.
func (b *bench) registryOps(ctx context.Context, reg registry) error {
	w, err := b.newWorld(ctx, reg, "ops")
	if err != nil {
		return err
	}
	defer w.drop()
	st, err := openStore(ctx, w.dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	n := b.opts.RegistryOps
	now := time.Now().UTC()
	sessions := make([]sandbox.Session, n)
	for i := range sessions {
		exp := now.Add(time.Hour)
		if i%2 == 0 {
			exp = now.Add(-time.Hour)
		}
		chat := uuid.New()
		sessions[i] = sandbox.Session{ID: uuid.New(), ChatID: chat, ContainerID: fmt.Sprintf("%064x", i),
			Status: sandbox.StatusRunning, CreatedAt: now, ExpiresAt: exp,
			VolumeHostPath: filepath.Join(w.volumes, chat.String())}
	}
	rate := func(count int, fn func(i int) error) (float64, error) {
		start := time.Now()
		for i := range count {
			if err := fn(i); err != nil {
				return 0, err
			}
		}
		return float64(count) / time.Since(start).Seconds(), nil
	}
	ping, err := rate(n, func(int) error { return st.Ping(ctx) })
	if err != nil {
		return err
	}
	lists := max(10, n/10)
	ops := []struct {
		name  string
		count int
		fn    func(i int) error
	}{
		{"Save", n, func(i int) error { return st.Save(ctx, sessions[i]) }},
		{"Get", n, func(i int) error { _, err := st.Get(ctx, sessions[i].ChatID); return err }},
		{"ListExpired (limit 100)", lists, func(int) error { _, err := st.ListExpired(ctx, now, lifecycle.ExpiredAfter{}, 100); return err }},
		{"Remove", n, func(i int) error { return st.Remove(ctx, sessions[i].ID) }},
	}
	for _, op := range ops {
		r, err := rate(op.count, op.fn)
		if err != nil {
			return fmt.Errorf("%s: %w", op.name, err)
		}
		b.add(newRow(reg.name, "registry "+op.name, "ops/s", r, ping, "Ping (SELECT 1)", op.count))
	}
	return nil
}
