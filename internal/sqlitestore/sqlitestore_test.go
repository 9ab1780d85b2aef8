package sqlitestore_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

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
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sandboxd.db")
	clock := &fakeClock{now: lifecycletest.Base}
	rt := &fakeRuntime{}

	before, err := sqlitestore.Open(ctx, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	svc := newService(t, before, rt, clock)
	made := map[uuid.UUID]sandbox.Session{}
	var early []uuid.UUID
	for i := range 5 {
		if i == 3 {
			clock.Set(lifecycletest.Base.Add(5 * time.Minute))
		}
		chat := uuid.New()
		s, outcome, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat, AgentID: "agent-alpha"})
		if err != nil || outcome != lifecycle.Created {
			t.Fatalf("Create: %v, %v", outcome, err)
		}
		made[chat] = s
		if i < 3 {
			early = append(early, chat)
		}
	}
	if err := before.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// The process restarts: new Store, new Service, the clock past the first three expiries.
	after := open(t, path)
	if n, err := after.Count(ctx); err != nil || n != 5 {
		t.Fatalf("after restart: Count = %d, %v; want 5", n, err)
	}
	for chat, want := range made {
		got, err := after.Get(ctx, chat)
		if err != nil || !lifecycletest.Equal(got, want) {
			t.Fatalf("after restart: Get(%s) = %+v, %v; want %+v", chat, got, err, want)
		}
	}
	clock.Set(lifecycletest.Base.Add(12 * time.Minute)) // TTL 10m: the first three expired
	cleaned, err := newService(t, after, rt, clock).CleanupExpired(ctx)
	if err != nil {
		t.Fatalf("CleanupExpired: %v", err)
	}
	if len(cleaned) != 3 {
		t.Fatalf("swept %d sessions, want 3", len(cleaned))
	}
	for _, chat := range early {
		if _, err := after.Get(ctx, chat); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("expired chat %s still registered: %v", chat, err)
		}
		if !rt.Stopped(made[chat].ContainerID) {
			t.Errorf("container of expired chat %s not stopped", chat)
		}
	}
	if n, err := after.Count(ctx); err != nil || n != 2 {
		t.Fatalf("after sweep: Count = %d, %v; want 2", n, err)
	}
}

func newService(t *testing.T, st lifecycle.Store, rt lifecycle.Runtime, clock lifecycle.Clock) *lifecycle.Service {
	t.Helper()
	svc, err := lifecycle.New(lifecycle.Config{
		Store: st, Locker: keylock.New(), Runtime: rt, TTL: 10 * time.Minute, Clock: clock,
	})
	if err != nil {
		t.Fatalf("lifecycle.New: %v", err)
	}
	return svc
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// fakeRuntime makes container-<session> for every create and remembers what it stopped.
type fakeRuntime struct {
	mu      sync.Mutex
	creates int
	stopped map[string]bool
}

func (r *fakeRuntime) Create(_ context.Context, spec lifecycle.CreateSpec) (sandbox.Session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.creates++
	return sandbox.Session{
		ID: spec.SessionID, ChatID: spec.ChatID, ContainerID: "container-" + spec.SessionID.String(),
		Status: sandbox.StatusRunning, CreatedAt: spec.CreatedAt, ExpiresAt: spec.ExpiresAt,
		AgentID: spec.AgentID, VolumeHostPath: spec.VolumeHostPath,
	}, nil
}

func (r *fakeRuntime) Stop(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped == nil {
		r.stopped = map[string]bool{}
	}
	r.stopped[id] = true
	return nil
}

func (r *fakeRuntime) Delete(ctx context.Context, id string) error { return r.Stop(ctx, id) }

func (r *fakeRuntime) Stopped(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped[id]
}
