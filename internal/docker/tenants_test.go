package docker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/hostfiles"
	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/sqlitestore"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
)

// tenantEnv is a service on the real engine and a real SQLite registry, called as the
// default tenant (def) or as tenant acme.
type tenantEnv struct {
	env
	svc       *lifecycle.Service
	def, acme context.Context
}

func newTenantEnv(t *testing.T) tenantEnv {
	t.Helper()
	e := newEnv(t, nil)
	ctx := context.Background()
	store, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "sandboxd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Locker: keylock.New(), Runtime: e.rt, Admitter: e.rt, Workspaces: e.rt,
		Files: hostfiles.New(hostfiles.Config{Open: e.rt.OpenWorkspace, MountPoint: func(string) string { return "/workspace" }}),
		TTL:   time.Hour, Clock: &movableClock{now: time.Now()},
		Tenants: map[string]lifecycle.TenantLimits{"acme": {}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tenantEnv{env: e, svc: svc, def: ctx, acme: sandbox.WithTenant(ctx, "acme")}
}

func (e tenantEnv) create(t *testing.T, ctx context.Context, chat uuid.UUID, folder string) (sandbox.Session, error) {
	t.Helper()
	s, _, err := e.svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat, VolumeHostPath: folder})
	if err == nil {
		dockertest.RemoveAtCleanup(t, e.cli, s.ContainerID)
	}
	return s, err
}

func (e tenantEnv) mustCreate(t *testing.T, ctx context.Context, chat uuid.UUID, folder string) sandbox.Session {
	t.Helper()
	s, err := e.create(t, ctx, chat, folder)
	if err != nil {
		t.Fatalf("Create(%s, %q): %v", chat, folder, err)
	}
	return s
}

func (e tenantEnv) delete(t *testing.T, ctx context.Context, chat uuid.UUID) {
	t.Helper()
	if _, err := e.svc.Delete(ctx, chat); err != nil {
		t.Fatalf("Delete(%s): %v", chat, err)
	}
}

// A tenant's derived folders lie in its own part of the volume root, the default
// tenant's where they always did; a tenant names no folder outside its part, nor the
// folder of the parts, and reaches only its own part's folders with the workspace delete.
func TestEachTenantsWorkspacesLieInItsOwnPart(t *testing.T) {
	e := newTenantEnv(t)
	part := filepath.Join(e.root, ".tenants", "acme")

	chatA := uuid.New()
	a := e.mustCreate(t, e.acme, chatA, "")
	if want := filepath.Join(part, chatA.String()); a.VolumeHostPath != want {
		t.Fatalf("acme's derived workspace = %s, want %s", a.VolumeHostPath, want)
	}
	if out, code := dockertest.Exec(t, e.cli, a.ContainerID, "sh", "-c", "echo acme > /workspace/mark && id -u"); code != 0 || out != "1000\n" {
		t.Fatalf("write in acme's workspace: %q (exit %d)", out, code)
	}
	if b, err := os.ReadFile(filepath.Join(part, chatA.String(), "mark")); err != nil || string(b) != "acme\n" {
		t.Fatalf("the file the sandbox wrote, on the host: %q, %v", b, err)
	}
	chatB := uuid.New()
	b := e.mustCreate(t, e.def, chatB, "")
	if want := filepath.Join(e.root, chatB.String()); b.VolumeHostPath != want {
		t.Fatalf("the default tenant's derived workspace = %s, want %s (the layout it always had)", b.VolumeHostPath, want)
	}
	// The files API reaches acme's workspace.
	if _, err := e.svc.WriteFile(e.acme, chatA, "up.txt", strings.NewReader("x")); err != nil {
		t.Fatalf("upload into acme's workspace: %v", err)
	}

	shared := filepath.Join(e.root, "shared")
	mkdir(t, shared)
	mkdir(t, filepath.Join(part, "own"))
	before := tree(t, e.root)
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		folder string
		want   error
	}{
		{"acme names a folder of the default part", e.acme, shared, sandbox.ErrInvalid},
		{"acme names the default tenant's chat's folder", e.acme, b.VolumeHostPath, sandbox.ErrInvalid},
		{"the default tenant names acme's folder", e.def, filepath.Join(part, "own"), sandbox.ErrInvalid},
		{"the default tenant names acme's chat's folder", e.def, a.VolumeHostPath, sandbox.ErrInvalid},
		{"the default tenant names the parts' folder", e.def, filepath.Join(e.root, ".tenants"), sandbox.ErrInvalid},
		{"acme names its own part", e.acme, part, sandbox.ErrInvalid},
	} {
		if _, err := e.create(t, tc.ctx, uuid.New(), tc.folder); !errors.Is(err, tc.want) {
			t.Errorf("%s: Create = %v, want %v", tc.name, err, tc.want)
		}
	}
	if after := tree(t, e.root); !slices.Equal(before, after) {
		t.Errorf("refused creates changed the volume root:\nbefore %v\nafter  %v", before, after)
	}
	// acme's own folder is fine.
	e.mustCreate(t, e.acme, uuid.New(), filepath.Join(part, "own"))

	// The workspace delete reaches the caller's part only: acme's delete of the default
	// tenant's chat B finds nothing there and leaves B's folder alone.
	e.delete(t, e.def, chatB)
	e.delete(t, e.acme, chatA)
	if res, err := e.svc.DeleteWorkspace(e.acme, chatB); err != nil || res.Result != lifecycle.NotFound {
		t.Fatalf("acme deletes the default tenant's chat's workspace: %+v, %v; want not_found", res, err)
	}
	if _, err := os.Stat(b.VolumeHostPath); err != nil {
		t.Fatalf("the default tenant's folder after acme's workspace delete: %v", err)
	}
	if res, err := e.svc.DeleteWorkspace(e.def, chatA); err != nil || res.Result != lifecycle.NotFound {
		t.Fatalf("the default tenant deletes acme's chat's workspace: %+v, %v; want not_found", res, err)
	}
	if res, err := e.svc.DeleteWorkspace(e.acme, chatA); err != nil || res.Result != lifecycle.Removed || res.Path != a.VolumeHostPath {
		t.Fatalf("acme deletes its chat's workspace: %+v, %v; want removed %s", res, err, a.VolumeHostPath)
	}
	if _, err := os.Stat(a.VolumeHostPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("acme's folder after its delete: %v", err)
	}
	if res, err := e.svc.DeleteWorkspace(e.def, chatB); err != nil || res.Result != lifecycle.Removed {
		t.Fatalf("the default tenant deletes its chat's workspace: %+v, %v", res, err)
	}

	// The retention sweep sees the folders of every part.
	folders, err := e.rt.Folders(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range folders {
		paths = append(paths, f.Path)
	}
	slices.Sort(paths)
	if want := []string{filepath.Join(part, "own"), shared}; !slices.Equal(paths, want) {
		t.Errorf("Folders = %v, want %v", paths, want)
	}
}

