package hostfiles_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/hostfiles"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/workspace"
)

func setup(t *testing.T) (*hostfiles.Files, sandbox.Session, string) {
	t.Helper()
	ws := filepath.Join(t.TempDir(), "ws")
	if err := os.Mkdir(ws, 0o700); err != nil {
		t.Fatal(err)
	}
	s := sandbox.Session{ID: uuid.New(), ChatID: uuid.New(), VolumeHostPath: ws, AgentID: "a"}
	return hostfiles.New(hostfiles.Config{}), s, ws
}

func TestBinaryRoundTrip(t *testing.T) {
	f, s, ws := setup(t)
	data := make([]byte, 1<<20+7)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	fi, err := f.WriteFile(context.Background(), s, "/workspace/deep/er/blob.bin", bytes.NewReader(data), 2<<20)
	if err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	if fi.Path != "deep/er/blob.bin" || fi.Size != int64(len(data)) {
		t.Fatalf("info = %+v", fi)
	}
	onDisk, err := os.ReadFile(filepath.Join(ws, "deep/er/blob.bin"))
	if err != nil || !bytes.Equal(onDisk, data) {
		t.Fatalf("file on disk differs (err %v)", err)
	}
	rc, fi2, err := f.OpenFile(context.Background(), s, "deep/er/blob.bin")
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, data) || fi2.Size != int64(len(data)) {
		t.Fatalf("read back %d bytes (err %v), want %d", len(got), err, len(data))
	}
	list, err := f.ListDir(context.Background(), s, "/workspace/deep/er")
	if err != nil || len(list) != 1 || list[0].Path != "deep/er/blob.bin" {
		t.Fatalf("ListDir = %+v, %v", list, err)
	}
	top, err := f.ListDir(context.Background(), s, "")
	if err != nil || len(top) != 1 || top[0].Path != "deep" || !top[0].Mode.IsDir() {
		t.Fatalf("ListDir of the workspace = %+v, %v", top, err)
	}
}

