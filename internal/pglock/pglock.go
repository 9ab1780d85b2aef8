package pglock

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

var _ lifecycle.Locker = (*Locker)(nil)

// DefaultWait bounds how long Lock waits for a connection and the chat's lock together
// when Config.Wait is zero. It should exceed the longest use case (lifecycle's OpTimeout
// is 2 minutes by default) only if callers are to queue behind it.
const DefaultWait = 30 * time.Second

// releaseTimeout bounds the unlock, which runs after the caller may have left.
const releaseTimeout = 5 * time.Second

// Config holds the dependencies of a Locker.
type Config struct {
	// Pool gives each lock its connection, held from Lock to unlock: the holder of a chat
	// and the replica's first waiter for it take one each. Required. Give the Locker a
	// pool of its own, not the
	// store's: a use case that holds a lock and then queries the store must never wait
	// for a connection that only lock holders and waiters have.
	Pool *pgxpool.Pool
	// Wait bounds one Lock (a connection, then the lock); default DefaultWait. The
	// caller's ctx bounds it too.
	Wait time.Duration
	// Linger is how long a chat's lock is kept as a lease after its last use case here
	// (see Leases in the package comment). Zero: no leases, every Lock takes and releases
	// the server's lock. A Locker with leases must be closed.
	Linger time.Duration
	// MaxLeases bounds the leases kept at once (each holds an entry of the server's lock
	// table); default DefaultMaxLeases. A chat beyond it is locked without a lease.
	MaxLeases int
}

// DefaultMaxLeases is Config.MaxLeases when it is zero.
const DefaultMaxLeases = 256

// Locker serialises the use cases of one chat across replicas. It is safe for concurrent
// use.
type Locker struct {
	pool   *pgxpool.Pool
	wait   time.Duration
	local  *keylock.Locker // this replica's callers of one chat queue here, not in the pool
	leases *leases         // nil without Linger
}

// New returns a Locker. A missing Pool wraps sandbox.ErrInvalid.
func New(cfg Config) (*Locker, error) {
	if cfg.Pool == nil {
		return nil, fmt.Errorf("pglock: missing Pool: %w", sandbox.ErrInvalid)
	}
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.MaxLeases <= 0 {
		cfg.MaxLeases = DefaultMaxLeases
	}
	l := &Locker{pool: cfg.Pool, wait: cfg.Wait, local: keylock.New()}
	if cfg.Linger > 0 {
		l.leases = newLeases(cfg.Pool.Config().ConnConfig, cfg.Linger, cfg.MaxLeases)
	}
	return l, nil
}

// Close ends every lease (it closes the lease connection) and waits for the goroutine
// that kept them. Later Locks take and release the server's lock each time. Without
// Linger it does nothing. It returns no error; the signature matches io.Closer.
func (l *Locker) Close() error {
	if l.leases != nil {
		l.leases.close()
	}
	return nil
}

// Lease reports whether this replica keeps the chat's lock as a lease now, and the
// lease's id: while one id is reported, no other replica has held the chat's lock (see
// Leases in the package comment). A use case's hold of a chat locked without a lease is
// no lease.
func (l *Locker) Lease(chatID uuid.UUID) (id uint64, ok bool) {
	if l.leases == nil {
		return 0, false
	}
	return l.leases.held(chatID)
}

// Key returns the advisory lock key of a chat: a 64-bit FNV-1a hash of a sandboxd prefix
// and the chat's 16 bytes. Two chats may share a key (one in 2^64 pairs); they then
// merely wait on each other.
func Key(chatID uuid.UUID) int64 {
	h := fnv.New64a()
	h.Write([]byte("sandboxd/chat/"))
	h.Write(chatID[:])
	return int64(h.Sum64())
}

// Lock blocks until this replica holds the chat's lock, for at most the configured wait
// and while ctx lasts. The returned function releases it; calling it again does nothing.
//
// Errors: ctx's own error when ctx ended; otherwise an error wrapping
// sandbox.ErrUnavailable (no connection, the wait ran out, the server failed). On any
// error the connection is closed, never returned to the pool, so that no lock or waiter
// can outlive the call on a pooled session.
func (l *Locker) Lock(ctx context.Context, chatID uuid.UUID) (func(), error) {
	wctx, cancel := context.WithTimeout(ctx, l.wait)
	defer cancel()
	unlockLocal, err := l.local.Lock(wctx, chatID)
	if err != nil {
		return nil, l.fail(ctx, chatID, "wait for this replica's holder", err)
	}
	if l.leases != nil {
		if release, ok := l.leases.acquire(wctx, chatID); ok {
			var once sync.Once
			return func() { once.Do(func() { release(); unlockLocal() }) }, nil
		}
	}
	conn, err := l.pool.Acquire(wctx)
	if err != nil {
		unlockLocal()
		return nil, l.fail(ctx, chatID, "acquire a connection", err)
	}
	key := Key(chatID)
	if l.leases != nil {
		// Ask the replica that may keep the chat as a lease to let it go. A notification
		// is sent at the end of its statement: it must not share the lock's.
		_, err = conn.Exec(wctx, "SELECT pg_notify($1, $2)", RecallChannel, l.leases.recallPayload(key))
	}
	if err == nil {
		_, err = conn.Exec(wctx, "SELECT pg_advisory_lock($1)", key)
	}
	if err != nil {
		// Drop the session, never pool it: it may hold the lock (granted as ctx ended) or
		// still wait for it. When ctx ends mid-wait, pgx itself sends the server a cancel
		// request, which takes the wait out of the lock queue, before closing the socket.
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		_ = conn.Hijack().Close(cctx)
		ccancel()
		unlockLocal()
		return nil, l.fail(ctx, chatID, "wait for the lock", err)
	}

	var once sync.Once
	return func() {
		once.Do(func() {
			defer unlockLocal() // after the server's lock is released or its session closed
			rctx, rcancel := context.WithTimeout(context.Background(), releaseTimeout)
			defer rcancel()
			var released bool
			err := conn.QueryRow(rctx, "SELECT pg_advisory_unlock($1)", key).Scan(&released)
			if err != nil || !released {
				// The session is broken or did not hold the lock (it was lost with the
				// session): close it rather than return a doubtful session to the pool.
				_ = conn.Hijack().Close(rctx)
				return
			}
			conn.Release()
		})
	}, nil
}

// fail wraps err: ctx's own end keeps its identity, everything else is unavailable.
func (l *Locker) fail(ctx context.Context, chatID uuid.UUID, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("pglock: lock chat %s: %s: %w", chatID, op, context.Cause(ctx))
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("pglock: lock chat %s: %s: no lock within %s: %w", chatID, op, l.wait, sandbox.ErrUnavailable)
	}
	return fmt.Errorf("pglock: lock chat %s: %s: %w: %w", chatID, op, sandbox.ErrUnavailable, err)
}
