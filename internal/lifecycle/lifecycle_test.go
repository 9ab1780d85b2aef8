package lifecycle_test

// Behaviour beyond the seed: concurrency at scale, admission before the lock,
// reconciliation, and the core's freedom from infrastructure.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/memstore"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestManyConcurrentCreatesForOneChatMakeOneContainer(t *testing.T) {
	store := memstore.New()
	e := newEnv(t, store, keylock.New(), &lifecycletest.Runtime{}, nil)
	const n = 50
	results := make([]sandbox.Session, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _, errs[i] = e.svc.Create(context.Background(), createRequest())
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		if results[i] != results[0] {
			t.Fatalf("create %d got session %s, create 0 got %s", i, results[i].ID, results[0].ID)
		}
	}
	creates, _, _ := e.runtime.Calls()
	assertEqual(t, "runtime creates", len(creates), 1)
	assertCounted(t, e.tel, "sandbox.create.total", map[string]any{"result": "created"})
	if got := e.tel.counter(t, "sandbox.create.total", map[string]any{"result": "reused"}); got != n-1 {
		t.Fatalf("reused = %d, want %d", got, n-1)
	}
}

func TestCreatesForDifferentChatsDoNotWaitOnEachOther(t *testing.T) {
	started, released := make(chan struct{}), make(chan struct{})
	runtime := &lifecycletest.Runtime{BeforeCreate: func(_ context.Context, spec lifecycle.CreateSpec) error {
		if spec.ChatID == chatID { // chat 1's create waits until released
			close(started)
			<-released
		}
		return nil
	}}
	svc, err := lifecycle.New(lifecycle.Config{
		Store: memstore.New(), Locker: keylock.New(), Runtime: runtime, TTL: ttl, Clock: lifecycletest.NewClock(now),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := svc.Create(context.Background(), createRequest())
		done <- err
	}()
	<-started // chat 1 now holds its lock inside the runtime

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 10 {
		req := createRequest()
		req.ChatID = uuid.New()
		if _, _, err := svc.Create(ctx, req); err != nil {
			t.Fatalf("create %d for another chat while chat 1 is busy: %v", i, err)
		}
	}
	close(released)
	if err := <-done; err != nil {
		t.Fatalf("blocked create: %v", err)
	}
}

type refusingAdmitter struct{ calls int }

func (a *refusingAdmitter) Admit(_ context.Context, _ string, _ uuid.UUID, _, path string) (string, error) {
	a.calls++
	if strings.Contains(path, "..") {
		return "", fmt.Errorf("workspace %q leaves the volume root: %w", path, sandbox.ErrInvalid)
	}
	if path == "" {
		return "/srv/derived", nil
	}
	return path, nil
}

func (a *refusingAdmitter) Resolve(_ string, _ uuid.UUID, _, path string) (string, bool) {
	if path == "" {
		return "/srv/derived", true
	}
	return path, !strings.Contains(path, "..")
}

// snapshotStore is a memstore that offers its sessions as exact copies (Snapshots), as
// sqlitestore does, so that a create may reuse without the lock.
type snapshotStore struct{ *memstore.Store }

func (s snapshotStore) Cached(chat uuid.UUID) (sandbox.Session, bool) {
	got, err := s.Get(context.Background(), chat)
	return got, err == nil
}

// fullAdmitter refuses every request, as the Docker runtime's Admit does on a volume root
// below its free-space floor; Resolve knows the derived folder, or says it cannot tell.
type fullAdmitter struct {
	resolves bool
	admits   atomic.Int64
}

func (a *fullAdmitter) Admit(context.Context, string, uuid.UUID, string, string) (string, error) {
	a.admits.Add(1)
	return "", fmt.Errorf("the volume root is full: %w", sandbox.ErrFull)
}

func (a *fullAdmitter) Resolve(_ string, _ uuid.UUID, _, path string) (string, bool) {
	if path == "" {
		return "/srv/derived", a.resolves
	}
	return path, a.resolves
}

// A create that finds the chat's live session for the same request answers it without
// Admit (a reuse mounts and writes nothing), so a full volume root refuses new sandboxes
// but not the reuse of one; a request Resolve cannot place, or that names another folder,
// goes through Admit and is refused.
func TestReuseOfTheLiveSessionNeedsNoAdmission(t *testing.T) {
	live := liveSession()
	live.VolumeHostPath = "/srv/derived"
	store := snapshotStore{storeWith(t, live)}
	locker := &fakeLocker{}
	runtime := &lifecycletest.Runtime{}
	admitter := &fullAdmitter{resolves: true}
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Locker: locker, Runtime: runtime, TTL: ttl, Clock: lifecycletest.NewClock(now), Admitter: admitter,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := createRequest()
	req.VolumeHostPath = ""
	got, outcome, err := svc.Create(ctx, req)
	if err != nil || outcome != lifecycle.Reused {
		t.Fatalf("Create on the live session = %s, %v; want reused", outcome, err)
	}
	assertEqual(t, "session", got, live)
	assertEqual(t, "admissions", admitter.admits.Load(), int64(0))
	assertEqual(t, "locks taken", len(locker.locked()), 0)

	for _, tc := range []struct {
		name     string
		chat     uuid.UUID
		folder   string
		resolves bool
	}{
		{"a new chat", uuid.New(), "", true},
		{"another folder", chatID, "/srv/other", true},
		{"a request Resolve cannot place", chatID, "", false},
	} {
		admitter.resolves = tc.resolves
		before := admitter.admits.Load()
		req := createRequest()
		req.ChatID, req.VolumeHostPath = tc.chat, tc.folder
		if _, _, err := svc.Create(ctx, req); !errors.Is(err, sandbox.ErrFull) {
			t.Errorf("%s: Create = %v, want ErrFull", tc.name, err)
		}
		assertEqual(t, tc.name+": admissions", admitter.admits.Load()-before, int64(1))
	}
	creates, stops, deletes := runtime.Calls()
	assertEqual(t, "runtime calls", len(creates)+len(stops)+len(deletes), 0)
	assertEqual(t, "registry", mustGet(t, store, chatID), live)
}

func TestRefusedCreateChangesNothingEvenWhenTheSessionExpired(t *testing.T) {
	old := expiredSession()
	old.AgentID, old.VolumeHostPath = agentID, volumeHostPath
	store := storeWith(t, old)
	locker := &fakeLocker{}
	admitter := &refusingAdmitter{}
	runtime := &lifecycletest.Runtime{}
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Locker: locker, Runtime: runtime, TTL: ttl, Clock: lifecycletest.NewClock(now), Admitter: admitter,
	})
	if err != nil {
		t.Fatal(err)
	}
	req := createRequest()
	req.VolumeHostPath = "/srv/sandbox/../../etc"
	if _, _, err := svc.Create(context.Background(), req); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("Create with traversal: err = %v, want ErrInvalid", err)
	}
	creates, stops, deletes := runtime.Calls()
	assertEqual(t, "runtime calls", len(creates)+len(stops)+len(deletes), 0)
	assertEqual(t, "locks taken", len(locker.locked()), 0)
	assertEqual(t, "registry", mustGet(t, store, chatID), old)

	// An admitted request uses the path the admitter settled on.
	req.ChatID, req.VolumeHostPath = uuid.New(), ""
	got, _, err := svc.Create(context.Background(), req)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	assertEqual(t, "derived volume", got.VolumeHostPath, "/srv/derived")
}

