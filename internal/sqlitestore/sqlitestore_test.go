package sqlitestore_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/sqlitestore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, path string) *sqlitestore.Store {
	t.Helper()
	st, err := sqlitestore.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return st
}

func TestStoreConformance(t *testing.T) {
	lifecycletest.TestStore(t, func(t *testing.T) lifecycle.Store {
		return open(t, filepath.Join(t.TempDir(), "sandboxd.db"))
	})
}

func TestBindingConformance(t *testing.T) {
	lifecycletest.TestBinding(t, func(t *testing.T) func(*testing.T) lifecycle.Binding {
		path := filepath.Join(t.TempDir(), "sandboxd.db")
		return func(t *testing.T) lifecycle.Binding { return open(t, path) }
	})
}

// Creates reuse a hot chat without its lock, and never answer stale (on a real file).
func TestHotReuseConformance(t *testing.T) {
	lifecycletest.TestHotReuse(t, func(t *testing.T) func(*testing.T) lifecycletest.Replica {
		path := filepath.Join(t.TempDir(), "sandboxd.db")
		return func(t *testing.T) lifecycletest.Replica {
			return lifecycletest.Replica{Store: open(t, path), Locker: keylock.New()}
		}
	}, false)
}

func TestOpenRefusesABadPath(t *testing.T) {
	ctx := context.Background()
	if _, err := sqlitestore.Open(ctx, ""); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("Open(\"\"): err = %v, want ErrInvalid", err)
	}
	if _, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "missing-dir", "x.db")); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("Open in a missing folder: err = %v, want ErrUnavailable", err)
	}
}

func TestPing(t *testing.T) {
	st := open(t, filepath.Join(t.TempDir(), "sandboxd.db"))
	if err := st.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// The file itself refuses a second session for a chat: through the Store without any lock,
// and through a raw INSERT by another connection that knows nothing of the Store.
func TestDatabaseRefusesASecondSessionForAChat(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sandboxd.db")
	st := open(t, path)
	chat := uuid.New()
	first := lifecycletest.NewSession(chat, lifecycletest.Base)
	if err := st.Save(ctx, first); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if err := st.Save(ctx, lifecycletest.NewSession(chat, lifecycletest.Base)); !errors.Is(err, sandbox.ErrConflict) {
		t.Fatalf("second Save: err = %v, want ErrConflict", err)
	}

	raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatalf("open raw: %v", err)
	}
	defer raw.Close()
	_, err = raw.ExecContext(ctx, `INSERT INTO sandbox_sessions
		(session_id, chat_id, container_id, status, created_at, expires_at)
		VALUES (?, ?, 'intruder', 'RUNNING', 0, 0)`, uuid.NewString(), chat.String())
	if err == nil {
		t.Fatal("raw INSERT of a second session for the chat succeeded")
	}
	got, err := st.Get(ctx, chat)
	if err != nil || !lifecycletest.Equal(got, first) {
		t.Fatalf("after refused inserts: Get = %+v, %v; want the first session", got, err)
	}
}

// A restarted process (a new Store on the same file) sees every session, and its first
// sweep cleans what expired while it was down.
func TestRestartSeesEverySessionAndSweepsWhatExpired(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sandboxd.db")
	lifecycletest.TestRestart(t, func(t *testing.T) (lifecycle.Store, func() error) {
		st, err := sqlitestore.Open(context.Background(), path)
		if err != nil {
			t.Fatalf("Open(%s): %v", path, err)
		}
		return st, st.Close
	})
}