// A chat may not use a folder that is another chat's derived workspace, nor one another
// chat's sandbox uses: 409 workspace_in_use, nothing made; two chats that ask for one
// folder at once get it once.
func TestAFolderIsOneChatsWorkspace(t *testing.T) {
	e := newTenantEnv(t)
	ctx := e.def

	owner := e.mustCreate(t, ctx, uuid.New(), "")
	project := filepath.Join(e.root, "project")
	mkdir(t, project)
	first := uuid.New()
	e.mustCreate(t, ctx, first, project)
	before := tree(t, e.root)
	for name, folder := range map[string]string{
		"another chat's derived folder": owner.VolumeHostPath,
		"another chat's sandbox's":      project,
	} {
		s, err := e.create(t, ctx, uuid.New(), folder)
		if !errors.Is(err, sandbox.ErrWorkspaceInUse) {
			t.Errorf("%s: Create = %+v, %v; want ErrWorkspaceInUse", name, s, err)
		}
	}
	// A folder named as a chat that has none yet is that chat's to come.
	unborn := filepath.Join(e.root, uuid.NewString())
	mkdir(t, unborn)
	if _, err := e.create(t, ctx, uuid.New(), unborn); !errors.Is(err, sandbox.ErrWorkspaceInUse) {
		t.Errorf("a folder named as another chat: Create = %v, want ErrWorkspaceInUse", err)
	}
	if err := os.Remove(unborn); err != nil {
		t.Fatal(err)
	}
	if after := tree(t, e.root); !slices.Equal(before, after) {
		t.Errorf("refused creates changed the volume root:\nbefore %v\nafter  %v", before, after)
	}
	if n := len(managed(t, e.env)); n != 2 {
		t.Errorf("%d sandboxes after the refused creates, want 2", n)
	}
	// Reuse by its own chat is fine; once that chat's sandbox is gone the folder is free.
	if _, outcome, err := e.svc.Create(ctx, lifecycle.CreateRequest{ChatID: first, VolumeHostPath: project}); err != nil || outcome != lifecycle.Reused {
		t.Fatalf("the folder's own chat creates again: %s, %v; want reused", outcome, err)
	}
	e.delete(t, ctx, first)
	e.mustCreate(t, ctx, uuid.New(), project)

	// Two chats race for one free folder: one gets it.
	race := filepath.Join(e.root, "race")
	mkdir(t, race)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		won    int
		inUse  int
		others []error
	)
	for range 4 {
		wg.Go(func() {
			_, err := e.create(t, ctx, uuid.New(), race)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.Is(err, sandbox.ErrWorkspaceInUse):
				inUse++
			default:
				others = append(others, err)
			}
		})
	}
	wg.Wait()
	if won != 1 || inUse != 3 || others != nil {
		t.Fatalf("4 chats racing for one folder: %d made, %d in use, errors %v; want 1 and 3", won, inUse, others)
	}
}

func managed(t *testing.T, e env) []lifecycle.Container {
	t.Helper()
	cs, err := e.rt.Managed(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
