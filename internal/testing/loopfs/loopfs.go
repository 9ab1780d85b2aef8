// Package loopfs gives tests a real, small file system: a sparse ext4 image, loop-mounted
// on a fresh folder and lazily unmounted (its loop device freed) when the test ends, even
// when it fails. Tests of what happens when a volume fills use it as the volume root or
// the registry's folder.
//
// It needs root, mkfs.ext4 (e2fsprogs) and loop devices: without them the test is
// skipped, or fails when CI=true (.ci/run installs e2fsprogs). It is imported by _test.go
// files only.
package loopfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Mount makes an ext4 file system of size bytes (no blocks reserved for root, so that
// root fills it as anyone would), mounts it on a new folder and returns that folder.
func Mount(t testing.TB, size int64) string {
	t.Helper()
	if reason := missing(); reason != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("loopfs: %s, and CI=true", reason)
		}
		t.Skipf("loopfs: %s", reason)
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard", img)
	run(t, "mount", "-o", "loop", img, mnt)
	// Registered after TempDir's removal, so it runs before it: lazily, since a
	// container or an open file may still hold the file system; the loop device, set up
	// with autoclear by mount, goes when the last holder does.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
			t.Errorf("loopfs: umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

// Fill writes dir/name until its file system has no room left and returns how many
// bytes it wrote. Removing the file frees them again.
func Fill(t testing.TB, dir, name string) int64 {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := io.Copy(f, zeros{})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("loopfs: filling %s: %v, want ENOSPC", dir, err)
	}
	return n
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func missing() string {
	if os.Geteuid() != 0 {
		return "not root: cannot mount"
	}
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("no %s (e2fsprogs, mount)", tool)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return "no loop devices (/dev/loop-control)"
	}
	return ""
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("loopfs: %s %v: %v: %s", name, args, err, out)
	}
}
