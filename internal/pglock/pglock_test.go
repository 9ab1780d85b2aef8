package pglock_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/pglock"
	"github.com/sandboxd/sandboxd/internal/pgstore"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(pgtest.Main(m)) }

// newLocker returns a Locker on a pool of its own: a replica of its own.
func newLocker(t *testing.T, dsn string) *pglock.Locker {
	t.Helper()
	l, err := pglock.New(pglock.Config{Pool: pgtest.Pool(t, dsn), Wait: 30 * time.Second})
	if err != nil {
		t.Fatalf("pglock.New: %v", err)
	}
	return l
}

// newLeasingLocker returns a replica's Locker that keeps locks as leases for linger (0:
// none), closed at the end of the test.
func newLeasingLocker(t *testing.T, dsn string, linger time.Duration) *pglock.Locker {
	t.Helper()
	l, err := pglock.New(pglock.Config{Pool: pgtest.Pool(t, dsn), Wait: 30 * time.Second, Linger: linger})
	if err != nil {
		t.Fatalf("pglock.New: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestLockerConformance(t *testing.T) {
	dsn := pgtest.DSN(t)
	t.Run("locks", func(t *testing.T) {
		lifecycletest.TestLocker(t, func(t *testing.T) lifecycle.Locker { return newLocker(t, dsn) })
	})
	t.Run("leases", func(t *testing.T) {
		lifecycletest.TestLocker(t, func(t *testing.T) lifecycle.Locker { return newLeasingLocker(t, dsn, time.Minute) })
	})
}

// Creates reuse a hot chat without its lock while this replica keeps the chat's lease, and
// never answer stale, also when another replica deletes the chat (the lease is recalled).
// The linger is sandboxd's default, so leases lapse and are taken again during the test.
func TestHotReuseConformance(t *testing.T) {
	lifecycletest.TestHotReuse(t, func(t *testing.T) func(*testing.T) lifecycletest.Replica {
		dsn := pgtest.DSN(t)
		return func(t *testing.T) lifecycletest.Replica {
			st, err := pgstore.New(context.Background(), pgtest.Pool(t, dsn))
			if err != nil {
				t.Fatalf("pgstore.New: %v", err)
			}
			l := newLeasingLocker(t, dsn, 2*time.Second)
			st.CacheUnder(l)
			return lifecycletest.Replica{Store: st, Locker: l}
		}
	}, true)
}

func TestNewRefusesAMissingPool(t *testing.T) {
	if _, err := pglock.New(pglock.Config{}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("New without a pool: err = %v, want ErrInvalid", err)
	}
}

// The configured wait bounds a Lock even when the caller's context does not.
func TestWaitIsBounded(t *testing.T) {
	dsn := pgtest.DSN(t)
	holder := newLocker(t, dsn)
	waiter, err := pglock.New(pglock.Config{Pool: pgtest.Pool(t, dsn), Wait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	chat := uuid.New()
	unlock, err := holder.Lock(context.Background(), chat)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	defer unlock()
	start := time.Now()
	if _, err := waiter.Lock(context.Background(), chat); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("Lock of a held chat: err = %v, want ErrUnavailable after the wait", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Lock gave up after %s, wait is 200ms", d)
	}
	// The waiter left the server's lock queue too (its wait was cancelled, its session
	// closed): it cannot be granted the lock later, after its caller has gone.
	admin := pgtest.Pool(t, dsn)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var waiting int
		err := admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks
			WHERE locktype = 'advisory' AND NOT granted
			  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting)
		if err != nil {
			t.Fatalf("read pg_locks: %v", err)
		}
		if waiting == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d advisory lock waiters left in the server after Lock gave up", waiting)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A holder whose connection dies (here its backend is terminated from another connection)
// loses the lock: the next caller proceeds. The old holder's unlock is then harmless, and
// its pool, which never got the dead connection back, still serves.
func TestHolderWhoseConnectionDiesReleasesTheLock(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	admin := pgtest.Pool(t, dsn)
	first, second := newLocker(t, dsn), newLocker(t, dsn)
	chat := uuid.New()

	unlockFirst, err := first.Lock(ctx, chat)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	// The backend that holds the chat's advisory lock: bigint keys show as classid
	// (high 32 bits) and objid (low 32 bits), objsubid 1.
	key := uint64(pglock.Key(chat))
	var pid int32
	err = admin.QueryRow(ctx, `SELECT pid FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1
		  AND classid = $1 AND objid = $2
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		int64(key>>32), int64(key&0xffffffff)).Scan(&pid)
	if err != nil {
		t.Fatalf("find the holder's backend: %v", err)
	}

	// While the first holds the lock, the second waits.
	waitCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = second.Lock(waitCtx, chat)
	cancel()
	if err == nil {
		t.Fatal("second Lock succeeded while the first held the chat")
	}

	var terminated bool
	if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&terminated); err != nil || !terminated {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, terminated, err)
	}

	lockCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	unlockSecond, err := second.Lock(lockCtx, chat)
	if err != nil {
		t.Fatalf("Lock after the holder's connection died: %v", err)
	}
	unlockFirst() // the dead holder finds out; its unlock must not disturb the new holder
	waitCtx, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = first.Lock(waitCtx, chat)
	cancel()
	if err == nil {
		t.Fatal("the old holder's unlock released the new holder's lock")
	}
	unlockSecond()

	again, err := first.Lock(lockCtx, chat)
	if err != nil {
		t.Fatalf("Lock on the old holder's pool after the chat was freed: %v", err)
	}
	again()
}

// Two replicas, each with its own pools, store and locker, hammer the same chats against one
// database: each chat gets exactly one session and one runtime create, and every caller
// gets that session.
//
// With leases, each replica keeps the chats' locks after use and caches their sessions;
// the other's callers recall them. The outcome must be the same.
func TestTwoReplicasHammerTheSameChats(t *testing.T) {
	t.Run("locks", func(t *testing.T) { hammerTheSameChats(t, 0) })
	t.Run("leases", func(t *testing.T) { hammerTheSameChats(t, time.Minute) })
}

func hammerTheSameChats(t *testing.T, linger time.Duration) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	rt := &lifecycletest.Runtime{BeforeCreate: func(context.Context, lifecycle.CreateSpec) error {
		time.Sleep(2 * time.Millisecond) // a create takes a while: widen the window for a race
		return nil
	}}
	createsOf := func(chat uuid.UUID) int {
		creates, _, _ := rt.Calls()
		n := 0
		for _, c := range creates {
			if c.ChatID == chat {
				n++
			}
		}
		return n
	}
	var replicas []*lifecycle.Service
	var stores []*pgstore.Store
	for range 2 {
		st, err := pgstore.New(ctx, pgtest.Pool(t, dsn))
		if err != nil {
			t.Fatalf("pgstore.New: %v", err)
		}
		locker := newLeasingLocker(t, dsn, linger)
		if linger > 0 {
			st.CacheUnder(locker)
		}
		svc, err := lifecycle.New(lifecycle.Config{
			Store: st, Locker: locker, Runtime: rt, TTL: time.Hour,
		})
		if err != nil {
			t.Fatalf("lifecycle.New: %v", err)
		}
		replicas = append(replicas, svc)
		stores = append(stores, st)
	}

	chats := make([]uuid.UUID, 8)
	for i := range chats {
		chats[i] = uuid.New()
	}
	const callersPerChatPerReplica = 10
	type answer struct {
		chat    uuid.UUID
		session uuid.UUID
		outcome lifecycle.Outcome
	}
	answers := make(chan answer, len(chats)*len(replicas)*callersPerChatPerReplica)
	hammerCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var failures atomic.Int32
	for _, svc := range replicas {
		for _, chat := range chats {
			for range callersPerChatPerReplica {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s, outcome, err := svc.Create(hammerCtx, lifecycle.CreateRequest{ChatID: chat, AgentID: "agent-alpha"})
					if err != nil {
						failures.Add(1)
						t.Errorf("Create(%s): %v", chat, err)
						return
					}
					answers <- answer{chat, s.ID, outcome}
				}()
			}
		}
	}
	wg.Wait()
	close(answers)
	if failures.Load() > 0 {
		t.FailNow()
	}

	sessionOf := map[uuid.UUID]uuid.UUID{}
	created := map[uuid.UUID]int{}
	for a := range answers {
		if prev, ok := sessionOf[a.chat]; ok && prev != a.session {
			t.Errorf("chat %s: callers got sessions %s and %s", a.chat, prev, a.session)
		}
		sessionOf[a.chat] = a.session
		if a.outcome == lifecycle.Created {
			created[a.chat]++
		}
	}
	for _, chat := range chats {
		if n := createsOf(chat); n != 1 {
			t.Errorf("chat %s: %d runtime creates, want 1", chat, n)
		}
		if created[chat] != 1 {
			t.Errorf("chat %s: %d callers saw %q, want 1", chat, created[chat], lifecycle.Created)
		}
		for i, st := range stores {
			got, err := st.Get(ctx, chat)
			if err != nil || got.ID != sessionOf[chat] {
				t.Errorf("replica %d: Get(%s) = %s, %v; want session %s", i, chat, got.ID, err, sessionOf[chat])
			}
		}
	}
	if n, err := stores[0].Count(ctx); err != nil || n != len(chats) {
		t.Errorf("Count = %d, %v; want %d", n, err, len(chats))
	}
}