func TestCreateRefusesTheNilChat(t *testing.T) {
	e := newEnv(t, memstore.New(), &fakeLocker{}, &lifecycletest.Runtime{}, nil)
	req := createRequest()
	req.ChatID = uuid.Nil
	if _, _, err := e.svc.Create(context.Background(), req); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
}

func TestNewRequiresItsDependencies(t *testing.T) {
	_, err := lifecycle.New(lifecycle.Config{})
	if err == nil {
		t.Fatal("New with nothing succeeded")
	}
	for _, want := range []string{"Store", "Locker", "Runtime", "TTL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestSweepWithParallelismCleansEverySessionOnce(t *testing.T) {
	var sessions []sandbox.Session
	for i := range 40 {
		s := expiredSession()
		s.ID, s.ChatID = uuid.New(), uuid.New()
		s.ContainerID = fmt.Sprintf("container-%d", i)
		s.ExpiresAt = now.Add(-time.Duration(40-i) * time.Second)
		sessions = append(sessions, s)
	}
	store := storeWith(t, sessions...)
	runtime := &lifecycletest.Runtime{}
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Locker: keylock.New(), Runtime: runtime, TTL: ttl, Clock: lifecycletest.NewClock(now),
		SweepParallelism: 8,
	})
	if err != nil {
		t.Fatal(err)
	}
	cleaned, err := svc.CleanupExpired(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "cleaned in snapshot order", cleaned, sessions)
	_, stops, _ := runtime.Calls()
	assertEqual(t, "stops", len(stops), 40)
	if n, _ := store.Count(context.Background()); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}

