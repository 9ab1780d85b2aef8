package pglock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/pglock"
	"github.com/sandboxd/sandboxd/internal/pgstore"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/pgtest"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

// heldBy returns the pids of the sessions that hold the chat's advisory lock (granted).
func heldBy(t *testing.T, admin *pgxpool.Pool, chat uuid.UUID) []int32 {
	t.Helper()
	key := uint64(pglock.Key(chat))
	rows, err := admin.Query(context.Background(), `SELECT pid FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1
		  AND classid = $1 AND objid = $2
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		int64(key>>32), int64(key&0xffffffff))
	if err != nil {
		t.Fatalf("read pg_locks: %v", err)
	}
	defer rows.Close()
	var pids []int32
	for rows.Next() {
		var pid int32
		if err := rows.Scan(&pid); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return pids
}

func lockUnlock(t *testing.T, l *pglock.Locker, chat uuid.UUID) {
	t.Helper()
	unlock, err := l.Lock(context.Background(), chat)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	unlock()
}

// After its use case, a chat's lock stays with the replica as a lease, which the next use
// case takes without a new lock; after the linger the lease ends and the server's lock is
// released.
func TestLeaseOutlivesTheUseCaseForTheLinger(t *testing.T) {
	dsn := pgtest.DSN(t)
	admin := pgtest.Pool(t, dsn)
	const linger = 500 * time.Millisecond
	l := newLeasingLocker(t, dsn, linger)
	chat := uuid.New()

	if _, ok := l.Lease(chat); ok {
		t.Fatal("Lease of a chat never locked")
	}
	lockUnlock(t, l, chat)
	first, ok := l.Lease(chat)
	if !ok {
		t.Fatal("no lease right after the use case")
	}
	if pids := heldBy(t, admin, chat); len(pids) != 1 {
		t.Fatalf("the chat's lock is held by %d sessions after its use case, want the lease's", len(pids))
	}
	lockUnlock(t, l, chat)
	if again, ok := l.Lease(chat); !ok || again != first {
		t.Fatalf("second use case: lease %d (%v), want the same lease %d", again, ok, first)
	}

	waitfor.True(t, 10*time.Second, "the lease ends after the linger", func() bool {
		_, ok := l.Lease(chat)
		return !ok && len(heldBy(t, admin, chat)) == 0
	})
	lockUnlock(t, l, chat)
	if next, ok := l.Lease(chat); !ok || next == first {
		t.Fatalf("after the linger: lease %d (%v), want a new lease", next, ok)
	}
}

// A replica that needs a chat another keeps as a lease gets it as soon as no use case of
// the holder holds it, long before the linger ends, and while the holder's use case runs
// it waits.
func TestAnotherReplicaRecallsALease(t *testing.T) {
	dsn := pgtest.DSN(t)
	holder := newLeasingLocker(t, dsn, time.Hour)
	other, err := pglock.New(pglock.Config{Pool: pgtest.Pool(t, dsn), Wait: 20 * time.Second, Linger: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	chat := uuid.New()

	// An idle lease is recalled: without the recall, the other replica would wait an hour.
	lockUnlock(t, holder, chat)
	unlock, err := other.Lock(context.Background(), chat)
	if err != nil {
		t.Fatalf("Lock of a chat another replica keeps as a lease: %v", err)
	}
	if _, ok := holder.Lease(chat); ok {
		t.Fatal("the recalled lease still vouches")
	}
	unlock()

	// A lease in use is released when its use case ends, not before.
	unlockHolder, err := holder.Lock(context.Background(), chat)
	if err != nil {
		t.Fatalf("the holder locks the chat again: %v", err)
	}
	got := make(chan error, 1)
	go func() {
		unlock, err := other.Lock(context.Background(), chat)
		if err == nil {
			unlock()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("the other replica got the chat while the holder's use case ran (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	unlockHolder()
	if err := <-got; err != nil {
		t.Fatalf("Lock after the holder's use case ended: %v", err)
	}
}

// When the lease session ends (here an operator terminates it), the replica stops vouching
// for its leases as the server reports the end, long before the 3-second trust runs out,
// and takes new leases on a new session.
func TestLeaseEndsWithItsSession(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	admin := pgtest.Pool(t, dsn)
	l := newLeasingLocker(t, dsn, time.Hour)
	chat := uuid.New()
	lockUnlock(t, l, chat)
	first, ok := l.Lease(chat)
	if !ok {
		t.Fatal("no lease after the use case")
	}
	pids := heldBy(t, admin, chat)
	if len(pids) != 1 {
		t.Fatalf("lock held by %v, want one session", pids)
	}
	var terminated bool
	if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pids[0]).Scan(&terminated); err != nil || !terminated {
		t.Fatalf("pg_terminate_backend: %v, %v", terminated, err)
	}
	waitfor.True(t, 2*time.Second, "the replica stops vouching for the lease of a terminated session", func() bool {
		_, ok := l.Lease(chat)
		return !ok
	})
	lockUnlock(t, l, chat)
	if next, ok := l.Lease(chat); !ok || next == first {
		t.Fatalf("after reconnecting: lease %d (%v), want a new lease", next, ok)
	}
}

// Closing the Locker ends its leases: the server holds none of its locks afterwards.
func TestCloseEndsTheLeases(t *testing.T) {
	dsn := pgtest.DSN(t)
	admin := pgtest.Pool(t, dsn)
	l, err := pglock.New(pglock.Config{Pool: pgtest.Pool(t, dsn), Linger: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	chat := uuid.New()
	lockUnlock(t, l, chat)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := l.Lease(chat); ok {
		t.Fatal("a closed Locker still vouches for a lease")
	}
	waitfor.True(t, 5*time.Second, "the server releases a closed Locker's leases", func() bool {
		return len(heldBy(t, admin, chat)) == 0
	})
	lockUnlock(t, l, chat) // still a Locker, without leases
	if len(heldBy(t, admin, chat)) != 0 {
		t.Fatal("a closed Locker kept a lock after its use case")
	}
}

// The store caches a chat's session while its replica keeps the chat's lease, and only
// then: when another replica takes the chat and changes its row, the first reads the
// change, never its memory.
func TestStoreCachesUnderTheLeaseOnly(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	admin := pgtest.Pool(t, dsn)
	newReplica := func() (*pglock.Locker, *pgstore.Store) {
		st, err := pgstore.New(ctx, pgtest.Pool(t, dsn))
		if err != nil {
			t.Fatal(err)
		}
		l := newLeasingLocker(t, dsn, time.Hour)
		st.CacheUnder(l)
		return l, st
	}
	lockA, storeA := newReplica()
	lockB, storeB := newReplica()
	chat := uuid.New()
	s := lifecycletest.NewSession(chat, lifecycletest.Base)

	unlock, err := lockA.Lock(ctx, chat)
	if err != nil {
		t.Fatal(err)
	}
	if err := storeA.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	unlock()
	// Behind the registry's back (no writer may do this): A answers from memory while it
	// keeps the lease. This shows the cache is in use; the rest shows it is safe.
	if _, err := admin.Exec(ctx, `UPDATE sandbox_sessions SET agent_id = 'behind-the-back' WHERE chat_id = $1`, chat); err != nil {
		t.Fatal(err)
	}
	got, err := storeA.Get(ctx, chat)
	if err != nil || got.AgentID != s.AgentID || !got.ExpiresAt.Equal(s.ExpiresAt) {
		t.Fatalf("Get under the lease = %+v, %v; want the saved session from memory", got, err)
	}

	// B takes the chat (recalling A's lease) and moves the expiry.
	unlock, err = lockB.Lock(ctx, chat)
	if err != nil {
		t.Fatal(err)
	}
	later := s.ExpiresAt.Add(time.Hour)
	if err := storeB.SetExpiry(ctx, s.ID, later); err != nil {
		t.Fatal(err)
	}
	got, err = storeA.Get(ctx, chat)
	if err != nil || !got.ExpiresAt.Equal(later) || got.AgentID != "behind-the-back" {
		t.Fatalf("A's Get while B holds the chat = %+v, %v; want the row as B left it", got, err)
	}
	unlock()

	// A takes the chat back as a lease (once its recall hold has passed) and reads B's
	// change, not its memory; then B removes the row under its own lock.
	waitfor.True(t, 10*time.Second, "A leases the chat again", func() bool {
		unlock, err := lockA.Lock(ctx, chat)
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		if _, ok := lockA.Lease(chat); !ok {
			return false
		}
		if got, err := storeA.Get(ctx, chat); err != nil || !got.ExpiresAt.Equal(later) {
			t.Fatalf("A's Get under a new lease = %+v, %v; want B's expiry", got, err)
		}
		return true
	})
	unlock, err = lockB.Lock(ctx, chat)
	if err != nil {
		t.Fatal(err)
	}
	if err := storeB.Remove(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	unlock()
	if _, err := storeA.Get(ctx, chat); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("A's Get after B removed the session: err = %v, want ErrNotFound", err)
	}
}
