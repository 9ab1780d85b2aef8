package lifecycle_test

import (
	"context"
	"errors"
	"maps"
	"slices"
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

// fakeWorkspaces is a volume root in memory: folder path → last use.
type fakeWorkspaces struct {
	mu      sync.Mutex
	folders map[string]time.Time
}

func (w *fakeWorkspaces) Derive(_ string, chat uuid.UUID) string { return "/vol/" + chat.String() }

func (w *fakeWorkspaces) Folders(context.Context) ([]lifecycle.Folder, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []lifecycle.Folder
	for _, p := range slices.Sorted(maps.Keys(w.folders)) {
		f := lifecycle.Folder{Path: p, LastUsed: w.folders[p]}
		if id, err := uuid.Parse(p[len("/vol/"):]); err == nil {
			f.ChatID = id
		}
		out = append(out, f)
	}
	return out, nil
}

func (w *fakeWorkspaces) Touch(_ context.Context, path string, t time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.folders[path]; ok {
		w.folders[path] = t
	}
	return nil
}

func (w *fakeWorkspaces) RemoveFolder(_ context.Context, path string) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.folders[path]
	delete(w.folders, path)
	return ok, nil
}

func (w *fakeWorkspaces) has(path string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.folders[path]
	return ok
}

func workspaceService(t *testing.T, store lifecycle.Store, ws *fakeWorkspaces, clock lifecycle.Clock, retention time.Duration, provided bool) (*lifecycle.Service, *telemetry) {
	t.Helper()
	tel := newTelemetry(t)
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Locker: keylock.New(), Runtime: &lifecycletest.Runtime{}, TTL: ttl, Clock: clock,
		Workspaces: ws, WorkspaceRetention: retention, RemoveProvidedWorkspaces: provided,
		Tracer: tel.tp, MeterProvider: tel.mp,
	})
	if err != nil {
		t.Fatal(err)
	}
	return svc, tel
}

func TestDeleteWorkspaceIsRefusedWhileTheChatHasASandbox(t *testing.T) {
	ctx := context.Background()
	ws := &fakeWorkspaces{folders: map[string]time.Time{}}
	store := memstore.New()
	svc, tel := workspaceService(t, store, ws, lifecycletest.NewClock(now), 0, false)
	folder := ws.Derive("", chatID)
	ws.folders[folder] = now

	if _, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: chatID, VolumeHostPath: folder}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.DeleteWorkspace(ctx, chatID); !errors.Is(err, sandbox.ErrConflict) {
		t.Fatalf("delete workspace with a live sandbox = %v, want ErrConflict", err)
	}
	other := sandbox.WithTenant(ctx, "globex")
	if res, err := svc.DeleteWorkspace(other, chatID); err != nil || res.Result != lifecycle.NotFound {
		t.Fatalf("another tenant's delete workspace = %+v, %v; want not_found, as a chat without a folder", res, err)
	}
	if !ws.has(folder) {
		t.Fatal("the refused delete removed the folder")
	}
	if _, err := svc.Delete(ctx, chatID); err != nil {
		t.Fatal(err)
	}
	res, err := svc.DeleteWorkspace(ctx, chatID)
	if err != nil || res.Result != lifecycle.Removed || res.Path != folder || ws.has(folder) {
		t.Fatalf("delete workspace = %+v, %v; want %s removed", res, err, folder)
	}
	if res, err := svc.DeleteWorkspace(ctx, chatID); err != nil || res.Result != lifecycle.NotFound {
		t.Fatalf("second delete workspace = %+v, %v; want not_found", res, err)
	}
	if got := tel.counter(t, "sandbox.workspace.removed.total", map[string]any{"reason": "request"}); got != 1 {
		t.Errorf("removed on request counted %d, want 1", got)
	}
}

func TestRetentionRemovesOnlyUnusedOldChatFolders(t *testing.T) {
	ctx := context.Background()
	const retention = 24 * time.Hour
	clock := lifecycletest.NewClock(now)
	old := now.Add(-retention - time.Minute)
	var (
		live, ended, recent, idle = uuid.New(), uuid.New(), uuid.New(), uuid.New()
		ws                        = &fakeWorkspaces{folders: map[string]time.Time{}}
		provided                  = "/vol/project"
	)
	for _, c := range []uuid.UUID{live, ended, recent, idle} {
		ws.folders[ws.Derive("", c)] = old
	}
	ws.folders[ws.Derive("", recent)] = now.Add(-time.Hour)
	ws.folders[provided] = old
	store := memstore.New()
	svc, tel := workspaceService(t, store, ws, clock, retention, false)
	for _, c := range []uuid.UUID{live, ended} {
		if _, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: c, VolumeHostPath: ws.Derive("", c)}); err != nil {
			t.Fatal(err)
		}
	}
	// ended's sandbox ends now: its folder's last use is now, however old it was.
	if _, err := svc.Delete(ctx, ended); err != nil {
		t.Fatal(err)
	}

	removed, err := svc.SweepWorkspaces(ctx)
	if err != nil || len(removed) != 1 || removed[0].Path != ws.Derive("", idle) {
		t.Fatalf("sweep removed %+v, %v; want only the idle chat's folder", removed, err)
	}
	for _, p := range []string{ws.Derive("", live), ws.Derive("", ended), ws.Derive("", recent), provided} {
		if !ws.has(p) {
			t.Errorf("%s was removed", p)
		}
	}
	if got := tel.counter(t, "sandbox.workspace.removed.total", map[string]any{"reason": "retention"}); got != 1 {
		t.Errorf("removed by retention counted %d, want 1", got)
	}

	// Past the retention again, the ended chat's folder goes; a provided one only when
	// the policy says so.
	clock.Advance(retention + time.Hour)
	if _, err := svc.Delete(ctx, live); err != nil { // ends now: kept
		t.Fatal(err)
	}
	if removed, err := svc.SweepWorkspaces(ctx); err != nil || len(removed) != 2 {
		t.Fatalf("second sweep removed %+v, %v; want ended's and recent's", removed, err)
	}
	if !ws.has(provided) || !ws.has(ws.Derive("", live)) {
		t.Error("the provided folder or the just-ended chat's went")
	}
	all, _ := workspaceService(t, store, ws, clock, retention, true)
	if removed, err := all.SweepWorkspaces(ctx); err != nil || len(removed) != 1 || removed[0].Path != provided {
		t.Fatalf("sweep with provided folders removed %+v, %v; want the provided one", removed, err)
	}
}

func TestNoRetentionRemovesNothing(t *testing.T) {
	ws := &fakeWorkspaces{folders: map[string]time.Time{"/vol/" + chatID.String(): now.AddDate(-1, 0, 0)}}
	svc, _ := workspaceService(t, memstore.New(), ws, lifecycletest.NewClock(now), 0, true)
	if removed, err := svc.SweepWorkspaces(context.Background()); err != nil || len(removed) != 0 {
		t.Fatalf("sweep without retention removed %v, %v", removed, err)
	}
}