// fakeInventory is a runtime's view of its labelled containers.
type fakeInventory struct {
	containers []lifecycle.Container
	err        error
	identity   string // default "engine-a"
}

func (f *fakeInventory) Managed(context.Context) ([]lifecycle.Container, error) {
	return f.containers, f.err
}

func (f *fakeInventory) Identity(context.Context) (string, error) {
	if f.identity == "" {
		return "engine-a", nil
	}
	return f.identity, nil
}

// A registry tied to another runtime is never reconciled against this one: nothing is
// deleted, not the records the runtime cannot find nor the containers the registry does
// not name; creates are refused as unavailable. Adopting takes the registry over.
func TestRegistryOfAnotherRuntimeIsLeftAlone(t *testing.T) {
	ctx := context.Background()
	tracked := liveSession() // its container lives on engine-a, not on engine-b
	store := storeWith(t, tracked)
	if _, err := store.Bind(ctx, "engine-a", false); err != nil {
		t.Fatal(err)
	}
	own, _, _ := store.Registry(ctx)
	inv := &fakeInventory{identity: "engine-b", containers: []lifecycle.Container{
		{ID: "engine-b-container", ChatID: uuid.New(), SessionID: uuid.New(), CreatedAt: now.Add(-time.Hour), Running: true, Registry: own},
	}}
	runtime := &lifecycletest.Runtime{}
	newSvc := func(adopt bool) *lifecycle.Service {
		svc, err := lifecycle.New(lifecycle.Config{
			Store: store, Locker: keylock.New(), Runtime: runtime, TTL: ttl, Clock: lifecycletest.NewClock(now),
			Inventory: inv, Binding: store, Adopt: adopt,
		})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	svc := newSvc(false)
	if err := svc.CheckBinding(ctx); !errors.Is(err, sandbox.ErrConflict) || !strings.Contains(err.Error(), `"engine-a"`) {
		t.Fatalf("CheckBinding = %v, want ErrConflict naming the registry's runtime", err)
	}
	if err := svc.CheckRegistry(ctx); !errors.Is(err, sandbox.ErrConflict) || !strings.Contains(err.Error(), "adopt") {
		t.Fatalf("CheckRegistry = %v, want ErrConflict naming the way out", err)
	}
	if _, err := svc.Reconcile(ctx); !errors.Is(err, sandbox.ErrConflict) {
		t.Fatalf("Reconcile = %v, want ErrConflict", err)
	}
	_, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: uuid.New()})
	if !errors.Is(err, sandbox.ErrUnavailable) || errors.Is(err, sandbox.ErrConflict) {
		t.Fatalf("Create = %v, want ErrUnavailable (the service, not the request, is wrong)", err)
	}
	creates, stops, deletes := runtime.Calls()
	if len(creates)+len(stops)+len(deletes) != 0 {
		t.Fatalf("runtime calls %d creates, %d stops, %d deletes; want none", len(creates), len(stops), len(deletes))
	}
	if got, err := store.Get(ctx, tracked.ChatID); err != nil || got.ID != tracked.ID {
		t.Fatalf("the record of engine-a's sandbox: %+v, %v", got, err)
	}

	// The operator moved engines for good: adopt, and the reconciler repairs.
	rep, err := newSvc(true).Reconcile(ctx)
	if err != nil {
		t.Fatalf("Reconcile with adopt: %v", err)
	}
	assertEqual(t, "report after adopt", rep, lifecycle.ReconcileReport{Containers: 1, Records: 1, OrphansRemoved: 1, RecordsRepaired: 1})
	if _, err := newSvc(false).Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile after the adoption, without it: %v", err)
	}
}

