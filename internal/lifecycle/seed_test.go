package lifecycle_test

// The Go port of ../shared/seed/test_sandbox_usecases.py: one test per seed test, named by
// the seed's name in Go form, asserting everything the seed asserts; and, marked as such,
// tests of what the seed means beyond what it asserts. Observability is read from the real
// OpenTelemetry SDK (tracetest span recorder, ManualReader) and a recording slog handler.
// As in the seed, a span's start attributes are told from those set later (a span
// processor keeps them at OnStart), and log attribute values are compared with their types.

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/memstore"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

var (
	chatID               = uuid.MustParse("11111111-1111-1111-1111-111111111111")
	expiredChatID        = uuid.MustParse("22222222-2222-2222-2222-222222222222")
	boundaryChatID       = uuid.MustParse("33333333-3333-3333-3333-333333333333")
	activeChatID         = uuid.MustParse("44444444-4444-4444-4444-444444444444")
	failChatID           = uuid.MustParse("55555555-5555-5555-5555-555555555555")
	cleanChatID          = uuid.MustParse("66666666-6666-6666-6666-666666666666")
	sessionReusedID      = uuid.MustParse("00000000-0000-0000-0000-000000000001")
	sessionOldID         = uuid.MustParse("00000000-0000-0000-0000-000000000002")
	sessionNewID         = uuid.MustParse("00000000-0000-0000-0000-000000000003")
	sessionExpiredID     = uuid.MustParse("00000000-0000-0000-0000-000000000004")
	sessionBoundaryID    = uuid.MustParse("00000000-0000-0000-0000-000000000005")
	sessionActiveID      = uuid.MustParse("00000000-0000-0000-0000-000000000006")
	sessionFailID        = uuid.MustParse("00000000-0000-0000-0000-000000000007")
	sessionCleanID       = uuid.MustParse("00000000-0000-0000-0000-000000000008")
	sessionReplacementID = uuid.MustParse("00000000-0000-0000-0000-000000000009")

	now = time.Date(2026, 4, 2, 12, 0, 0, 0, time.UTC)
	ttl = 5 * time.Minute
)

const (
	nonCanonicalChatID = "11111111111111111111111111111111"
	agentID            = "agent-alpha"
	volumeHostPath     = "/srv/sandbox/request-volume"
)

func createRequest() lifecycle.CreateRequest {
	return lifecycle.CreateRequest{ChatID: chatID, AgentID: agentID, VolumeHostPath: volumeHostPath}
}

// env is a Service with the parts a seed test looks at.
type env struct {
	runtime *lifecycletest.Runtime
	tel     *telemetry
	logs    func() []logRecord
	svc     *lifecycle.Service
}

// newEnv builds a Service over store, locker and runtime with a fixed clock, the seed's
// TTL, real in-memory telemetry and a recording logger. newID may be nil (random ids).
// The sweep cleans one chat at a time, as the seed's did: its tests pin the order.
func newEnv(t *testing.T, store lifecycle.Store, locker lifecycle.Locker, runtime *lifecycletest.Runtime, newID func() uuid.UUID) *env {
	t.Helper()
	logger, logs := newRecordingLogger()
	e := &env{runtime: runtime, tel: newTelemetry(t), logs: logs}
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Locker: locker, Runtime: runtime, TTL: ttl,
		Clock: lifecycletest.NewClock(now), NewID: newID, Logger: logger,
		Tracer: e.tel.tp, MeterProvider: e.tel.mp, SweepParallelism: 1,
	})
	if err != nil {
		t.Fatalf("lifecycle.New: %v", err)
	}
	e.svc = svc
	return e
}

func fixedID(id uuid.UUID) func() uuid.UUID { return func() uuid.UUID { return id } }

func storeWith(t *testing.T, sessions ...sandbox.Session) *memstore.Store {
	t.Helper()
	st := memstore.New()
	for _, s := range sessions {
		if err := st.Save(context.Background(), s); err != nil {
			t.Fatalf("seed the store: %v", err)
		}
	}
	return st
}

func liveSession() sandbox.Session {
	return sandbox.Session{
		ID: sessionReusedID, ChatID: chatID, ContainerID: "container-1", Status: sandbox.StatusRunning,
		CreatedAt: now.Add(-time.Minute), ExpiresAt: now.Add(4 * time.Minute),
		AgentID: agentID, VolumeHostPath: volumeHostPath,
	}
}

