package pglock

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// CheckSessionLocks checks that pool's connections keep PostgreSQL sessions of their own,
// as session advisory locks (the chats' locks, and the migrations') need. Behind a
// transaction-pooling proxy (PgBouncer with pool_mode transaction or statement) each
// transaction of one client connection may run on another server backend: a lock taken
// "by" a connection is held by whichever backend ran the statement, so it neither
// excludes the other replicas nor goes with the connection. Locks would silently stop
// excluding; this refuses such a pool instead.
//
// It takes a random advisory lock on one connection and checks that the lock is that
// connection's own backend's (pg_locks), and that a second connection cannot take it.
// Errors wrap sandbox.ErrInvalid when the pool does not keep sessions (the message says
// what to change) and sandbox.ErrUnavailable when the database cannot be asked.
func CheckSessionLocks(ctx context.Context, pool *pgxpool.Pool) error {
	a, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("pglock: check session locks: %w: %w", sandbox.ErrUnavailable, err)
	}
	defer a.Release()
	b, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("pglock: check session locks: %w: %w", sandbox.ErrUnavailable, err)
	}
	defer b.Release()
	// Simple protocol: a transaction-pooling proxy may not carry prepared statements from
	// one statement to the next, and this check must get as far as saying why.
	simple := pgx.QueryExecModeSimpleProtocol
	key := rand.Int64N(1 << 62) // positive: its halves are pg_locks' classid and objid
	var taken bool
	if err := a.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, simple, key).Scan(&taken); err != nil {
		return fmt.Errorf("pglock: check session locks: %w: %w", sandbox.ErrUnavailable, err)
	}
	if !taken {
		return fmt.Errorf("pglock: check session locks: a fresh random advisory lock was taken already: %w", sandbox.ErrUnavailable)
	}
	defer func() {
		// Best effort: should the sessions be shared, the lock ends with the backend.
		_, _ = a.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, simple, key)
	}()
	var own bool
	if err := a.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND pid = pg_backend_pid() AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid
		AND objsubid = 1)`, simple, key).Scan(&own); err != nil {
		return fmt.Errorf("pglock: check session locks: %w: %w", sandbox.ErrUnavailable, err)
	}
	var again bool
	if err := b.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, simple, key).Scan(&again); err != nil {
		return fmt.Errorf("pglock: check session locks: %w: %w", sandbox.ErrUnavailable, err)
	}
	if again {
		_, _ = b.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, simple, key)
	}
	if !own || again {
		return fmt.Errorf("pglock: PostgreSQL session advisory locks do not hold on these connections (a lock taken on one connection is not its backend's, or another connection takes it too): sandboxd is behind a transaction-pooling proxy such as PgBouncer in pool_mode transaction or statement, under which the chats' locks would silently stop excluding each other; connect sandboxd to PostgreSQL directly, or through session pooling: %w", sandbox.ErrInvalid)
	}
	return nil
}
