package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/pgstore"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(pgtest.Main(m)) }

func newStore(t *testing.T, pool *pgxpool.Pool) *pgstore.Store {
	t.Helper()
	st, err := pgstore.New(context.Background(), pool)
	if err != nil {
		t.Fatalf("pgstore.New: %v", err)
	}
	return st
}

func TestStoreConformance(t *testing.T) {
	lifecycletest.TestStore(t, func(t *testing.T) lifecycle.Store {
		return newStore(t, pgtest.Pool(t, pgtest.DSN(t)))
	})
}

func TestBindingConformance(t *testing.T) {
	lifecycletest.TestBinding(t, func(t *testing.T) func(*testing.T) lifecycle.Binding {
		dsn := pgtest.DSN(t)
		return func(t *testing.T) lifecycle.Binding { return newStore(t, pgtest.Pool(t, dsn)) }
	})
}

// Two replicas that start at once against an empty database both come up: the migrations
// run once, under an advisory lock, and the second finds the schema in place.
func TestReplicasStartingAtOnceMigrateOnce(t *testing.T) {
	dsn := pgtest.DSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make(chan error, 3)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := pgstore.Open(ctx, dsn)
			if err == nil {
				err = st.Ping(ctx)
				_ = st.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Open: %v", err)
		}
	}
	files, err := filepath.Glob(filepath.Join("migrations", "*.sql"))
	if err != nil || len(files) == 0 {
		t.Fatalf("migration files: %v, %v", files, err)
	}
	var applied, distinct int
	if err := pgtest.Pool(t, dsn).QueryRow(ctx, `SELECT count(*), count(DISTINCT version_id) FROM goose_db_version WHERE version_id > 0`).Scan(&applied, &distinct); err != nil {
		t.Fatalf("read goose_db_version: %v", err)
	}
	if applied != len(files) || distinct != len(files) {
		t.Fatalf("%d migrations recorded (%d distinct), want each of the %d once", applied, distinct, len(files))
	}
}

// The database itself refuses a second session for a chat, whether the caller goes
// through a Store without taking any lock or writes the row by hand.
func TestDatabaseRefusesASecondSessionForAChat(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.DSN(t))
	st := newStore(t, pool)
	chat := uuid.New()
	first := lifecycletest.NewSession(chat, lifecycletest.Base)
	if err := st.Save(ctx, first); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if err := st.Save(ctx, lifecycletest.NewSession(chat, lifecycletest.Base.Add(time.Hour))); !errors.Is(err, sandbox.ErrConflict) {
		t.Fatalf("second Save without a lock: err = %v, want ErrConflict", err)
	}
	_, err := pool.Exec(ctx, `INSERT INTO sandbox_sessions
		(session_id, chat_id, container_id, status, created_at, expires_at)
		VALUES ($1, $2, 'intruder', 'RUNNING', now(), now())`, uuid.New(), chat)
	if err == nil {
		t.Fatal("raw INSERT of a second session for the chat succeeded")
	}
	got, err := st.Get(ctx, chat)
	if err != nil || !lifecycletest.Equal(got, first) {
		t.Fatalf("after refused inserts: Get = %+v, %v; want the first session", got, err)
	}
}

// A restarted replica (a new pool and Store on the same database) sees every session, and
// its first sweep cleans what expired while it was down.
func TestRestartSeesEverySessionAndSweepsWhatExpired(t *testing.T) {
	dsn := pgtest.DSN(t)
	lifecycletest.TestRestart(t, func(t *testing.T) (lifecycle.Store, func() error) {
		st, err := pgstore.Open(context.Background(), dsn)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return st, st.Close
	})
}

func TestPing(t *testing.T) {
	st := newStore(t, pgtest.Pool(t, pgtest.DSN(t)))
	if err := st.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func TestUnreachableDatabaseIsUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pgstore.Open(ctx, fmt.Sprintf("postgres://nobody@127.0.0.1:%d/none?sslmode=disable&connect_timeout=2", port))
	if !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("Open of an unreachable database: err = %v, want ErrUnavailable", err)
	}
	// A server that answers but refuses the connection (here: no such database; a wrong
	// password or a full server alike) is unavailable too, not an internal error.
	u, err := url.Parse(pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/no_such_database"
	if _, err := pgstore.Open(ctx, u.String()); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("Open of a database the server refuses: err = %v, want ErrUnavailable", err)
	}
	if _, err := pgstore.Open(ctx, "postgres://%zz"); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("Open of a malformed dsn: err = %v, want ErrInvalid", err)
	}
}
