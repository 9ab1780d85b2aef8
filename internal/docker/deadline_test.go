package docker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/sqlitestore"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
	"github.com/sandboxd/sandboxd/internal/testing/sockproxy"
)

// An engine that accepts and never answers (a proxy in front of the real one that hangs
// every new connection) holds no call past its deadline: a create fails as unavailable
// within the create timeout and leaves nothing behind (no container, no folder, no
// record), the sweep and the reconciliation return, and everything works again once the
// engine answers.
func TestAHungEngineCutsEveryCallAtItsDeadline(t *testing.T) {
	const call, create = time.Second, 5 * time.Second // a start on a loaded machine takes seconds
	proxy := sockproxy.Start(t, dockerHost(t))
	e := newEnv(t, func(c *docker.Config) {
		c.Host, c.CallTimeout, c.CreateTimeout = proxy.Host(), call, create
	})
	ctx := context.Background()
	store, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "sandboxd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Locker: keylock.New(), Runtime: e.rt, Admitter: e.rt, Inventory: e.rt,
		Workspaces: e.rt, TTL: time.Hour, Clock: &movableClock{now: time.Now()},
	})
	if err != nil {
		t.Fatal(err)
	}
	first, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	dockertest.RemoveAtCleanup(t, e.cli, first.ContainerID)

	proxy.SetMode(sockproxy.Hang)
	proxy.Cut() // the client's idle connections too: every call opens a hanging one
	within := func(what string, bound time.Duration, f func() error) error {
		t.Helper()
		start := time.Now()
		err := f()
		if took := time.Since(start); took > bound {
			t.Errorf("%s took %s on a hung engine, want at most %s", what, took, bound)
		}
		return err
	}
	chat := uuid.New()
	err = within("a create", create+call+2*time.Second, func() error {
		_, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat})
		return err
	})
	if !errors.Is(err, sandbox.ErrUnavailable) {
		t.Errorf("create on a hung engine: %v, want ErrUnavailable", err)
	}
	err = within("a listing", call+time.Second, func() error { _, err := e.rt.Managed(ctx); return err })
	if !errors.Is(err, sandbox.ErrUnavailable) {
		t.Errorf("Managed on a hung engine: %v, want ErrUnavailable", err)
	}
	err = within("a ping", call+time.Second, func() error { return e.rt.Ping(ctx) })
	if err == nil {
		t.Error("Ping on a hung engine succeeded")
	}
	err = within("a reconciliation", call+time.Second, func() error { _, err := svc.Reconcile(ctx); return err })
	if err == nil {
		t.Error("Reconcile on a hung engine succeeded")
	}
	err = within("a delete", create+call+time.Second, func() error { _, err := svc.Delete(ctx, first.ChatID); return err })
	if !errors.Is(err, sandbox.ErrUnavailable) {
		t.Errorf("delete on a hung engine: %v, want ErrUnavailable", err)
	}

	// Nothing of the failed create is left: no container (asked of the engine itself,
	// not through the proxy), no folder, no record; the first sandbox is untouched.
	if got := dockertest.Containers(t, e.cli, dockertest.LabelInstance+"="+e.inst); len(got) != 1 || got[0] != first.ContainerID {
		t.Errorf("containers of the instance: %v, want only %s", got, first.ContainerID)
	}
	if _, err := os.Stat(e.rt.Derive("", chat)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed create's folder: %v, want none", err)
	}
	if _, err := store.Get(ctx, chat); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("the failed create's record: %v, want none", err)
	}
	if got, err := store.Get(ctx, first.ChatID); err != nil || got.ID != first.ID {
		t.Errorf("the first sandbox's record: %+v, %v", got, err)
	}

	proxy.SetMode(sockproxy.Pass)
	var s sandbox.Session
	for try := 0; ; try++ { // a start slower than its deadline on a loaded machine is retried
		if s, _, err = svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat}); err == nil || try == 3 {
			break
		}
	}
	if err != nil {
		t.Fatalf("create once the engine answers: %v", err)
	}
	dockertest.RemoveAtCleanup(t, e.cli, s.ContainerID)
}
