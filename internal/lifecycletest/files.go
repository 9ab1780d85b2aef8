package lifecycletest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// FilesFixture is one sandbox's file API under test.
type FilesFixture struct {
	Files   lifecycle.Files
	Session sandbox.Session
	// Dir is the sandbox's workspace folder on the host (mounted at /workspace in the
	// sandbox), where the suite plants what a sandbox could; its parent is the suite's
	// to write in too (what lies outside the workspace).
	Dir string
	// UID is the owner of the files and folders a write makes (-1: not checked).
	UID int
}

// MaxListEntries is the bound of a listing every Files keeps to.
const MaxListEntries = 10000

// TestFiles runs the conformance suite of the file API (lifecycle.Files): the host's
// (hostfiles) and the in-sandbox agent's run it alike. newFixture gives each test a
// sandbox of its own.
func TestFiles(t *testing.T, newFixture func(t *testing.T) FilesFixture) {
	ctx := context.Background()

	t.Run("BinaryRoundTrip", func(t *testing.T) {
		fx := newFixture(t)
		f, s := fx.Files, fx.Session
		data := make([]byte, 1<<20+7)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		fi, err := f.WriteFile(ctx, s, "/workspace/deep/er/blob.bin", bytes.NewReader(data), 2<<20)
		if err != nil {
			t.Fatalf("WriteFile: %v", err)
		}
		if fi.Path != "deep/er/blob.bin" || fi.Size != int64(len(data)) || !fi.Mode.IsRegular() {
			t.Fatalf("info = %+v", fi)
		}
		onDisk, err := os.ReadFile(filepath.Join(fx.Dir, "deep/er/blob.bin"))
		if err != nil || !bytes.Equal(onDisk, data) {
			t.Fatalf("file on disk differs (err %v)", err)
		}
		rc, fi2, err := f.OpenFile(ctx, s, "deep/er/blob.bin")
		if err != nil {
			t.Fatalf("OpenFile: %v", err)
		}
		got, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil || !bytes.Equal(got, data) || fi2.Size != int64(len(data)) || fi2.Path != "deep/er/blob.bin" {
			t.Fatalf("read back %d bytes (err %v), want %d; info %+v", len(got), err, len(data), fi2)
		}
		list, err := f.ListDir(ctx, s, "/workspace/deep/er")
		if err != nil || len(list) != 1 || list[0].Path != "deep/er/blob.bin" || list[0].Size != int64(len(data)) {
			t.Fatalf("ListDir = %+v, %v", list, err)
		}
		top, err := f.ListDir(ctx, s, "")
		if err != nil || len(top) != 1 || top[0].Path != "deep" || !top[0].Mode.IsDir() {
			t.Fatalf("ListDir of the workspace = %+v, %v", top, err)
		}
		// A read left half way is closed early, and the next goes on.
		rc, _, err = f.OpenFile(ctx, s, "deep/er/blob.bin")
		if err != nil {
			t.Fatalf("OpenFile again: %v", err)
		}
		if _, err := io.ReadFull(rc, make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
		_ = rc.Close()
		if _, err := f.WriteFile(ctx, s, "after", strings.NewReader("x"), 1); err != nil {
			t.Fatalf("WriteFile after a read closed early: %v", err)
		}
	})

	t.Run("OverTheLimitLeavesNothing", func(t *testing.T) {
		fx := newFixture(t)
		f, s := fx.Files, fx.Session
		_, err := f.WriteFile(ctx, s, "big", strings.NewReader(strings.Repeat("x", 101)), 100)
		if !errors.Is(err, sandbox.ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
		// Far over the limit: what is past it is not waited for.
		_, err = f.WriteFile(ctx, s, "bigger", io.LimitReader(zeros{}, 10<<20), 100)
		if !errors.Is(err, sandbox.ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
		if entries, _ := os.ReadDir(fx.Dir); len(entries) != 0 {
			t.Fatalf("workspace holds %v after a refused write", entries)
		}
		// Exactly the limit is fine.
		if _, err := f.WriteFile(ctx, s, "ok", strings.NewReader(strings.Repeat("x", 100)), 100); err != nil {
			t.Fatalf("write of exactly the limit: %v", err)
		}
	})

	t.Run("AFailedUploadLeavesNothing", func(t *testing.T) {
		fx := newFixture(t)
		broken := errors.New("the client went away")
		_, err := fx.Files.WriteFile(ctx, fx.Session, "d/half", io.MultiReader(strings.NewReader("part"), errReader{broken}), 100)
		if !errors.Is(err, broken) {
			t.Fatalf("err = %v, want the reader's", err)
		}
		entries, _ := os.ReadDir(filepath.Join(fx.Dir, "d"))
		for _, e := range entries {
			t.Errorf("%s left after a failed upload", e.Name())
		}
		if _, err := os.Stat(filepath.Join(fx.Dir, "d/half")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("d/half: %v, want none", err)
		}
	})

	t.Run("EscapesAreRefused", func(t *testing.T) {
		fx := newFixture(t)
		f, s, ws := fx.Files, fx.Session, fx.Dir
		outside := filepath.Join(filepath.Dir(ws), "outside-"+filepath.Base(ws))
		must(t, os.Mkdir(outside, 0o755))
		t.Cleanup(func() { _ = os.RemoveAll(outside) })
		must(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644))
		// What a sandbox could plant in its own workspace.
		must(t, os.Symlink("/", filepath.Join(ws, "x")))
		must(t, os.Symlink(outside, filepath.Join(ws, "out")))
		must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(ws, "link-to-secret")))
		must(t, os.Symlink("../"+filepath.Base(outside)+"/new", filepath.Join(ws, "dangling-out")))
		must(t, syscall.Mkfifo(filepath.Join(ws, "fifo"), 0o644))

		for _, p := range []string{"x/etc/passwd", "out/secret", "link-to-secret", "../outside/secret", "/workspace/../outside/secret", "a\x00b", "fifo", "x"} {
			if rc, _, err := f.OpenFile(ctx, s, p); !errors.Is(err, sandbox.ErrInvalid) {
				if rc != nil {
					rc.Close()
				}
				t.Errorf("OpenFile(%q): err = %v, want ErrInvalid", p, err)
			}
		}
		for _, p := range []string{"x/tmp/evil", "out/evil", "out/sub/evil", "../outside/evil", "/workspace/../outside/evil", "/workspace"} {
			if _, err := f.WriteFile(ctx, s, p, strings.NewReader("evil"), 100); !errors.Is(err, sandbox.ErrInvalid) {
				t.Errorf("WriteFile(%q): err = %v, want ErrInvalid", p, err)
			}
		}
		for _, p := range []string{"x", "out", "../outside", "fifo"} {
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
	})

	t.Run("MissingFileIsNotFound", func(t *testing.T) {
		fx := newFixture(t)
		if _, _, err := fx.Files.OpenFile(ctx, fx.Session, "nope"); !errors.Is(err, sandbox.ErrNotFound) {
			t.Fatalf("OpenFile: err = %v, want ErrNotFound", err)
		}
		if _, err := fx.Files.ListDir(ctx, fx.Session, "nope"); !errors.Is(err, sandbox.ErrNotFound) {
			t.Fatalf("ListDir: err = %v, want ErrNotFound", err)
		}
	})

	// A sandbox can plant a named pipe where a folder is expected: listing it must be
	// refused at once, not block until some writer opens the pipe.
	t.Run("ListingAPipeDoesNotHang", func(t *testing.T) {
		fx := newFixture(t)
		fifo := filepath.Join(fx.Dir, "fifo")
		must(t, syscall.Mkfifo(fifo, 0o644))
		done := make(chan error, 1)
		go func() {
			_, err := fx.Files.ListDir(ctx, fx.Session, "fifo")
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, sandbox.ErrInvalid) {
				t.Fatalf("ListDir of a pipe: err = %v, want ErrInvalid", err)
			}
		case <-time.After(30 * time.Second): // a hang is for ever; a slow machine is not one
			// Free a blocked open before failing, so the test ends. Non-blocking: when
			// nothing has the pipe open for reading (ListDir ended meanwhile), the open
			// fails at once instead of waiting for a reader that never comes.
			if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
			select {
			case <-done:
			case <-time.After(30 * time.Second):
			}
			t.Fatal("ListDir of a pipe blocked (30 s) until a writer came")
		}
	})

	// A sandbox can fill a folder with more names than should be held in memory: the
	// listing is refused past MaxListEntries, and an empty folder is an empty list.
	t.Run("ListingIsBounded", func(t *testing.T) {
		fx := newFixture(t)
		ws := fx.Dir
		must(t, os.Mkdir(filepath.Join(ws, "many"), 0o755))
		must(t, os.Mkdir(filepath.Join(ws, "empty"), 0o755))
		for i := range MaxListEntries + 1 {
			must(t, os.WriteFile(filepath.Join(ws, "many", strconv.Itoa(i)), nil, 0o644))
		}
		if list, err := fx.Files.ListDir(ctx, fx.Session, "many"); !errors.Is(err, sandbox.ErrInvalid) {
			t.Fatalf("ListDir of %d entries: %d listed, err = %v, want ErrInvalid", MaxListEntries+1, len(list), err)
		}
		must(t, os.Remove(filepath.Join(ws, "many", "0")))
		if list, err := fx.Files.ListDir(ctx, fx.Session, "many"); err != nil || len(list) != MaxListEntries {
			t.Fatalf("ListDir of exactly the limit: %d listed, err = %v", len(list), err)
		}
		if list, err := fx.Files.ListDir(ctx, fx.Session, "empty"); err != nil || len(list) != 0 {
			t.Fatalf("ListDir of an empty folder = %v, %v", list, err)
		}
	})

	t.Run("WrittenFilesBelongToTheSandboxUser", func(t *testing.T) {
		fx := newFixture(t)
		if fx.UID < 0 {
			t.Skip("the fixture gives files no owner")
		}
		if _, err := fx.Files.WriteFile(ctx, fx.Session, "d/f", strings.NewReader("x"), 10); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"d", "d/f"} {
			st, err := os.Stat(filepath.Join(fx.Dir, p))
			if err != nil {
				t.Fatal(err)
			}
			if sys := st.Sys().(*syscall.Stat_t); int(sys.Uid) != fx.UID {
				t.Errorf("%s owned by %d, want %d", p, sys.Uid, fx.UID)
			}
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// errReader fails every read with its error.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
