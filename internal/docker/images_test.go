package docker_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
	"github.com/sandboxd/sandboxd/internal/workspace"
	"github.com/sandboxd/sandboxd/internal/wsimage"
)

// boundedEnv is an env whose default profile bounds workspaces to 16 MiB; the agent
// "missing" names an image the engine does not have.
func boundedEnv(t *testing.T) env {
	t.Helper()
	if err := (wsimage.Tools{}).Check(t.TempDir()); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v, and CI=true", err)
		}
		t.Skip(err)
	}
	return newEnv(t, func(c *docker.Config) {
		c.Profiles = testProfiles(t, profile.Agents{
			Default:  profile.Spec{Image: dockertest.ImageRef, WorkspaceMaxBytes: "16m"},
			Profiles: map[string]profile.Spec{"missing": {Image: "sandboxd-test-no-such-image:none"}},
		})
	})
}

func mountedOn(t *testing.T, e env, folder string) string {
	t.Helper()
	img, err := wsimage.MountedOn(filepath.Join(e.root, workspace.ImagesDir), folder)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// A bounded create that fails, before or after its container is made, leaves no mount,
// no image and no folder behind.
func TestAFailedBoundedCreateLeavesNothing(t *testing.T) {
	e := boundedEnv(t)
	ctx := context.Background()

	spec := newSpec("")
	spec.AgentID = "missing"
	volume, err := e.rt.Admit(ctx, "", spec.ChatID, spec.AgentID, "")
	if err != nil {
		t.Fatal(err)
	}
	spec.VolumeHostPath = volume
	if _, err := e.rt.Create(ctx, spec); err == nil {
		t.Fatal("create with a missing image succeeded")
	}
	assertNothingOf(t, e, volume)

	// The container is made, then goes before its start.
	spec = newSpec("")
	spec.VolumeHostPath = e.rt.Derive("", spec.ChatID)
	docker.SetBeforeStart(e.rt, func(_ context.Context, id string) {
		if got := mountedOn(t, e, spec.VolumeHostPath); got == "" {
			t.Error("no image mounted before the container starts")
		}
		// Its container exists: the mount is in use.
		if released, err := e.rt.ReleaseMounts(ctx); err != nil || len(released) != 0 {
			t.Errorf("ReleaseMounts during a create = %v, %v", released, err)
		}
		_, _ = e.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true})
	})
	if _, err := e.rt.Create(ctx, spec); err == nil {
		t.Fatal("create whose container went before its start succeeded")
	}
	docker.SetBeforeStart(e.rt, nil)
	assertNothingOf(t, e, spec.VolumeHostPath)
	e.assertNoContainers(t)
}

func assertNothingOf(t *testing.T, e env, volume string) {
	t.Helper()
	if got := mountedOn(t, e, volume); got != "" {
		t.Errorf("%s left mounted on %s", got, volume)
	}
	for _, p := range []string{volume, filepath.Join(e.root, workspace.ImagesDir, filepath.Base(volume)+".img")} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
}

// A folder the caller provides is refused under a bound (its files would be hidden, or
// left unbounded), at admission and at create; a chat's own folder that already holds
// files from before the bound is refused at create, and left as it was.
func TestABoundRefusesFoldersItCannotBound(t *testing.T) {
	e := boundedEnv(t)
	ctx := context.Background()
	provided := filepath.Join(e.root, "provided")
	mkdir(t, provided)
	if err := os.Chown(provided, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	spec := newSpec(provided)
	if _, err := e.rt.Admit(ctx, "", spec.ChatID, "", provided); !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), "workspace_max_bytes") {
		t.Errorf("Admit of a provided folder = %v, want ErrInvalid naming workspace_max_bytes", err)
	}
	if got, ok := e.rt.Resolve("", spec.ChatID, "", provided); ok {
		t.Errorf("Resolve of a provided folder under a bound = %q, want it left to Admit", got)
	}
	if _, err := e.rt.Create(ctx, spec); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("Create on a provided folder = %v, want ErrInvalid", err)
	}

	spec = newSpec("")
	spec.VolumeHostPath = e.rt.Derive("", spec.ChatID)
	mkdir(t, spec.VolumeHostPath)
	if err := os.Chown(spec.VolumeHostPath, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(spec.VolumeHostPath, "old"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.Create(ctx, spec); !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), "already holds files") {
		t.Errorf("Create on a chat folder with files = %v, want ErrInvalid", err)
	}
	if b, err := os.ReadFile(filepath.Join(spec.VolumeHostPath, "old")); err != nil || string(b) != "x" || mountedOn(t, e, spec.VolumeHostPath) != "" {
		t.Errorf("the folder after the refusal: %q, %v", b, err)
	}
	e.assertNoContainers(t)
}