func expiredSession() sandbox.Session {
	return sandbox.Session{
		ID: sessionOldID, ChatID: chatID, ContainerID: "container-old", Status: sandbox.StatusRunning,
		CreatedAt: now.Add(-10 * time.Minute), ExpiresAt: now,
	}
}

func logOf(level, msg string, chat, session uuid.UUID, container string) logRecord {
	return logRecord{Level: level, Msg: msg, Attrs: map[string]any{
		"chat_id": chat.String(), "session_id": session.String(), "container_id": container,
	}}
}

func mustGet(t *testing.T, st lifecycle.Store, chat uuid.UUID) sandbox.Session {
	t.Helper()
	s, err := st.Get(context.Background(), chat)
	if err != nil {
		t.Fatalf("registry has no session for %s: %v", chat, err)
	}
	return s
}

func assertNoSession(t *testing.T, st lifecycle.Store, chat uuid.UUID) {
	t.Helper()
	if s, err := st.Get(context.Background(), chat); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("registry holds %+v (err %v) for %s, want nothing", s, err, chat)
	}
}

func assertEqual[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

func assertActiveCount(t *testing.T, tel *telemetry, want int64) {
	t.Helper()
	got, ok := tel.gauge(t, "sandbox.active.count")
	if !ok {
		t.Fatal("sandbox.active.count was never set")
	}
	if got != want {
		t.Fatalf("sandbox.active.count = %d, want %d", got, want)
	}
}

func assertCounted(t *testing.T, tel *telemetry, name string, attrs map[string]any) {
	t.Helper()
	if n := tel.counter(t, name, attrs); n != 1 {
		t.Fatalf("%s%v = %d, want 1", name, attrs, n)
	}
}

func TestCreateSandboxReusesActiveSessionWhenNotExpired(t *testing.T) {
	session := liveSession()
	store := storeWith(t, session)
	locker := &fakeLocker{}
	e := newEnv(t, store, locker, &lifecycletest.Runtime{}, nil)

	got, outcome, err := e.svc.Create(context.Background(), createRequest())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	assertEqual(t, "result", got, session)
	assertEqual(t, "outcome", outcome, lifecycle.Reused)
	creates, stops, _ := e.runtime.Calls()
	assertEqual(t, "create calls", len(creates), 0)
	assertEqual(t, "stop calls", len(stops), 0)
	assertEqual(t, "registry", mustGet(t, store, chatID), session)
	assertEqual(t, "locked chats", locker.locked(), []uuid.UUID{chatID})
	assertEqual(t, "logs", e.logs(), []logRecord{logOf("INFO", "sandbox_reused", chatID, sessionReusedID, "container-1")})
}

func TestCreateSandboxReuseRecordsObservability(t *testing.T) {
	session := liveSession()
	e := newEnv(t, storeWith(t, session), &fakeLocker{}, &lifecycletest.Runtime{}, nil)

	got, _, err := e.svc.Create(context.Background(), createRequest())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	assertEqual(t, "result", got, session)
	assertCounted(t, e.tel, "sandbox.create.total", map[string]any{"result": "reused"})
	span := e.tel.findSpan(t, "usecase.create_sandbox", map[string]any{"chat.id": chatID.String()}, map[string]any{
		"session.id":     sessionReusedID.String(),
		"container.id":   "container-1",
		"sandbox.result": "reused",
	})
	assertEqual(t, "span errors", spanErrors(span), []string(nil))
}

func TestCreateSandboxReplaceRecordsObservabilityAndFinalActiveCount(t *testing.T) {
	store := storeWith(t, expiredSession())
	e := newEnv(t, store, &fakeLocker{}, &lifecycletest.Runtime{}, fixedID(sessionNewID))

	got, outcome, err := e.svc.Create(context.Background(), createRequest())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	assertEqual(t, "session id", got.ID, sessionNewID)
	assertEqual(t, "outcome", outcome, lifecycle.Replaced)
	if n, _ := store.Count(context.Background()); n != 1 {
		t.Fatalf("registry count = %d, want 1", n)
	}
	assertCounted(t, e.tel, "sandbox.create.total", map[string]any{"result": "replaced"})
	assertActiveCount(t, e.tel, 1)
	newContainer := "container-" + sessionNewID.String()
	span := e.tel.findSpan(t, "usecase.create_sandbox", map[string]any{"chat.id": chatID.String()}, map[string]any{
		"sandbox.previous_session.id":   sessionOldID.String(),
		"sandbox.previous_container.id": "container-old",
		"sandbox.new_session.id":        sessionNewID.String(),
		"sandbox.new_container.id":      newContainer,
		"session.id":                    sessionNewID.String(),
		"container.id":                  newContainer,
		"sandbox.result":                "replaced",
	})
	assertEqual(t, "span errors", spanErrors(span), []string(nil))
}

func TestCreateSandboxReplacesExpiredSessionAndCreatesNewOne(t *testing.T) {
	store := storeWith(t, expiredSession())
	locker := &fakeLocker{}
	e := newEnv(t, store, locker, &lifecycletest.Runtime{}, fixedID(sessionNewID))

	got, _, err := e.svc.Create(context.Background(), createRequest())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	creates, stops, _ := e.runtime.Calls()
	assertEqual(t, "stop calls", stops, []string{"container-old"})
	assertEqual(t, "create calls", creates, []lifecycle.CreateSpec{{
		SessionID: sessionNewID, ChatID: chatID, AgentID: agentID, VolumeHostPath: volumeHostPath,
		CreatedAt: now, ExpiresAt: now.Add(ttl),
	}})
	newContainer := "container-" + sessionNewID.String()
	want := sandbox.Session{
		ID: sessionNewID, ChatID: chatID, ContainerID: newContainer, Status: sandbox.StatusRunning,
		CreatedAt: now, ExpiresAt: now.Add(ttl), AgentID: agentID, VolumeHostPath: volumeHostPath,
	}
	assertEqual(t, "result", got, want)
	assertEqual(t, "registry", mustGet(t, store, chatID), got)
	assertEqual(t, "locked chats", locker.locked(), []uuid.UUID{chatID})
	assertEqual(t, "logs", e.logs(), []logRecord{
		logOf("INFO", "sandbox_replaced", chatID, sessionOldID, "container-old"),
		logOf("INFO", "sandbox_created", chatID, sessionNewID, newContainer),
	})
}

func TestCreateSandboxCreatesNewSessionWhenNoneExists(t *testing.T) {
	store := memstore.New()
	locker := &fakeLocker{}
	e := newEnv(t, store, locker, &lifecycletest.Runtime{}, nil)
	chat, err := sandbox.ParseChatID(nonCanonicalChatID)
	if err != nil {
		t.Fatalf("ParseChatID: %v", err)
	}
	req := createRequest()
	req.ChatID = chat

	got, outcome, err := e.svc.Create(context.Background(), req)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	assertEqual(t, "outcome", outcome, lifecycle.Created)
	assertEqual(t, "chat id", got.ChatID, chatID)
	assertEqual(t, "chat id text", got.ChatID.String(), "11111111-1111-1111-1111-111111111111")
	assertEqual(t, "container id", got.ContainerID, "container-"+got.ID.String())
	assertEqual(t, "status", got.Status, sandbox.StatusRunning)
	assertEqual(t, "created at", got.CreatedAt, now)
	assertEqual(t, "expires at", got.ExpiresAt, now.Add(ttl))
	creates, stops, _ := e.runtime.Calls()
	assertEqual(t, "create calls", creates, []lifecycle.CreateSpec{{
		SessionID: got.ID, ChatID: chatID, AgentID: agentID, VolumeHostPath: volumeHostPath,
		CreatedAt: now, ExpiresAt: now.Add(ttl),
	}})
	assertEqual(t, "stop calls", len(stops), 0)
	assertEqual(t, "registry", mustGet(t, store, chatID), got)
	assertEqual(t, "locked chats", locker.locked(), []uuid.UUID{chatID})
	assertEqual(t, "logs", e.logs(), []logRecord{logOf("INFO", "sandbox_created", chatID, got.ID, got.ContainerID)})
}

func TestCreateSandboxPassesAgentAndVolumeParamsToRuntime(t *testing.T) {
	store := memstore.New()
	e := newEnv(t, store, &fakeLocker{}, &lifecycletest.Runtime{}, nil)

	got, _, err := e.svc.Create(context.Background(), createRequest())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	creates, _, _ := e.runtime.Calls()
	assertEqual(t, "create calls", len(creates), 1)
	assertEqual(t, "runtime agent", creates[0].AgentID, agentID)
	assertEqual(t, "runtime volume", creates[0].VolumeHostPath, volumeHostPath)
	assertEqual(t, "result agent", got.AgentID, agentID)
	assertEqual(t, "result volume", got.VolumeHostPath, volumeHostPath)
	assertEqual(t, "registry", mustGet(t, store, chatID), got)
}

func TestCreateSandboxReusesActiveSessionWhenParamsMatch(t *testing.T) {
	session := liveSession()
	e := newEnv(t, storeWith(t, session), &fakeLocker{}, &lifecycletest.Runtime{}, nil)

	got, _, err := e.svc.Create(context.Background(), createRequest())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	assertEqual(t, "result", got, session)
	creates, stops, deletes := e.runtime.Calls()
	assertEqual(t, "runtime calls", len(creates)+len(stops)+len(deletes), 0)
}

func TestCreateSandboxReuseMismatchRaisesConflictWithoutRuntimeCalls(t *testing.T) {
	session := liveSession()
	store := storeWith(t, session)
	e := newEnv(t, store, &fakeLocker{}, &lifecycletest.Runtime{}, nil)

	_, outcome, err := e.svc.Create(context.Background(), lifecycle.CreateRequest{
		ChatID: chatID, AgentID: "agent-beta", VolumeHostPath: "/srv/sandbox/other-volume",
	})
	if !errors.Is(err, sandbox.ErrConflict) {
		t.Fatalf("Create with other agent and volume: err = %v, want ErrConflict", err)
	}
	assertEqual(t, "outcome", outcome, lifecycle.Conflict)
	creates, stops, deletes := e.runtime.Calls()
	assertEqual(t, "runtime calls", len(creates)+len(stops)+len(deletes), 0)
	assertEqual(t, "registry", mustGet(t, store, chatID), session)
	// Beyond the seed: the conflict is counted as such.
	assertCounted(t, e.tel, "sandbox.create.total", map[string]any{"result": "conflict"})
	e.tel.findSpan(t, "usecase.create_sandbox", map[string]any{"chat.id": chatID.String()}, map[string]any{"sandbox.result": "conflict"})
}

func TestCreateSandboxErrorRecordsObservability(t *testing.T) {
	createErr := &runtimeError{"create_failed"}
	runtime := &lifecycletest.Runtime{}
	runtime.FailCreates(createErr)
	e := newEnv(t, memstore.New(), &fakeLocker{}, runtime, fixedID(sessionNewID))

	_, _, err := e.svc.Create(context.Background(), createRequest())
	if !errors.Is(err, createErr) {
		t.Fatalf("Create: err = %v, want the runtime's create_failed", err)
	}
	assertCounted(t, e.tel, "sandbox.create.total", map[string]any{"result": "error"})
	span := e.tel.findSpan(t, "usecase.create_sandbox", map[string]any{"chat.id": chatID.String()}, map[string]any{
		"session.id":     sessionNewID.String(),
		"sandbox.result": "error",
	})
	assertEqual(t, "span errors", spanErrors(span), []string{err.Error()})
}

func TestCreateSandboxSaveFailureStopsUntrackedContainer(t *testing.T) {
	saveErr := &runtimeError{"save_failed"}
	store := &failingSaveStore{Store: memstore.New(), err: saveErr, fail: true}
	e := newEnv(t, store, &fakeLocker{}, &lifecycletest.Runtime{}, fixedID(sessionNewID))

	_, _, err := e.svc.Create(context.Background(), createRequest())
	if !errors.Is(err, saveErr) {
		t.Fatalf("Create: err = %v, want save_failed", err)
	}
	creates, stops, _ := e.runtime.Calls()
	assertEqual(t, "create calls", len(creates), 1)
	assertEqual(t, "stop calls", stops, []string{"container-" + sessionNewID.String()})
	assertNoSession(t, store, chatID)
	assertActiveCount(t, e.tel, 0)
	assertCounted(t, e.tel, "sandbox.create.total", map[string]any{"result": "error"})
}

func TestCreateSandboxReplaceStopFailurePreservesSeparateIdentities(t *testing.T) {
	store := storeWith(t, expiredSession())
	e := newEnv(t, store, &fakeLocker{}, stopFails("container-old"), fixedID(sessionNewID))

	_, _, err := e.svc.Create(context.Background(), createRequest())
	var rerr *runtimeError
	if !errors.As(err, &rerr) || rerr.msg != "stop_failed" {
		t.Fatalf("Create: err = %v, want stop_failed", err)
	}
	assertCounted(t, e.tel, "sandbox.create.total", map[string]any{"result": "error"})
	span := e.tel.findSpan(t, "usecase.create_sandbox", map[string]any{"chat.id": chatID.String()}, map[string]any{
		"sandbox.previous_session.id":   sessionOldID.String(),
		"sandbox.previous_container.id": "container-old",
		"sandbox.new_session.id":        sessionNewID.String(),
		"sandbox.result":                "error",
	})
	for _, key := range []string{"sandbox.new_container.id", "session.id", "container.id"} {
		if hasAttr(span, key) {
			t.Errorf("span has %s after a failed stop", key)
		}
	}
	assertEqual(t, "span errors", spanErrors(span), []string{err.Error()})
	// The old record stays for the next attempt.
	assertEqual(t, "registry", mustGet(t, store, chatID), expiredSession())
}

// What the seed means beyond what it asserts: sandbox_replaced is logged only after the
// old container stopped; a stop that fails replaced nothing, and nothing says otherwise.
func TestCreateSandboxReplaceStopFailureLogsNoReplacement(t *testing.T) {
	store := storeWith(t, expiredSession())
	e := newEnv(t, store, &fakeLocker{}, stopFails("container-old"), fixedID(sessionNewID))

	if _, _, err := e.svc.Create(context.Background(), createRequest()); err == nil {
		t.Fatal("Create succeeded though the old container could not be stopped")
	}
	for _, rec := range e.logs() {
		if rec.Msg == "sandbox_replaced" {
			t.Fatalf("logged %+v though the old container's stop failed", rec)
		}
	}
	assertEqual(t, "registry", mustGet(t, store, chatID), expiredSession())
}

func TestCreateSandboxReplaceSaveFailureRecordsStageSafeTraceIds(t *testing.T) {
	saveErr := &runtimeError{"save_failed"}
	store := &failingSaveStore{Store: storeWith(t, expiredSession()), err: saveErr, fail: true}
	e := newEnv(t, store, &fakeLocker{}, &lifecycletest.Runtime{}, fixedID(sessionNewID))

	_, _, err := e.svc.Create(context.Background(), createRequest())
	if !errors.Is(err, saveErr) {
		t.Fatalf("Create: err = %v, want save_failed", err)
	}
	newContainer := "container-" + sessionNewID.String()
	creates, stops, _ := e.runtime.Calls()
	assertEqual(t, "stop calls", stops, []string{"container-old", newContainer})
	assertEqual(t, "create calls", len(creates), 1)
	assertNoSession(t, store, chatID)
	assertActiveCount(t, e.tel, 0)
	assertCounted(t, e.tel, "sandbox.create.total", map[string]any{"result": "error"})
	span := e.tel.findSpan(t, "usecase.create_sandbox", map[string]any{"chat.id": chatID.String()}, map[string]any{
		"sandbox.previous_session.id":   sessionOldID.String(),
		"sandbox.previous_container.id": "container-old",
		"sandbox.new_session.id":        sessionNewID.String(),
		"sandbox.new_container.id":      newContainer,
		"sandbox.result":                "error",
	})
	for _, key := range []string{"session.id", "container.id"} {
		if hasAttr(span, key) {
			t.Errorf("span has %s though the new session was never saved", key)
		}
	}
	assertEqual(t, "span errors", spanErrors(span), []string{err.Error()})
}

func TestCreateSandboxSerializesDuplicateConcurrentCreateForChatId(t *testing.T) {
	store := memstore.New()
	runtime := newBlockingRuntime()
	locker := &trackingLocker{inner: keylock.New(), secondAttempted: make(chan struct{})}
	e := newEnv(t, store, locker, runtime.Runtime, fixedID(sessionNewID))

	var (
		results [2]sandbox.Session
		errs    [2]error
		wg      sync.WaitGroup
	)
	run := func(i int) {
		defer wg.Done()
		results[i], _, errs[i] = e.svc.Create(context.Background(), createRequest())
	}
	wg.Add(1)
	go run(0)
	select {
	case <-runtime.createStarted:
	case <-time.After(5 * time.Second):
		t.Fatal("first create never reached the runtime")
	}
	wg.Add(1)
	go run(1)
	select {
	case <-locker.secondAttempted:
	case <-time.After(5 * time.Second):
		t.Fatal("second create never asked for the lock")
	}
	creates, _, _ := runtime.Calls()
	assertEqual(t, "create calls while the first holds the lock", len(creates), 1)
	close(runtime.allowCreate)
	wg.Wait()

	assertEqual(t, "errors", errs, [2]error{})
	assertEqual(t, "both results", results[0], results[1])
	newContainer := "container-" + sessionNewID.String()
	assertEqual(t, "result", results[0], sandbox.Session{
		ID: sessionNewID, ChatID: chatID, ContainerID: newContainer, Status: sandbox.StatusRunning,
		CreatedAt: now, ExpiresAt: now.Add(ttl), AgentID: agentID, VolumeHostPath: volumeHostPath,
	})
	creates, stops, _ := runtime.Calls()
	assertEqual(t, "create calls", len(creates), 1)
	assertEqual(t, "stop calls", len(stops), 0)
	assertEqual(t, "registry", mustGet(t, store, chatID), results[0])
	assertEqual(t, "locked chats", locker.chats, []uuid.UUID{chatID, chatID})
	assertEqual(t, "logs", e.logs(), []logRecord{
		logOf("INFO", "sandbox_created", chatID, sessionNewID, newContainer),
		logOf("INFO", "sandbox_reused", chatID, sessionNewID, newContainer),
	})
}

func TestDeleteSandboxDeletesSessionAndRemovesRegistryEntry(t *testing.T) {
	session := liveSession()
	session.ID, session.ContainerID = sessionActiveID, "container-active"
	store := storeWith(t, session)
	locker := &fakeLocker{}
	e := newEnv(t, store, locker, &lifecycletest.Runtime{}, nil)

	res, err := e.svc.Delete(context.Background(), chatID)
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	assertEqual(t, "result", res, lifecycle.DeleteResult{
		ChatID: chatID, Result: lifecycle.Deleted, SessionID: sessionActiveID, ContainerID: "container-active",
	})
	_, stops, deletes := e.runtime.Calls()
	assertEqual(t, "delete calls", deletes, []string{"container-active"})
	assertEqual(t, "stop calls", len(stops), 0)
	assertNoSession(t, store, chatID)
	assertEqual(t, "locked chats", locker.locked(), []uuid.UUID{chatID})
	// Beyond the seed: delete is logged, counted and traced.
	assertEqual(t, "logs", e.logs(), []logRecord{logOf("INFO", "sandbox_deleted", chatID, sessionActiveID, "container-active")})
	assertCounted(t, e.tel, "sandbox.delete.total", map[string]any{"result": "deleted"})
	assertActiveCount(t, e.tel, 0)
	e.tel.findSpan(t, "usecase.delete_sandbox", map[string]any{"chat.id": chatID.String()}, map[string]any{
		"session.id":     sessionActiveID.String(),
		"container.id":   "container-active",
		"sandbox.result": "deleted",
	})
}

func TestDeleteSandboxReturnsIdempotentNotFoundWithoutRuntimeCalls(t *testing.T) {
	locker := &fakeLocker{}
	e := newEnv(t, memstore.New(), locker, &lifecycletest.Runtime{}, nil)

	res, err := e.svc.Delete(context.Background(), chatID)
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	assertEqual(t, "result", res, lifecycle.DeleteResult{ChatID: chatID, Result: lifecycle.NotFound})
	assertEqual(t, "no session id", res.SessionID, uuid.Nil)
	assertEqual(t, "no container id", res.ContainerID, "")
	creates, stops, deletes := e.runtime.Calls()
	assertEqual(t, "runtime calls", len(creates)+len(stops)+len(deletes), 0)
	assertEqual(t, "locked chats", locker.locked(), []uuid.UUID{chatID})
	assertCounted(t, e.tel, "sandbox.delete.total", map[string]any{"result": "not_found"})
	e.tel.findSpan(t, "usecase.delete_sandbox", map[string]any{"chat.id": chatID.String()}, map[string]any{"sandbox.result": "not_found"})
}

func TestCleanupExpiredSandboxesStopsAndDeletesOnlyExpiredSessions(t *testing.T) {
	expired := sandbox.Session{
		ID: sessionExpiredID, ChatID: expiredChatID, ContainerID: "container-expired", Status: sandbox.StatusRunning,
		CreatedAt: now.Add(-10 * time.Minute), ExpiresAt: now.Add(-time.Second),
	}
	boundary := sandbox.Session{
		ID: sessionBoundaryID, ChatID: boundaryChatID, ContainerID: "container-boundary", Status: sandbox.StatusRunning,
		CreatedAt: now.Add(-5 * time.Minute), ExpiresAt: now,
	}
	active := sandbox.Session{
		ID: sessionActiveID, ChatID: activeChatID, ContainerID: "container-active", Status: sandbox.StatusRunning,
		CreatedAt: now.Add(-time.Minute), ExpiresAt: now.Add(5 * time.Minute),
	}
	store := storeWith(t, expired, boundary, active)
	locker := &fakeLocker{}
	e := newEnv(t, store, locker, &lifecycletest.Runtime{}, nil)

	cleaned, err := e.svc.CleanupExpired(context.Background())
	if err != nil {
		t.Fatalf("CleanupExpired: %v", err)
	}
	assertEqual(t, "cleaned", cleaned, []sandbox.Session{expired, boundary})
	_, stops, _ := e.runtime.Calls()
	assertEqual(t, "stop calls", stops, []string{"container-expired", "container-boundary"})
	assertNoSession(t, store, expiredChatID)
	assertNoSession(t, store, boundaryChatID)
	assertEqual(t, "active session", mustGet(t, store, activeChatID), active)
	assertEqual(t, "locked chats", locker.locked(), []uuid.UUID{expiredChatID, boundaryChatID})
	assertEqual(t, "logs", e.logs(), []logRecord{
		logOf("INFO", "sandbox_cleaned", expiredChatID, sessionExpiredID, "container-expired"),
		logOf("INFO", "sandbox_cleaned", boundaryChatID, sessionBoundaryID, "container-boundary"),
	})
}

func TestCleanupExpiredSandboxesRecordsObservabilityOnCleanedSession(t *testing.T) {
	expired := sandbox.Session{
		ID: sessionExpiredID, ChatID: expiredChatID, ContainerID: "container-expired", Status: sandbox.StatusRunning,
		CreatedAt: now.Add(-10 * time.Minute), ExpiresAt: now.Add(-time.Second),
	}
	e := newEnv(t, storeWith(t, expired), &fakeLocker{}, &lifecycletest.Runtime{}, nil)

	cleaned, err := e.svc.CleanupExpired(context.Background())
	if err != nil {
		t.Fatalf("CleanupExpired: %v", err)
	}
	assertEqual(t, "cleaned", cleaned, []sandbox.Session{expired})
	assertCounted(t, e.tel, "sandbox.cleanup.total", map[string]any{"result": "cleaned"})
	assertActiveCount(t, e.tel, 0)
	root := e.tel.findSpan(t, "usecase.cleanup_expired_sandboxes", nil, map[string]any{
		"sandbox.expired_count": 1,
		"sandbox.cleaned_count": 1,
		"sandbox.error_count":   0,
		"sandbox.result":        "completed",
	})
	assertEqual(t, "root span errors", spanErrors(root), []string(nil))
	child := e.tel.findSpan(t, "usecase.cleanup_expired_sandbox", map[string]any{
		"chat.id":      expiredChatID.String(),
		"session.id":   sessionExpiredID.String(),
		"container.id": "container-expired",
	}, map[string]any{"sandbox.result": "cleaned"})
	assertEqual(t, "cleanup span errors", spanErrors(child), []string(nil))
	if child.Parent().SpanID() != root.SpanContext().SpanID() {
		t.Fatal("cleanup span is not a child of the sweep's root span")
	}
}

func TestCleanupExpiredSandboxesSkipsReplacedSessionFromStaleSnapshot(t *testing.T) {
	snapshot := sandbox.Session{
		ID: sessionExpiredID, ChatID: chatID, ContainerID: "container-expired", Status: sandbox.StatusRunning,
		CreatedAt: now.Add(-10 * time.Minute), ExpiresAt: now.Add(-time.Second),
	}
	replacement := sandbox.Session{
		ID: sessionReplacementID, ChatID: chatID, ContainerID: "container-new", Status: sandbox.StatusRunning,
		CreatedAt: now.Add(-30 * time.Second), ExpiresAt: now.Add(5 * time.Minute),
	}
	inner := storeWith(t, replacement)
	store := staleSnapshotStore{Store: inner, snapshot: snapshot}
	locker := &fakeLocker{}
	e := newEnv(t, store, locker, &lifecycletest.Runtime{}, nil)

	cleaned, err := e.svc.CleanupExpired(context.Background())
	if err != nil {
		t.Fatalf("CleanupExpired: %v", err)
	}
	assertEqual(t, "cleaned", len(cleaned), 0)
	_, stops, _ := e.runtime.Calls()
	assertEqual(t, "stop calls", len(stops), 0)
	assertEqual(t, "registry", mustGet(t, inner, chatID), replacement)
	assertEqual(t, "locked chats", locker.locked(), []uuid.UUID{chatID})
	assertEqual(t, "logs", len(e.logs()), 0)
}

// What the seed means beyond what it asserts: a session replaced since the snapshot is
// skipped because it is another session, even when it has expired too. Only the session
// id tells it from the snapshot's; the replacement is the next sweep's to clean, from a
// snapshot that lists it.
func TestCleanupExpiredSandboxesSkipsReplacementThatExpiredToo(t *testing.T) {
	snapshot := sandbox.Session{
		ID: sessionExpiredID, ChatID: chatID, ContainerID: "container-expired", Status: sandbox.StatusRunning,
		CreatedAt: now.Add(-10 * time.Minute), ExpiresAt: now.Add(-2 * time.Minute),
	}
	replacement := sandbox.Session{
		ID: sessionReplacementID, ChatID: chatID, ContainerID: "container-new", Status: sandbox.StatusRunning,
		CreatedAt: now.Add(-6 * time.Minute), ExpiresAt: now.Add(-time.Second),
	}
	inner := storeWith(t, replacement)
	locker := &fakeLocker{}
	e := newEnv(t, staleSnapshotStore{Store: inner, snapshot: snapshot}, locker, &lifecycletest.Runtime{}, nil)

	cleaned, err := e.svc.CleanupExpired(context.Background())
	if err != nil {
		t.Fatalf("CleanupExpired: %v", err)
	}
	assertEqual(t, "cleaned", len(cleaned), 0)
	creates, stops, deletes := e.runtime.Calls()
	assertEqual(t, "runtime calls", len(creates)+len(stops)+len(deletes), 0)
	assertEqual(t, "registry", mustGet(t, inner, chatID), replacement)
	assertEqual(t, "locked chats", locker.locked(), []uuid.UUID{chatID})
	assertEqual(t, "logs", len(e.logs()), 0)
}

func TestCleanupExpiredSandboxesContinuesAfterStopFailure(t *testing.T) {
	failing := sandbox.Session{
		ID: sessionFailID, ChatID: failChatID, ContainerID: "container-fail", Status: sandbox.StatusRunning,
		CreatedAt: now.Add(-10 * time.Minute), ExpiresAt: now.Add(-time.Minute),
	}
	cleanable := sandbox.Session{
		ID: sessionCleanID, ChatID: cleanChatID, ContainerID: "container-clean", Status: sandbox.StatusRunning,
		CreatedAt: now.Add(-9 * time.Minute), ExpiresAt: now.Add(-time.Second),
	}
	store := storeWith(t, failing, cleanable)
	locker := &fakeLocker{}
	e := newEnv(t, store, locker, stopFails("container-fail"), nil)

	cleaned, err := e.svc.CleanupExpired(context.Background())
	if err != nil {
		t.Fatalf("CleanupExpired: %v", err)
	}
	assertEqual(t, "cleaned", cleaned, []sandbox.Session{cleanable})
	_, stops, _ := e.runtime.Calls()
	assertEqual(t, "stop calls", stops, []string{"container-fail", "container-clean"})
	assertEqual(t, "failed session kept", mustGet(t, store, failChatID), failing)
	assertNoSession(t, store, cleanChatID)
	assertEqual(t, "locked chats", locker.locked(), []uuid.UUID{failChatID, cleanChatID})
	failedLog := logOf("ERROR", "sandbox_clean_failed", failChatID, sessionFailID, "container-fail")
	failedLog.Attrs["error"] = runtimeErrorType
	assertEqual(t, "logs", e.logs(), []logRecord{
		failedLog,
		logOf("INFO", "sandbox_cleaned", cleanChatID, sessionCleanID, "container-clean"),
	})
	assertCounted(t, e.tel, "sandbox.cleanup.error.total", map[string]any{"error.type": runtimeErrorType})
	assertCounted(t, e.tel, "sandbox.cleanup.total", map[string]any{"result": "cleaned"})
	assertActiveCount(t, e.tel, 1)
	root := e.tel.findSpan(t, "usecase.cleanup_expired_sandboxes", nil, map[string]any{
		"sandbox.expired_count": 2,
		"sandbox.cleaned_count": 1,
		"sandbox.error_count":   1,
		"sandbox.result":        "completed_with_errors",
	})
	assertEqual(t, "root span errors", spanErrors(root), []string(nil))
	failed := e.tel.findSpan(t, "usecase.cleanup_expired_sandbox", map[string]any{
		"chat.id":      failChatID.String(),
		"session.id":   sessionFailID.String(),
		"container.id": "container-fail",
	}, map[string]any{"sandbox.result": "error"})
	assertEqual(t, "failed span errors", spanErrors(failed), []string{"stop_failed"})
	ok := e.tel.findSpan(t, "usecase.cleanup_expired_sandbox", map[string]any{
		"chat.id":      cleanChatID.String(),
		"session.id":   sessionCleanID.String(),
		"container.id": "container-clean",
	}, map[string]any{"sandbox.result": "cleaned"})
	assertEqual(t, "cleaned span errors", spanErrors(ok), []string(nil))
}
