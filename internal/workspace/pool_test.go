package workspace_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/workspace"
)

func TestThePoolFolderIsNeverAWorkspace(t *testing.T) {
	root, vol := layout(t)
	if _, err := root.MakePooled("p1", -1, -1); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{vol + "/.pool", vol + "/.pool/p1", vol + "/./.pool/p1", vol + "/good/../.pool/p1"} {
		if _, err := root.Check(p); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("Check(%s) = %v, want ErrInvalid", p, err)
		}
		if _, err := root.CheckCreatable(p + "/x"); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("CheckCreatable(%s/x) = %v, want ErrInvalid", p, err)
		}
		if _, err := root.Ensure(p+"/new", -1, -1); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("Ensure(%s/new) = %v, want ErrInvalid", p, err)
		}
	}
	if _, err := os.Stat(vol + "/.pool/p1/new"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Ensure created in the pool: %v", err)
	}
	// A name that only starts like it is an ordinary folder.
	if _, err := root.CheckCreatable(vol + "/.poolx"); err != nil {
		t.Errorf("CheckCreatable(.poolx) = %v", err)
	}
}

func TestPooledFolderLifecycle(t *testing.T) {
	root, vol := layout(t)
	dir, err := root.MakePooled("p1", -1, -1)
	if err != nil || dir != vol+"/.pool/p1" {
		t.Fatalf("MakePooled = %q, %v", dir, err)
	}
	for _, p := range []string{vol + "/.pool", dir} {
		if fi, err := os.Lstat(p); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want a 0700 directory", p, fi.Mode(), err)
		}
	}
	if _, err := root.MakePooled("p1", -1, -1); !errors.Is(err, fs.ErrExist) {
		t.Errorf("MakePooled twice = %v, want ErrExist", err)
	}
	for _, bad := range []string{"", ".", "..", "a/b"} {
		if _, err := root.MakePooled(bad, -1, -1); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("MakePooled(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if err := os.WriteFile(dir+"/mark", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Claimed: the folder (same inode) is now the chat's.
	chat := uuid.New()
	before, _ := os.Stat(dir)
	got, err := root.ClaimPooled("p1", chat)
	if err != nil || got != root.Derive(chat) {
		t.Fatalf("ClaimPooled = %q, %v", got, err)
	}
	after, err := os.Stat(got)
	if err != nil || !os.SameFile(before, after) {
		t.Errorf("claimed folder is not the pooled one: %v", err)
	}
	if _, err := root.Check(got); err != nil {
		t.Errorf("claimed folder refused: %v", err)
	}

	// Back and forth, never replacing anything.
	if err := root.UnclaimPooled("p1", chat); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(dir + "/mark"); err != nil || string(b) != "x" {
		t.Errorf("unclaimed folder: %q, %v", b, err)
	}
	if err := os.Mkdir(root.Derive(chat), 0o700); err != nil { // an empty folder: rename(2) would replace it
		t.Fatal(err)
	}
	if _, err := root.ClaimPooled("p1", chat); !errors.Is(err, fs.ErrExist) {
		t.Errorf("claim onto an existing folder = %v, want ErrExist", err)
	}
	if _, err := os.Stat(dir + "/mark"); err != nil {
		t.Errorf("pooled folder after a refused claim: %v", err)
	}

	names, err := root.Pooled()
	if err != nil || !slices.Equal(names, []string{"p1"}) {
		t.Errorf("Pooled = %v, %v", names, err)
	}
	if err := root.RemovePooled("p1"); err != nil {
		t.Fatal(err)
	}
	if err := root.RemovePooled("p1"); err != nil {
		t.Errorf("removing a gone entry: %v", err)
	}
	if names, err := root.Pooled(); err != nil || len(names) != 0 {
		t.Errorf("Pooled after remove = %v, %v", names, err)
	}
}

func TestPoolFolderMustNotBeALink(t *testing.T) {
	root, vol := layout(t)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(vol, workspace.PoolDir)); err != nil {
		t.Fatal(err)
	}
	if _, err := root.MakePooled("p1", -1, -1); err == nil {
		t.Error("MakePooled through a linked .pool succeeded")
	}
	if err := os.Mkdir(outside+"/p1", 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := root.ClaimPooled("p1", uuid.New()); err == nil {
		t.Error("ClaimPooled through a linked .pool succeeded")
	}
	if _, err := os.Stat(outside + "/p1"); err != nil {
		t.Errorf("folder outside the root moved: %v", err)
	}
}

func TestLockPooled(t *testing.T) {
	root, _ := layout(t)
	if _, _, err := root.LockPooled("x.lock", false); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("lock of a missing file = %v, want ErrNotExist", err)
	}
	unlock, ok, err := root.LockPooled("x.lock", true)
	if err != nil || !ok {
		t.Fatalf("LockPooled = %v, %v", ok, err)
	}
	if _, ok, err := root.LockPooled("x.lock", false); ok || err != nil {
		t.Errorf("second lock = %v, %v, want held elsewhere", ok, err)
	}
	unlock(false)
	again, ok, err := root.LockPooled("x.lock", false)
	if err != nil || !ok {
		t.Fatalf("lock after release = %v, %v", ok, err)
	}
	again(true)
	if _, _, err := root.LockPooled("x.lock", false); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("lock file after unlock(true): %v, want gone", err)
	}
}