// ReleaseMounts unmounts an image no container uses, and leaves alone one whose lock is
// held (a create between its mount and its container) and one a sandbox uses.
func TestReleaseMountsUnmountsOnlyWhatNoOneUses(t *testing.T) {
	e := boundedEnv(t)
	ctx := context.Background()
	root, err := workspace.NewRoot(e.root)
	if err != nil {
		t.Fatal(err)
	}
	live := e.create(t, newSpec(""))
	stray, busy := filepath.Join(e.root, "stray"), filepath.Join(e.root, "busy")
	for _, folder := range []string{stray, busy} {
		mkdir(t, folder)
		img, _, err := root.LockImage(folder, true)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := img.Attach(wsimage.Tools{}, workspace.Quota{Bytes: 16 << 20}, workspace.User{UID: 1000, GID: 1000}); err != nil {
			t.Fatal(err)
		}
		img.Unlock()
		t.Cleanup(func() { _ = wsimage.Unmount(folder) })
	}
	held, _, err := root.LockImage(busy, true)
	if err != nil {
		t.Fatal(err)
	}
	released, err := e.rt.ReleaseMounts(ctx)
	held.Unlock()
	if err != nil || !slices.Equal(released, []string{stray}) {
		t.Errorf("ReleaseMounts = %v, %v; want %s alone", released, err, stray)
	}
	if mountedOn(t, e, stray) != "" || mountedOn(t, e, busy) == "" || mountedOn(t, e, live.VolumeHostPath) == "" {
		t.Errorf("after ReleaseMounts: stray %q, busy %q, live %q", mountedOn(t, e, stray), mountedOn(t, e, busy), mountedOn(t, e, live.VolumeHostPath))
	}
	if released, err := e.rt.ReleaseMounts(ctx); err != nil || !slices.Equal(released, []string{busy}) {
		t.Errorf("ReleaseMounts once the lock is free = %v, %v; want %s", released, err, busy)
	}

	// The live one goes with its sandbox.
	if err := e.rt.Stop(ctx, live.ContainerID); err != nil {
		t.Fatal(err)
	}
	if got := mountedOn(t, e, live.VolumeHostPath); got != "" {
		t.Errorf("%s still mounted after Stop", got)
	}
}

// A bound the host cannot enforce is refused when the runtime is made, saying why.
func TestNewRefusesABoundItCannotEnforce(t *testing.T) {
	ps := testProfiles(t, profile.Agents{Profiles: map[string]profile.Spec{"a": {WorkspaceMaxBytes: "1g"}}})
	_, err := docker.New(docker.Config{Instance: "x", VolumeRoot: t.TempDir(), Profiles: ps,
		Images: wsimage.Tools{Mkfs: "/nonexistent/mkfs.ext4"}})
	if err == nil || !strings.Contains(err.Error(), "workspace_max_bytes") || !strings.Contains(err.Error(), "/nonexistent/mkfs.ext4") {
		t.Errorf("New without mkfs = %v, want a refusal naming the key and the tool", err)
	}
}

// A chat's bounded folder cannot be provided to another chat, even under a profile
// without a bound: its files are in the image, which the owner's next sandbox mounts.
func TestABoundedFolderIsNoOtherChatsWorkspace(t *testing.T) {
	boundedEnv(t) // skips or fails where images cannot be made
	e := newEnv(t, func(c *docker.Config) {
		c.Profiles = testProfiles(t, profile.Agents{
			Default:  profile.Spec{Image: dockertest.ImageRef},
			Profiles: map[string]profile.Spec{"bounded": {WorkspaceMaxBytes: "16m"}},
		})
	})
	ctx := context.Background()
	spec := newSpec("")
	spec.AgentID = "bounded"
	owner := e.create(t, spec)
	if err := e.rt.Stop(ctx, owner.ContainerID); err != nil {
		t.Fatal(err)
	}
	other := newSpec(owner.VolumeHostPath)
	if _, err := e.rt.Admit(ctx, "", other.ChatID, "", owner.VolumeHostPath); !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), "bounded workspace") {
		t.Errorf("Admit of another chat's bounded folder = %v, want ErrInvalid", err)
	}
	if _, err := e.rt.Create(ctx, other); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("Create on another chat's bounded folder = %v, want ErrInvalid", err)
	}
	e.assertNoContainers(t)
}
