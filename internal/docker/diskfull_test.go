package docker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/hostfiles"
	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/sqlitestore"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
	"github.com/sandboxd/sandboxd/internal/testing/loopfs"
)

type movableClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *movableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *movableClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// A real small file system holds both the volume root and the SQLite registry; it is
// filled to the last byte by something else. Creates are refused before anything is
// made, uploads leave nothing, the sweep still stops and forgets an expired sandbox, and
// everything works again once space is freed.
func TestAFullVolumeRefusesCreatesAndWedgesNothing(t *testing.T) {
	fsys := loopfs.Mount(t, 64<<20)
	const floor = 8 << 20
	ctx := context.Background()
	e := newEnv(t, func(c *docker.Config) {
		c.VolumeRoot = filepath.Join(fsys, "vol")
		c.MinFreeBytes = floor
		if err := os.Mkdir(c.VolumeRoot, 0o755); err != nil {
			t.Fatal(err)
		}
	})
	if err := os.Mkdir(filepath.Join(fsys, "registry"), 0o700); err != nil {
		t.Fatal(err)
	}
	store, err := sqlitestore.Open(ctx, filepath.Join(fsys, "registry", "sandboxd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	clock := &movableClock{now: time.Now()}
	files := hostfiles.New(hostfiles.Config{Open: e.rt.OpenWorkspace, MountPoint: func(string) string { return "/workspace" }})
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Locker: keylock.New(), Runtime: e.rt, Admitter: e.rt, Files: files,
		TTL: time.Hour, Clock: clock,
	})
	if err != nil {
		t.Fatal(err)
	}

	first, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: uuid.New()})
	if err != nil {
		t.Fatalf("create on a volume with room: %v", err)
	}
	dockertest.RemoveAtCleanup(t, e.cli, first.ContainerID)

	filled := loopfs.Fill(t, fsys, "filler")
	t.Logf("filled the volume with %d bytes", filled)

	// A create is refused, before anything is made.
	second := uuid.New()
	_, _, err = svc.Create(ctx, lifecycle.CreateRequest{ChatID: second})
	if !errors.Is(err, sandbox.ErrFull) || !strings.Contains(err.Error(), "volume root") {
		t.Fatalf("create on a full volume = %v, want ErrFull naming the volume root", err)
	}
	if _, err := os.Lstat(filepath.Join(e.root, second.String())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused create left its folder: %v", err)
	}
	if ids := dockertest.Containers(t, e.cli, docker.LabelChatID+"="+second.String()); len(ids) != 0 {
		t.Errorf("the refused create left containers %v", ids)
	}
	if n, err := store.Count(ctx); err != nil || n != 1 {
		t.Errorf("registry holds %d (%v), want the first sandbox only", n, err)
	}

	// An upload into the live sandbox's workspace fails whole.
	_, err = svc.WriteFile(ctx, first.ChatID, "big.bin", strings.NewReader(strings.Repeat("x", 1<<20)))
	if !errors.Is(err, sandbox.ErrFull) {
		t.Errorf("upload to a full volume = %v, want ErrFull", err)
	}
	if entries, err := os.ReadDir(first.VolumeHostPath); err != nil || len(entries) != 0 {
		t.Errorf("the failed upload left %v (%v) in the workspace", entries, err)
	}

	// The sweep still stops and forgets the expired sandbox.
	clock.Advance(2 * time.Hour)
	cleaned, err := svc.CleanupExpired(ctx)
	if err != nil || len(cleaned) != 1 || cleaned[0].ID != first.ID {
		t.Fatalf("sweep on a full volume cleaned %v, %v; want the first sandbox", cleaned, err)
	}
	e.assertGone(t, first.ContainerID)
	if n, err := store.Count(ctx); err != nil || n != 0 {
		t.Errorf("registry holds %d (%v) after the sweep, want 0", n, err)
	}

	// Freed, it works again.
	if err := os.Remove(filepath.Join(fsys, "filler")); err != nil {
		t.Fatal(err)
	}
	again, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: second})
	if err != nil {
		t.Fatalf("create once space is freed: %v", err)
	}
	dockertest.RemoveAtCleanup(t, e.cli, again.ContainerID)
	if _, err := svc.WriteFile(ctx, second, "notes.txt", strings.NewReader("room again")); err != nil {
		t.Errorf("upload once space is freed: %v", err)
	}
}
