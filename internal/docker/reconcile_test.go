package docker_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/memstore"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

type clockFunc func() time.Time

func (f clockFunc) Now() time.Time { return f() }

// service wires the lifecycle to the real runtime, a memory registry and a clock that
// runs ahead by skew, so that containers made now are already older than the grace.
func (e env) service(t *testing.T, store *memstore.Store, skew, grace time.Duration) *lifecycle.Service {
	t.Helper()
	svc, err := lifecycle.New(lifecycle.Config{
		Store:          store,
		Locker:         keylock.New(),
		Runtime:        e.rt,
		Admitter:       e.rt,
		Inventory:      e.rt,
		TTL:            time.Hour,
		ReconcileGrace: grace,
		Clock:          clockFunc(func() time.Time { return time.Now().Add(skew) }),
	})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func TestReconcileRepairsACrashBetweenCreateAndSave(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	store := memstore.New()
	svc := e.service(t, store, time.Minute, 10*time.Second)

	// A tracked sandbox, made the normal way: it must survive.
	tracked, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	// The crash: the container exists, the registry never heard of it.
	orphan := e.create(t, newSpec(""))
	// A record whose container was removed out of band.
	dead := e.create(t, newSpec(""))
	if err := store.Save(ctx, dead); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.ContainerRemove(ctx, dead.ContainerID, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	// Not ours: same image, similar name, no labels.
	stranger := lookAlike(t, e, orphan.ChatID)

	rep, err := svc.Reconcile(ctx)
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	want := lifecycle.ReconcileReport{Containers: 2, Records: 2, OrphansRemoved: 1, RecordsRepaired: 1}
	if rep != want {
		t.Errorf("report = %+v, want %+v", rep, want)
	}
	e.assertGone(t, orphan.ContainerID)
	if _, err := store.Get(ctx, dead.ChatID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("dead record: Get = %v, want ErrNotFound", err)
	}
	if !e.inspect(t, tracked.ContainerID).State.Running {
		t.Error("the tracked sandbox was stopped")
	}
	if got, err := store.Get(ctx, tracked.ChatID); err != nil || got.ContainerID != tracked.ContainerID {
		t.Errorf("tracked record = %+v, %v", got, err)
	}
	if !e.inspect(t, stranger).State.Running {
		t.Error("the unlabelled look-alike was stopped")
	}

	// Once repaired, the chat of the dead record gets a fresh sandbox.
	again, outcome, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: dead.ChatID})
	if err != nil || outcome != lifecycle.Created || again.ContainerID == dead.ContainerID {
		t.Errorf("create after repair = %+v, %v, %v", again, outcome, err)
	}

	// A second pass finds nothing to do.
	rep, err = svc.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (lifecycle.ReconcileReport{Containers: 2, Records: 2}); rep != want {
		t.Errorf("second report = %+v, want %+v", rep, want)
	}
}

func TestReconcileSparesAYoungOrphan(t *testing.T) {
	e := newEnv(t, nil)
	svc := e.service(t, memstore.New(), 0, time.Hour)
	young := e.create(t, newSpec("")) // a create that may still be on its way to the registry

	rep, err := svc.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.OrphansRemoved != 0 || !e.inspect(t, young.ContainerID).State.Running {
		t.Errorf("young orphan removed: %+v", rep)
	}
}

func TestReconcileRepairsAStoppedContainer(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	store := memstore.New()
	svc := e.service(t, store, time.Minute, 10*time.Second)
	s, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	// The sandbox died (say, the engine restarted): the record points at a dead container.
	if _, err := e.cli.ContainerStop(ctx, s.ContainerID, client.ContainerStopOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, err := svc.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.RecordsRepaired != 1 || rep.Errors != 0 {
		t.Errorf("report = %+v, want one record repaired", rep)
	}
	e.assertGone(t, s.ContainerID)
	e.assertNoContainers(t)
	if _, err := store.Get(ctx, s.ChatID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("record: %v, want ErrNotFound", err)
	}
}

func TestReconcileDeletesNothingWhenTheEngineIsDown(t *testing.T) {
	ctx := context.Background()
	rt, err := docker.New(docker.Config{
		Host:       "unix://" + filepath.Join(t.TempDir(), "no-docker.sock"),
		Instance:   "test-down",
		VolumeRoot: t.TempDir(),
		Profiles:   testProfiles(t, profile.Agents{}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	if err := rt.Ping(ctx); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Errorf("Ping = %v, want ErrUnavailable", err)
	}
	store := memstore.New()
	record := sandbox.Session{ID: uuid.New(), ChatID: uuid.New(), ContainerID: "gone", Status: sandbox.StatusRunning}
	if err := store.Save(ctx, record); err != nil {
		t.Fatal(err)
	}
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Locker: keylock.New(), Runtime: rt, Inventory: rt, TTL: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Reconcile(ctx); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Errorf("Reconcile = %v, want ErrUnavailable", err)
	}
	if _, err := store.Get(ctx, record.ChatID); err != nil {
		t.Errorf("record lost while the engine was down: %v", err)
	}
	if err := rt.Delete(ctx, "abc"); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Errorf("Delete = %v, want ErrUnavailable", err)
	}
}