func TestOverTheLimitLeavesNothing(t *testing.T) {
	f, s, ws := setup(t)
	_, err := f.WriteFile(context.Background(), s, "big", strings.NewReader(strings.Repeat("x", 101)), 100)
	if !errors.Is(err, sandbox.ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	entries, _ := os.ReadDir(ws)
	if len(entries) != 0 {
		t.Fatalf("workspace holds %v after a refused write", entries)
	}
	// Exactly the limit is fine.
	if _, err := f.WriteFile(context.Background(), s, "ok", strings.NewReader(strings.Repeat("x", 100)), 100); err != nil {
		t.Fatalf("write of exactly the limit: %v", err)
	}
}

func TestEscapesAreRefused(t *testing.T) {
	f, s, ws := setup(t)
	outside := filepath.Join(filepath.Dir(ws), "outside")
	if err := os.Mkdir(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	// What a sandbox could plant in its own workspace.
	must(t, os.Symlink("/", filepath.Join(ws, "x")))
	must(t, os.Symlink(outside, filepath.Join(ws, "out")))
	must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(ws, "link-to-secret")))
	must(t, os.Symlink("../outside/new", filepath.Join(ws, "dangling-out")))
	must(t, syscall.Mkfifo(filepath.Join(ws, "fifo"), 0o600))

	ctx := context.Background()
	for _, p := range []string{"x/etc/passwd", "out/secret", "link-to-secret", "../outside/secret", "/workspace/../outside/secret", "a\x00b", "fifo", "x"} {
		if rc, _, err := f.OpenFile(ctx, s, p); !errors.Is(err, sandbox.ErrInvalid) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("OpenFile(%q): err = %v, want ErrInvalid", p, err)
		}
	}
	for _, p := range []string{"x/tmp/evil", "out/evil", "out/sub/evil", "../outside/evil", "/workspace/../outside/evil"} {
		if _, err := f.WriteFile(ctx, s, p, strings.NewReader("evil"), 100); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("WriteFile(%q): err = %v, want ErrInvalid", p, err)
		}
	}
	for _, p := range []string{"x", "out", "../outside"} {
		if _, err := f.ListDir(ctx, s, p); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("ListDir(%q): err = %v, want ErrInvalid", p, err)
		}
	}
	// Writing to the name of a planted link replaces the link itself, never its target.
	for _, p := range []string{"link-to-secret", "dangling-out"} {
		if _, err := f.WriteFile(ctx, s, p, strings.NewReader("mine"), 100); err != nil {
			t.Errorf("WriteFile(%q): %v", p, err)
		}
		st, err := os.Lstat(filepath.Join(ws, p))
		if err != nil || !st.Mode().IsRegular() {
			t.Errorf("%s is not a regular file in the workspace after the write (%v)", p, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "s" {
		t.Fatal("the file outside the workspace was changed")
	}
	for _, p := range []string{"evil", "new"} {
		if _, err := os.Stat(filepath.Join(outside, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a file %q was made outside the workspace", p)
		}
	}
	if _, err := os.Stat("/tmp/evil"); err == nil {
		t.Error("/tmp/evil was written through the planted symlink")
	}
}

func TestMissingFileIsNotFound(t *testing.T) {
	f, s, _ := setup(t)
	if _, _, err := f.OpenFile(context.Background(), s, "nope"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestWrittenFilesBelongToTheSandboxUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	ws := t.TempDir()
	s := sandbox.Session{ID: uuid.New(), VolumeHostPath: ws}
	f := hostfiles.New(hostfiles.Config{Owner: func(string) *hostfiles.Owner { return &hostfiles.Owner{UID: 1000, GID: 1000} }})
	if _, err := f.WriteFile(context.Background(), s, "d/f", strings.NewReader("x"), 10); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"d", "d/f"} {
		st, err := os.Stat(filepath.Join(ws, p))
		if err != nil {
			t.Fatal(err)
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 1000 || sys.Gid != 1000 {
			t.Errorf("%s owned by %d:%d, want 1000:1000", p, sys.Uid, sys.Gid)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A sandbox can plant a named pipe where a folder is expected: listing it must be refused
// at once, not block sandboxd until some writer opens the pipe.
func TestListingAPipeDoesNotHang(t *testing.T) {
	f, s, ws := setup(t)
	fifo := filepath.Join(ws, "fifo")
	must(t, syscall.Mkfifo(fifo, 0o600))
	done := make(chan error, 1)
	go func() {
		_, err := f.ListDir(context.Background(), s, "fifo")
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, sandbox.ErrInvalid) {
			t.Fatalf("ListDir of a pipe: err = %v, want ErrInvalid", err)
		}
	case <-time.After(5 * time.Second):
		// Free the blocked open before failing, so the test ends.
		if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		<-done
		t.Fatal("ListDir of a pipe blocked until a writer came")
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

// A sandbox can fill a folder with more names than sandboxd should hold in memory: the
// listing is refused past MaxListEntries, and an empty folder is an empty list.
func TestListingIsBounded(t *testing.T) {
	f, s, ws := setup(t)
	must(t, os.Mkdir(filepath.Join(ws, "many"), 0o700))
	must(t, os.Mkdir(filepath.Join(ws, "empty"), 0o700))
	for i := range hostfiles.MaxListEntries + 1 {
		must(t, os.WriteFile(filepath.Join(ws, "many", strconv.Itoa(i)), nil, 0o600))
	}
	if list, err := f.ListDir(context.Background(), s, "many"); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("ListDir of %d entries: %d listed, err = %v, want ErrInvalid", hostfiles.MaxListEntries+1, len(list), err)
	}
	must(t, os.Remove(filepath.Join(ws, "many", "0")))
	if list, err := f.ListDir(context.Background(), s, "many"); err != nil || len(list) != hostfiles.MaxListEntries {
		t.Fatalf("ListDir of exactly the limit: %d listed, err = %v", len(list), err)
	}
	if list, err := f.ListDir(context.Background(), s, "empty"); err != nil || len(list) != 0 {
		t.Fatalf("ListDir of an empty folder = %v, %v", list, err)
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
