package hostfiles_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/hostfiles"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/workspace"
)

// The conformance suite of the file API, on the host: a workspace folder of its own per
// test, files given to the sandbox's user when the test may chown.
func TestFilesConformance(t *testing.T) {
	lifecycletest.TestFiles(t, func(t *testing.T) lifecycletest.FilesFixture {
		ws := filepath.Join(t.TempDir(), "ws")
		if err := os.Mkdir(ws, 0o755); err != nil {
			t.Fatal(err)
		}
		cfg, uid := hostfiles.Config{}, -1
		if os.Geteuid() == 0 {
			cfg.Owner = func(string) *hostfiles.Owner { return &hostfiles.Owner{UID: 1000, GID: 1000} }
			uid = 1000
		}
		s := sandbox.Session{ID: uuid.New(), ChatID: uuid.New(), VolumeHostPath: ws, AgentID: "a"}
		return lifecycletest.FilesFixture{Files: hostfiles.New(cfg), Session: s, Dir: ws, UID: uid}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Chat B's workspace lies in chat A's, so sandbox A can swap B's folder for a link to /
// after B's sandbox was made. B's file calls, through an Open that follows no link on
// the workspace's way, must then be refused rather than reach the host's root.
func TestWorkspaceSwappedForALinkIsRefused(t *testing.T) {
	vol := t.TempDir()
	wsA := filepath.Join(vol, "a")
	wsB := filepath.Join(wsA, "b")
	must(t, os.MkdirAll(wsB, 0o700))
	root, err := workspace.NewRoot(vol)
	if err != nil {
		t.Fatal(err)
	}
	f := hostfiles.New(hostfiles.Config{Open: root.Open})
	s := sandbox.Session{ID: uuid.New(), ChatID: uuid.New(), VolumeHostPath: wsB}
	ctx := context.Background()
	if _, err := f.WriteFile(ctx, s, "ok", strings.NewReader("x"), 10); err != nil {
		t.Fatalf("WriteFile before the swap: %v", err)
	}

	// What sandbox A does in its own workspace.
	must(t, os.Rename(wsB, filepath.Join(wsA, "b.old")))
	must(t, os.Symlink("/", wsB))

	if rc, _, err := f.OpenFile(ctx, s, "etc/passwd"); !errors.Is(err, sandbox.ErrInvalid) {
		if rc != nil {
			rc.Close()
		}
		t.Errorf("OpenFile through the swapped workspace: err = %v, want ErrInvalid", err)
	}
	if _, err := f.ListDir(ctx, s, ""); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("ListDir through the swapped workspace: err = %v, want ErrInvalid", err)
	}
	if _, err := f.WriteFile(ctx, s, "tmp/sandboxd-swap-evil", strings.NewReader("x"), 10); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("WriteFile through the swapped workspace: err = %v, want ErrInvalid", err)
	}
	if _, err := os.Lstat("/tmp/sandboxd-swap-evil"); err == nil {
		_ = os.Remove("/tmp/sandboxd-swap-evil")
		t.Error("/tmp/sandboxd-swap-evil was written through the swapped workspace")
	}
}

// An upload into a folder that was there before leaves that folder's owner alone: the
// client may have handed the sandbox a workspace with folders it must not change.
func TestUploadKeepsTheOwnerOfExistingFolders(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	ws := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(ws, "ro/in"), 0o755))
	s := sandbox.Session{ID: uuid.New(), VolumeHostPath: ws}
	f := hostfiles.New(hostfiles.Config{Owner: func(string) *hostfiles.Owner { return &hostfiles.Owner{UID: 1000, GID: 1000} }})
	if _, err := f.WriteFile(context.Background(), s, "ro/in/new/f", strings.NewReader("x"), 10); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]uint32{"ro": 0, "ro/in": 0, "ro/in/new": 1000, "ro/in/new/f": 1000} {
		st, err := os.Lstat(filepath.Join(ws, p))
		if err != nil {
			t.Fatal(err)
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != want || sys.Gid != want {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, sys.Uid, sys.Gid, want, want)
		}
	}
}

// An upload whose new folders cannot be given to the sandbox's user fails, and removes
// the folders it made: a failed write leaves nothing behind. The chown must fail for
// real, so the test runs as a user without the right to give files away (as root, it
// runs itself again as nobody).
func TestUploadFailsWhenItsFoldersCannotBeGivenToTheOwner(t *testing.T) {
	if os.Geteuid() == 0 {
		runAsNobody(t)
		return
	}
	ws := t.TempDir()
	must(t, os.Mkdir(filepath.Join(ws, "old"), 0o755))
	other := os.Getuid() + 1
	s := sandbox.Session{ID: uuid.New(), VolumeHostPath: ws}
	f := hostfiles.New(hostfiles.Config{Owner: func(string) *hostfiles.Owner { return &hostfiles.Owner{UID: other, GID: other} }})
	_, err := f.WriteFile(context.Background(), s, "old/new/sub/f", strings.NewReader("x"), 10)
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "chown") {
		t.Fatalf("WriteFile = %v, want the chown's permission error", err)
	}
	left, err := os.ReadDir(filepath.Join(ws, "old"))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("the failed write left %v in old", left)
	}
}

// runAsNobody runs the calling test again in a copy of the test binary, as nobody
// (65534), and fails unless it passes there.
func runAsNobody(t *testing.T) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "hostfiles-nobody-") // t.TempDir's parent is closed to nobody
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	copied := filepath.Join(dir, "hostfiles.test")
	must(t, os.WriteFile(copied, bin, 0o755))
	cmd := exec.Command(copied, "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
}