// The scenario, in the core: a registry that recorded none of the runtime's
// sandboxes (a fresh file) refuses to start, naming what it found; its reconciler never
// removes another registry's sandboxes; adopting rebuilds their records from the labels.
func TestForeignSandboxesAreRefusedLeftAloneOrAdopted(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	own, _, _ := store.Registry(ctx)
	other := "registry-a"
	foreign := make([]lifecycle.Container, 3)
	for i := range foreign {
		foreign[i] = lifecycle.Container{
			ID: fmt.Sprintf("foreign-%d", i), ChatID: uuid.New(), SessionID: uuid.New(),
			CreatedAt: now.Add(-time.Hour), Running: true, Registry: other,
			AgentID: "coder", VolumeHostPath: fmt.Sprintf("/srv/volumes/%d", i),
			SessionCreatedAt: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour),
		}
	}
	foreign[1].ExpiresAt = now.Add(-time.Minute) // a keepalive the labels do not carry
	foreign[2].Tenant = "acme"                   // the others' labels name none: the default tenant
	unlabelled := lifecycle.Container{ID: "legacy", ChatID: uuid.New(), SessionID: uuid.New(),
		CreatedAt: now.Add(-time.Hour), Running: true, VolumeHostPath: "/srv/volumes/legacy"}
	dead := lifecycle.Container{ID: "dead", ChatID: uuid.New(), SessionID: uuid.New(),
		CreatedAt: now.Add(-time.Hour), Registry: other, VolumeHostPath: "/srv/volumes/dead"}
	inv := &fakeInventory{containers: append(slices.Clone(foreign), unlabelled, dead)}
	runtime := &lifecycletest.Runtime{}
	logs := &syncbuf.Buffer{}
	newSvc := func(adopt bool) *lifecycle.Service {
		svc, err := lifecycle.New(lifecycle.Config{
			Store: store, Locker: keylock.New(), Runtime: runtime, TTL: ttl, Clock: lifecycletest.NewClock(now),
			Inventory: inv, Binding: store, Adopt: adopt, ReconcileGrace: time.Second,
			Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}

	err := newSvc(false).CheckRegistry(ctx)
	for _, want := range []string{"5 sandboxes", "4 of registry registry-a", "1 of no registry", own, "adopt"} {
		if !errors.Is(err, sandbox.ErrConflict) || !strings.Contains(err.Error(), want) {
			t.Fatalf("CheckRegistry = %v, want ErrConflict saying %q", err, want)
		}
	}
	rep, err := newSvc(false).Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "report", rep, lifecycle.ReconcileReport{Containers: 5, Foreign: 5})
	if _, _, deletes := runtime.Calls(); len(deletes) != 0 {
		t.Fatalf("the reconciler removed another registry's sandboxes: %v", deletes)
	}

	if err := newSvc(true).CheckRegistry(ctx); err != nil {
		t.Fatalf("CheckRegistry with adopt: %v", err)
	}
	for _, c := range append(slices.Clone(foreign), unlabelled) {
		got := mustGet(t, store, c.ChatID)
		want := sandbox.Session{ID: c.SessionID, ChatID: c.ChatID, ContainerID: c.ID, Status: sandbox.StatusRunning,
			CreatedAt: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour), Tenant: c.Tenant, AgentID: c.AgentID, VolumeHostPath: c.VolumeHostPath}
		if c.ExpiresAt.Before(now.Add(ttl)) {
			want.ExpiresAt = now.Add(ttl) // one TTL from the adoption
		}
		assertEqual(t, "adopted record "+c.ID, got, want)
	}
	assertNoSession(t, store, dead.ChatID)
	_, adopted, _ := store.Registry(ctx)
	assertEqual(t, "adopted registries", adopted, []string{"", other})
	if !strings.Contains(logs.String(), `"msg":"sandbox_not_adopted"`) || !strings.Contains(logs.String(), `"reason":"not_running"`) {
		t.Errorf("no sandbox_not_adopted record for the dead sandbox:\n%s", logs.String())
	}
	// Now they are this registry's: the start-up check passes without adopt, and the
	// dead one, of an adopted registry and without a record, is an orphan.
	if err := newSvc(false).CheckRegistry(ctx); err != nil {
		t.Fatalf("CheckRegistry after adopting: %v", err)
	}
	rep, err = newSvc(false).Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "report after adopting", rep, lifecycle.ReconcileReport{Containers: 5, Records: 4, OrphansRemoved: 1})
	if _, _, deletes := runtime.Calls(); !slices.Equal(deletes, []string{"dead"}) {
		t.Fatalf("deletes after adopting = %v, want [dead]", deletes)
	}
}

