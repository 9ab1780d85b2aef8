package wsimage_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sandboxd/sandboxd/internal/wsimage"
)

// supported skips the test on a host that cannot mount images, or fails it when CI=true.
func supported(t *testing.T) {
	t.Helper()
	if err := (wsimage.Tools{}).Check(t.TempDir()); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v, and CI=true", err)
		}
		t.Skip(err)
	}
}

func TestAnImageBoundsItsFolder(t *testing.T) {
	supported(t)
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "ws.img"), filepath.Join(dir, "ws")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	var tools wsimage.Tools
	if err := tools.Make(img, 16<<20, 40, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := tools.Make(img, 16<<20, 0, 0, 0); err == nil {
		t.Error("Make over an existing image succeeded")
	}
	if err := tools.Mount(img, mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wsimage.Unmount(mnt) })
	var st syscall.Stat_t
	if err := syscall.Stat(mnt, &st); err != nil || st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("root of the image: %d:%d, %v; want 1234:5678", st.Uid, st.Gid, err)
	}
	mounts, err := wsimage.Mounts(dir)
	if err != nil || len(mounts) != 1 || mounts[0] != (wsimage.Mount{Dir: mnt, Image: img}) {
		t.Errorf("Mounts = %v, %v; want %s on %s", mounts, err, img, mnt)
	}
	if got, err := wsimage.MountedOn(dir, mnt); err != nil || got != img {
		t.Errorf("MountedOn = %q, %v", got, err)
	}
	if others, _ := wsimage.Mounts(t.TempDir()); len(others) != 0 {
		t.Errorf("Mounts of another folder = %v", others)
	}

	// Bytes: a write past the size fails with ENOSPC; the image holds no more than its size.
	f, err := os.Create(filepath.Join(mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	var written int64
	for err == nil {
		var n int
		n, err = f.Write(buf)
		written += int64(n)
	}
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) || written > 16<<20 || written < 8<<20 {
		t.Errorf("wrote %d bytes, then %v; want ENOSPC after 8-16 MiB", written, err)
	}
	var ist syscall.Stat_t
	if err := syscall.Stat(img, &ist); err != nil || ist.Blocks*512 > 16<<20 {
		t.Errorf("the image takes %d bytes of the host, %v; want at most its size", ist.Blocks*512, err)
	}
	if err := os.Remove(filepath.Join(mnt, "big")); err != nil {
		t.Fatal(err)
	}

	// Files: the inode count bounds them (rounded by mkfs to its inode tables).
	made := 0
	for ; made < 1000; made++ {
		if err = os.WriteFile(filepath.Join(mnt, fmt.Sprint(made)), nil, 0o600); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) || made < 20 || made > 200 {
		t.Errorf("made %d files, then %v; want ENOSPC after about 40", made, err)
	}

	if err := wsimage.Unmount(mnt); err != nil {
		t.Fatal(err)
	}
	if mounts, err := wsimage.Mounts(dir); err != nil || len(mounts) != 0 {
		t.Errorf("Mounts after Unmount = %v, %v", mounts, err)
	}
	if err := wsimage.Unmount(mnt); err != nil {
		t.Errorf("Unmount of a folder that is no mount point: %v", err)
	}
	// Mounted again, it holds what it held.
	if err := tools.Mount(img, mnt); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "0")); err != nil {
		t.Errorf("a file of the first mount: %v", err)
	}
}

func TestCheckSaysWhatIsMissing(t *testing.T) {
	supported(t)
	dir := t.TempDir()
	err := wsimage.Tools{Mkfs: filepath.Join(dir, "no-mkfs")}.Check(dir)
	if err == nil || !strings.Contains(err.Error(), "no-mkfs") {
		t.Errorf("Check without mkfs = %v, want it named", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("Check left %v", entries)
	}
	if err := (wsimage.Tools{}).Check(dir); err != nil {
		t.Error(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("Check left %v", entries)
	}
	if err := (wsimage.Tools{}).Make(filepath.Join(dir, "small.img"), wsimage.MinBytes-1, 0, 0, 0); err == nil {
		t.Error("Make below MinBytes succeeded")
	}
}
