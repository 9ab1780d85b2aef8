package docker_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
	"github.com/sandboxd/sandboxd/internal/workspace"
)

// tree lists every path under dir (links not followed), to show that nothing was created.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		out = append(out, p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// mkdir makes the folder p as a caller would prepare a workspace: the sandbox user's.
func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 1000, 1000); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func TestHostileWorkspacePathsAreRefusedWithNothingCreated(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	outside := t.TempDir() // where a link would lead; must stay empty
	mkdir(t, e.root+"/good")
	mkdir(t, e.root+"-evil/x")
	symlink(t, "/", e.root+"/toroot")
	symlink(t, outside, e.root+"/tooutside")

	cases := map[string]struct {
		path  string
		setup func(spec lifecycle.CreateSpec) // plants something for this chat
	}{
		"traversal":            {path: e.root + "/good/../../../etc"},
		"encoded traversal":    {path: e.root + "/%2e%2e/%2e%2e/etc"},
		"encoded slash":        {path: e.root + "/good%2f..%2f..%2f"},
		"sibling prefix":       {path: e.root + "-evil/x"},
		"outside the root":     {path: outside},
		"the root itself":      {path: e.root},
		"symlink to /":         {path: e.root + "/toroot"},
		"through symlink to /": {path: e.root + "/toroot/tmp"},
		"symlink outside":      {path: e.root + "/tooutside"},
		"missing folder":       {path: e.root + "/missing"},
		"NUL":                  {path: e.root + "/good\x00"},
		"relative":             {path: "good"},
		"dot relative":         {path: "./" + filepath.Base(e.root) + "/good"},
		"empty, derived folder is a link to /": {path: "", setup: func(spec lifecycle.CreateSpec) {
			symlink(t, "/", filepath.Join(e.root, spec.ChatID.String()))
		}},
		"empty, derived folder is a link outside": {path: "  ", setup: func(spec lifecycle.CreateSpec) {
			symlink(t, outside, filepath.Join(e.root, spec.ChatID.String()))
		}},
		"empty, derived folder is a file": {path: "", setup: func(spec lifecycle.CreateSpec) {
			if err := os.WriteFile(filepath.Join(e.root, spec.ChatID.String()), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			spec := newSpec(tc.path)
			if tc.setup != nil {
				tc.setup(spec)
			}
			before := tree(t, e.root)
			if _, err := e.rt.Admit(ctx, "", spec.ChatID, "", tc.path); !errors.Is(err, sandbox.ErrInvalid) {
				t.Errorf("Admit(%q) = %v, want ErrInvalid", tc.path, err)
			}
			// Create checks again on its own, as it must when the lifecycle has no admitter.
			if s, err := e.rt.Create(ctx, spec); !errors.Is(err, sandbox.ErrInvalid) {
				t.Errorf("Create(%q) = %+v, %v, want ErrInvalid", tc.path, s, err)
			}
			if after := tree(t, e.root); !slices.Equal(before, after) {
				t.Errorf("volume root changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
	e.assertNoContainers(t)
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("something was made outside the root: %v", entries)
	}
}

func TestALinkPlantedAfterAdmitIsRefusedAtCreate(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	outside := t.TempDir()

	t.Run("given folder", func(t *testing.T) {
		folder := e.root + "/mine"
		mkdir(t, folder)
		spec := newSpec(folder)
		volume, err := e.rt.Admit(ctx, "", spec.ChatID, "", folder)
		if err != nil {
			t.Fatalf("Admit: %v", err)
		}
		// The sandbox of another chat, which writes in the volume root's folders, swaps it.
		if err := os.Remove(folder); err != nil {
			t.Fatal(err)
		}
		symlink(t, "/", folder)
		spec.VolumeHostPath = volume
		if _, err := e.rt.Create(ctx, spec); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("Create = %v, want ErrInvalid", err)
		}
	})
	t.Run("derived folder", func(t *testing.T) {
		spec := newSpec("")
		volume, err := e.rt.Admit(ctx, "", spec.ChatID, "", "")
		if err != nil {
			t.Fatalf("Admit: %v", err)
		}
		symlink(t, outside, volume)
		spec.VolumeHostPath = volume
		if _, err := e.rt.Create(ctx, spec); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("Create = %v, want ErrInvalid", err)
		}
	})
	t.Run("between container create and start", func(t *testing.T) {
		folder := e.root + "/late"
		mkdir(t, folder)
		var made string
		docker.SetBeforeStart(e.rt, func(_ context.Context, id string) {
			made = id
			if err := os.Remove(folder); err != nil {
				t.Error(err)
			}
			symlink(t, outside, folder)
		})
		defer docker.SetBeforeStart(e.rt, nil)
		if _, err := e.rt.Create(ctx, newSpec(folder)); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("Create = %v, want ErrInvalid", err)
		}
		if made == "" {
			t.Fatal("no container was made before the check")
		}
		e.assertGone(t, made)
	})
	e.assertNoContainers(t)
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("something was made outside the root: %v", entries)
	}
}

func TestAdmitHasNoSideEffect(t *testing.T) {
	e := newEnv(t, nil)
	spec := newSpec("")
	volume, err := e.rt.Admit(context.Background(), "", spec.ChatID, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(e.root, spec.ChatID.String()); volume != want {
		t.Errorf("Admit = %q, want the derived %q", volume, want)
	}
	if _, err := os.Lstat(volume); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Admit created the derived folder: %v", err)
	}
	e.assertNoContainers(t)
}

// Resolve places a request's folder as Admit does, without the file system: the derived
// folder (the tenant's part not made by Resolve), a provided folder in Admit's clean form;
// another spelling of a folder is left to Admit.
func TestResolveAgreesWithAdmit(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	provided := filepath.Join(e.root, "provided")
	if err := os.Mkdir(provided, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(provided, 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	chat := newSpec("").ChatID
	for _, tc := range []struct{ tenant, folder string }{{"", ""}, {"acme", ""}, {"", provided}} {
		resolved, ok := e.rt.Resolve(tc.tenant, chat, "", tc.folder)
		if !ok {
			t.Errorf("Resolve(%q, %q) cannot tell, want the folder", tc.tenant, tc.folder)
			continue
		}
		if _, err := os.Lstat(filepath.Join(e.root, workspace.TenantsDir)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Resolve(%q, %q) made the tenants' folder: %v", tc.tenant, tc.folder, err)
		}
		admitted, err := e.rt.Admit(ctx, tc.tenant, chat, "", tc.folder)
		if err != nil {
			t.Fatalf("Admit(%q, %q): %v", tc.tenant, tc.folder, err)
		}
		if resolved != admitted {
			t.Errorf("Resolve(%q, %q) = %q, Admit = %q", tc.tenant, tc.folder, resolved, admitted)
		}
		_ = os.RemoveAll(filepath.Join(e.root, workspace.TenantsDir))
	}
	for _, folder := range []string{provided + "/", e.root + "/./provided", "provided"} {
		if got, ok := e.rt.Resolve("", chat, "", folder); ok {
			t.Errorf("Resolve(%q) = %q, want it left to Admit", folder, got)
		}
	}
}

// A folder the sandbox user cannot write in (made by root in the volume root) is refused,
// naming its owner, at admission and at create, with nothing made; one its group or
// everyone may write in is accepted, and the sandbox writes there.
func TestAWorkspaceTheSandboxUserCannotWriteIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a folder the sandbox user does not own")
	}
	e := newEnv(t, nil)
	ctx := context.Background()
	rootOwned := filepath.Join(e.root, "root-owned")
	if err := os.Mkdir(rootOwned, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := newSpec(rootOwned)
	_, err := e.rt.Admit(ctx, "", spec.ChatID, "", rootOwned)
	if !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), "owned by 0:0 with mode 0755") || !strings.Contains(err.Error(), "1000:1000") {
		t.Fatalf("Admit = %v, want ErrInvalid naming the owner 0:0 and the sandbox user", err)
	}
	if _, err := e.rt.Create(ctx, spec); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("Create = %v, want ErrInvalid", err)
	}
	// The chat's derived folder, made by root before sandboxd could: the same.
	derived := newSpec("")
	if err := os.Mkdir(e.root+"/"+derived.ChatID.String(), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.Admit(ctx, "", derived.ChatID, "", ""); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("Admit of a root-owned derived folder = %v, want ErrInvalid", err)
	}
	e.assertNoContainers(t)
	if fi, err := os.Stat(rootOwned); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("the refused folder changed: %v", err)
	}

	groupWritable := filepath.Join(e.root, "group-writable")
	if err := os.Mkdir(groupWritable, 0o770); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(os.Chown(groupWritable, 0, 1000), os.Chmod(groupWritable, 0o770)); err != nil {
		t.Fatal(err)
	}
	s := e.create(t, newSpec(groupWritable))
	if out, code := dockertest.Exec(t, e.cli, s.ContainerID, "sh", "-c", "echo hi > /workspace/f && cat /workspace/f"); code != 0 || out != "hi\n" {
		t.Fatalf("write in a group-writable workspace: %q (exit %d)", out, code)
	}
}