// A reconciliation that would remove more than MassRemovalMin orphans and more than half
// of the instance's sandboxes removes none, logs why and counts it; forced, it removes them.
func TestReconcileRefusesAMassRemoval(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name           string
		orphans, owned int
		force          bool
		removed        int
	}{
		{"ElevenOfTwenty", 11, 9, false, 0},
		{"ElevenOfTwentyForced", 11, 9, true, 11},
		{"TenOfTen", 10, 0, false, 10},           // not more than 10
		{"ElevenOfTwentyTwo", 11, 11, false, 11}, // not more than half
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := memstore.New()
			own, _, _ := store.Registry(ctx)
			var containers []lifecycle.Container
			for i := range tc.orphans + tc.owned {
				c := lifecycle.Container{ID: fmt.Sprintf("c-%d", i), ChatID: uuid.New(), SessionID: uuid.New(),
					CreatedAt: now.Add(-time.Hour), Running: true, Registry: own}
				if i >= tc.orphans {
					s := liveSession()
					s.ID, s.ChatID, s.ContainerID = c.SessionID, c.ChatID, c.ID
					if err := store.Save(ctx, s); err != nil {
						t.Fatal(err)
					}
				}
				containers = append(containers, c)
			}
			runtime := &lifecycletest.Runtime{}
			tel := newTelemetry(t)
			logs := &syncbuf.Buffer{}
			svc, err := lifecycle.New(lifecycle.Config{
				Store: store, Locker: keylock.New(), Runtime: runtime, TTL: ttl, Clock: lifecycletest.NewClock(now),
				Inventory: &fakeInventory{containers: containers}, Binding: store, ForceMassRemoval: tc.force,
				Tracer: tel.tp, MeterProvider: tel.mp, Logger: slog.New(slog.NewJSONHandler(logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			rep, err := svc.Reconcile(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, _, deletes := runtime.Calls()
			assertEqual(t, "removed", len(deletes), tc.removed)
			assertEqual(t, "orphans removed", rep.OrphansRemoved, tc.removed)
			refused := tc.removed == 0
			if refused {
				assertEqual(t, "removals refused", rep.RemovalsRefused, tc.orphans)
				assertCounted(t, tel, "sandbox.reconcile.total", map[string]any{"result": "mass_removal_refused"})
				if !strings.Contains(logs.String(), `"msg":"reconcile_mass_removal_refused"`) || !strings.Contains(logs.String(), `"orphans":11`) {
					t.Errorf("no reconcile_mass_removal_refused record:\n%s", logs.String())
				}
			} else if strings.Contains(logs.String(), "mass_removal_refused") {
				t.Errorf("a removal of %d of %d was refused:\n%s", tc.orphans, tc.orphans+tc.owned, logs.String())
			}
		})
	}
}

func TestReconcileRemovesOrphansAndRepairsDeadRecords(t *testing.T) {
	tracked := liveSession() // container running: left alone
	dead := liveSession()    // container gone: record repaired
	dead.ID, dead.ChatID, dead.ContainerID = uuid.New(), uuid.New(), "container-dead"
	exited := liveSession() // container exists but stopped: repaired
	exited.ID, exited.ChatID, exited.ContainerID = uuid.New(), uuid.New(), "container-exited"
	store := storeWith(t, tracked, dead, exited)
	inv := &fakeInventory{containers: []lifecycle.Container{
		{ID: "container-1", ChatID: tracked.ChatID, SessionID: tracked.ID, CreatedAt: now.Add(-time.Hour), Running: true},
		{ID: "container-exited", ChatID: exited.ChatID, SessionID: exited.ID, CreatedAt: now.Add(-time.Hour)},
		{ID: "orphan-old", ChatID: uuid.New(), SessionID: uuid.New(), CreatedAt: now.Add(-time.Hour), Running: true},
		{ID: "orphan-young", ChatID: uuid.New(), SessionID: uuid.New(), CreatedAt: now.Add(-time.Second), Running: true},
	}}
	runtime := &lifecycletest.Runtime{}
	tel := newTelemetry(t)
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Locker: keylock.New(), Runtime: runtime, TTL: ttl, Clock: lifecycletest.NewClock(now),
		Inventory: inv, ReconcileGrace: time.Minute, Tracer: tel.tp, MeterProvider: tel.mp,
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := svc.Reconcile(context.Background())
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertEqual(t, "report", rep, lifecycle.ReconcileReport{Containers: 4, Records: 3, OrphansRemoved: 1, RecordsRepaired: 2})
	_, _, deletes := runtime.Calls()
	want := map[string]bool{"orphan-old": true, "container-dead": true, "container-exited": true}
	assertEqual(t, "deleted", len(deletes), len(want))
	for _, d := range deletes {
		if !want[d] {
			t.Errorf("reconciler deleted %s", d)
		}
	}
	assertEqual(t, "tracked session", mustGet(t, store, tracked.ChatID), tracked)
	assertNoSession(t, store, dead.ChatID)
	assertNoSession(t, store, exited.ChatID)
	if n := tel.counter(t, "sandbox.reconcile.total", map[string]any{"result": "record_repaired"}); n != 2 {
		t.Fatalf("record_repaired = %d, want 2", n)
	}
	assertCounted(t, tel, "sandbox.reconcile.total", map[string]any{"result": "orphan_removed"})
	assertActiveCount(t, tel, 1)
}

func TestReconcileDeletesNothingWhenTheEngineCannotBeListed(t *testing.T) {
	dead := liveSession()
	store := storeWith(t, dead)
	runtime := &lifecycletest.Runtime{}
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Locker: keylock.New(), Runtime: runtime, TTL: ttl, Clock: lifecycletest.NewClock(now),
		Inventory: &fakeInventory{err: fmt.Errorf("engine down: %w", sandbox.ErrUnavailable)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Reconcile(context.Background()); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("Reconcile: err = %v, want ErrUnavailable", err)
	}
	_, stops, deletes := runtime.Calls()
	assertEqual(t, "runtime calls", len(stops)+len(deletes), 0)
	assertEqual(t, "record kept", mustGet(t, store, chatID), dead)
}

type brokenStore struct{ *memstore.Store }

func (brokenStore) Get(context.Context, uuid.UUID) (sandbox.Session, error) {
	return sandbox.Session{}, fmt.Errorf("registry down: %w", sandbox.ErrUnavailable)
}

func TestReconcileDeletesNothingWhenTheRegistryCannotBeRead(t *testing.T) {
	runtime := &lifecycletest.Runtime{}
	svc, err := lifecycle.New(lifecycle.Config{
		Store: brokenStore{memstore.New()}, Locker: keylock.New(), Runtime: runtime, TTL: ttl, Clock: lifecycletest.NewClock(now),
		Inventory: &fakeInventory{containers: []lifecycle.Container{
			{ID: "maybe-orphan", ChatID: uuid.New(), SessionID: uuid.New(), CreatedAt: now.Add(-time.Hour), Running: true},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := svc.Reconcile(context.Background())
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertEqual(t, "errors", rep.Errors, 1)
	_, _, deletes := runtime.Calls()
	assertEqual(t, "deletes", len(deletes), 0)
}

// TestCoreImportsNoInfrastructure keeps the domain and the use cases free of Docker, SQL,
// Kubernetes and the OpenTelemetry SDK.
func TestCoreImportsNoInfrastructure(t *testing.T) {
	for _, pkg := range []string{"../sandbox", "."} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if !strings.Contains(strings.Split(dep, "/")[0], ".") {
				continue // standard library
			}
			allowed := strings.HasPrefix(dep, "github.com/sandboxd/sandboxd/internal/sandbox") ||
				strings.HasPrefix(dep, "github.com/sandboxd/sandboxd/internal/lifecycle") ||
				dep == "github.com/google/uuid" ||
				(strings.HasPrefix(dep, "go.opentelemetry.io/otel") && !strings.Contains(dep, "/sdk")) ||
				dep == "github.com/go-logr/logr" || dep == "github.com/go-logr/stdr" || // the otel API's own logging
				dep == "github.com/cespare/xxhash/v2" // and attribute hashing
			if !allowed {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}

func TestSweepPagesPastSessionsWhoseStopKeepsFailing(t *testing.T) {
	var sessions []sandbox.Session
	runtime := &lifecycletest.Runtime{}
	for i := range 7 {
		s := expiredSession()
		s.ID, s.ChatID = uuid.New(), uuid.New()
		s.ContainerID = fmt.Sprintf("container-%d", i)
		s.ExpiresAt = now.Add(-time.Duration(10-i) * time.Minute)
		if i < 5 { // the five oldest never stop: more than a page
			runtime.FailStop(s.ContainerID, &runtimeError{"stop_failed"})
		}
		sessions = append(sessions, s)
	}
	store := storeWith(t, sessions...)
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Locker: keylock.New(), Runtime: runtime, TTL: ttl, Clock: lifecycletest.NewClock(now), SweepBatch: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // and again: the failing ones do not starve the others on a later sweep either
		cleaned, err := svc.CleanupExpired(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(cleaned) > 0 {
			assertEqual(t, "cleaned", cleaned, sessions[5:])
		}
	}
	if n, _ := store.Count(context.Background()); n != 5 {
		t.Fatalf("%d sessions left, want the 5 that cannot stop", n)
	}
}

func TestSweepStopsStartingWorkWhenShutDown(t *testing.T) {
	var sessions []sandbox.Session
	for range 50 {
		s := expiredSession()
		s.ID, s.ChatID = uuid.New(), uuid.New()
		sessions = append(sessions, s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// Every stop shuts the sweep down, says it is under way and waits for release.
	underWay, release := make(chan struct{}, len(sessions)), make(chan struct{})
	runtime := &lifecycletest.Runtime{BeforeStop: func(context.Context, string) error {
		cancel()
		underWay <- struct{}{}
		<-release
		return nil
	}}
	tel := newTelemetry(t)
	svc, err := lifecycle.New(lifecycle.Config{
		Store: storeWith(t, sessions...), Locker: keylock.New(), Runtime: runtime, TTL: ttl, Clock: lifecycletest.NewClock(now),
		SweepParallelism: 4, Tracer: tel.tp, MeterProvider: tel.mp,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan []sandbox.Session)
	go func() {
		cleaned, _ := svc.CleanupExpired(ctx)
		done <- cleaned
	}()
	select {
	case <-underWay: // shut down with a stop under way
	case <-time.After(10 * time.Second):
		t.Fatal("the sweep never stopped a container")
	}
	close(release)
	cleaned := <-done
	_, stops, _ := runtime.Calls()
	if len(stops) > 4 || len(cleaned) != len(stops) {
		t.Fatalf("after shutdown the sweep stopped %d containers and cleaned %d; want at most the 4 under way", len(stops), len(cleaned))
	}
	if n := tel.counter(t, "sandbox.cleanup.error.total", nil); n != 0 {
		t.Fatalf("shutdown counted as %d cleanup errors", n)
	}
}

func TestDrainWaitsForACreateWhoseCallerLeft(t *testing.T) {
	runtime := newBlockingRuntime()
	store := memstore.New()
	svc, err := lifecycle.New(lifecycle.Config{Store: store, Locker: keylock.New(), Runtime: runtime, TTL: ttl, Clock: lifecycletest.NewClock(now)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	created := make(chan error, 1)
	go func() {
		_, _, err := svc.Create(ctx, createRequest())
		created <- err
	}()
	<-runtime.createStarted
	cancel() // the caller leaves; the create goes on

	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	if err := svc.Drain(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain while a create is under way: err = %v, want DeadlineExceeded", err)
	}
	drained := make(chan error, 1)
	go func() { drained <- svc.Drain(context.Background()) }()
	close(runtime.allowCreate)
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if err := <-created; err != nil {
		t.Fatalf("create whose caller left: %v", err)
	}
	mustGet(t, store, chatID) // recorded, not cut off

	// Once drained, nothing new starts.
	req := createRequest()
	req.ChatID = uuid.New()
	if _, _, err := svc.Create(context.Background(), req); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("Create after Drain: err = %v, want ErrUnavailable", err)
	}
	if err := svc.Drain(context.Background()); err != nil {
		t.Fatalf("Drain with nothing under way: %v", err)
	}
}

func TestNotFoundSpeaksOfTheChatNotTheStore(t *testing.T) {
	e := newEnv(t, memstore.New(), &fakeLocker{}, &lifecycletest.Runtime{}, nil)
	_, err := e.svc.Get(context.Background(), chatID)
	if !errors.Is(err, sandbox.ErrNotFound) || strings.Contains(err.Error(), "memstore") {
		t.Fatalf("Get of a chat with no sandbox: %v", err)
	}
	assertEqual(t, "message", err.Error(), "chat "+chatID.String()+" has no sandbox: not found")
}

// extendingStore is a registry in which another replica extends a session between the
// sweep's re-read and its removal (the sweep having lost the chat's lock).
type extendingStore struct{ *memstore.Store }

func (st extendingStore) RemoveExpired(ctx context.Context, chatID, sessionID uuid.UUID, at time.Time) (bool, error) {
	if err := st.SetExpiry(ctx, sessionID, at.Add(time.Hour)); err != nil {
		return false, err
	}
	return st.Store.RemoveExpired(ctx, chatID, sessionID, at)
}

// The sweep's removal is conditional: a session extended by another replica after the
// sweep read it keeps its record and its running sandbox (the record goes before the
// stop, which only follows a removal), and the sweep counts the clean as failed.
func TestSweepNeverForgetsASessionExtendedMeanwhile(t *testing.T) {
	expired := liveSession()
	expired.ExpiresAt = now.Add(-time.Minute)
	store := storeWith(t, expired)
	runtime := &lifecycletest.Runtime{}
	e := newEnv(t, extendingStore{store}, keylock.New(), runtime, nil)
	defer func() {
		if _, stops, _ := runtime.Calls(); len(stops) != 0 {
			t.Errorf("the extended session's sandbox was stopped: %v", stops)
		}
	}()
	cleaned, err := e.svc.CleanupExpired(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "cleaned", len(cleaned), 0)
	if got := mustGet(t, store, expired.ChatID); got.ID != expired.ID || !got.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("the extended session: %+v", got)
	}
	assertCounted(t, e.tel, "sandbox.cleanup.error.total", map[string]any{"error.type": "conflict"})
}
