// Package wsimage provides file system images that bound what a folder can hold: a sparse
// file formatted as ext4 (by running mkfs.ext4: no Go library makes one) and loop-mounted
// on the folder, so that writes past the image's size or its inode count fail with ENOSPC
// in whoever writes, while the host's file system only ever gives the image what it
// holds. It needs root, mkfs.ext4 (e2fsprogs), mount (util-linux) and loop devices; Check
// says whether this host has them, by trying.
package wsimage

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// MinBytes is the smallest image Make makes: below it, ext4's own metadata (journal,
// inode tables) leaves next to nothing for files.
const MinBytes = 8 << 20

// reservedInodes are the inodes ext4 keeps for itself (the first 11; the root folder is
// one of them), which Make adds to the files asked for.
const reservedInodes = 11

// Tools names the programs an image is made and mounted with; empty: mkfs.ext4 and
// mount, looked up in PATH.
type Tools struct {
	Mkfs     string
	MountCmd string
}

func (t Tools) mkfs() string  { return orName(t.Mkfs, "mkfs.ext4") }
func (t Tools) mount() string { return orName(t.MountCmd, "mount") }

func orName(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Make creates the image file img (which must not exist) of size bytes, sparse, and
// formats it as ext4 with no blocks reserved for root, with room for about files files
// and folders (mkfs rounds the inode count to whole inode-table blocks in each block
// group; 0: mkfs's default for the size), its root folder owned by uid:gid. On failure it
// removes img.
func (t Tools) Make(img string, size, files int64, uid, gid int) error {
	if size < MinBytes {
		return fmt.Errorf("wsimage: %s: size %d is below the least, %d", img, size, MinBytes)
	}
	f, err := os.OpenFile(img, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("wsimage: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		args := []string{"-q", "-F", "-m", "0", "-E", fmt.Sprintf("nodiscard,root_owner=%d:%d", uid, gid)}
		if files > 0 {
			args = append(args, "-N", strconv.FormatInt(files+reservedInodes, 10))
		}
		err = run(t.mkfs(), append(args, img)...)
	}
	if err != nil {
		_ = os.Remove(img)
		return fmt.Errorf("wsimage: make %s: %w", img, err)
	}
	return nil
}

// Mount loop-mounts the image img on the folder dir (nosuid, nodev). The loop device is
// freed by the kernel once the file system is unmounted (mount sets autoclear).
func (t Tools) Mount(img, dir string) error {
	if err := run(t.mount(), "-t", "ext4", "-o", "loop,nosuid,nodev,noatime", img, dir); err != nil {
		return fmt.Errorf("wsimage: mount %s on %s: %w", img, dir, err)
	}
	return nil
}

// Unmount unmounts the file system on dir; when something still holds it (a process
// working in it), it is detached at once and unmounted by the kernel when the last holder
// lets go. A dir that is no mount point is no error.
func Unmount(dir string) error {
	err := unix.Unmount(dir, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(dir, unix.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("wsimage: unmount %s: %w", dir, err)
	}
	return nil
}

// Mount is a loop-mounted image: the folder it is mounted on and its image file.
type Mount struct {
	Dir   string
	Image string
}

// Mounts lists the loop mounts of this process's mount namespace whose image file lies
// in the folder images, as /proc/self/mountinfo and the loop devices' backing files tell.
func Mounts(images string) ([]Mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("wsimage: %w", err)
	}
	prefix := filepath.Clean(images) + "/"
	var out []Mount
	for line := range strings.SplitSeq(string(b), "\n") {
		// id parent major:minor root mount-point options [optional...] - type source super
		pre, post, ok := strings.Cut(line, " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(tail) < 2 || !strings.HasPrefix(tail[1], "/dev/loop") {
			continue
		}
		img := backingFile(filepath.Base(tail[1]))
		if !strings.HasPrefix(img, prefix) {
			continue
		}
		out = append(out, Mount{Dir: unescape(fields[4]), Image: img})
	}
	return out, nil
}

// MountedOn returns the image loop-mounted on dir ("" when dir is not such a mount
// point), among those lying in the folder images.
func MountedOn(images, dir string) (string, error) {
	mounts, err := Mounts(images)
	if err != nil {
		return "", err
	}
	img := ""
	for _, m := range mounts {
		if m.Dir == dir {
			img = m.Image // the last one listed is the one on top
		}
	}
	return img, nil
}

// backingFile is the file behind the loop device dev (loop0), "" if it has none.
func backingFile(dev string) string {
	b, err := os.ReadFile(filepath.Join("/sys/block", dev, "loop", "backing_file"))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
}

// unescape undoes mountinfo's octal escapes (\040 for a space, ...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Check says whether this host can bound folders with images, by making, mounting,
// writing and removing a small one in the folder dir (which must exist); the error says
// what is missing.
func (t Tools) Check(dir string) error {
	if os.Geteuid() != 0 {
		return errors.New("wsimage: mounting an image needs root, and this process is not root")
	}
	for _, tool := range []string{t.mkfs(), t.mount()} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("wsimage: %s is missing (install e2fsprogs and mount): %w", tool, err)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return fmt.Errorf("wsimage: no loop devices: %w", err)
	}
	probe, err := os.MkdirTemp(dir, ".probe-")
	if err != nil {
		return fmt.Errorf("wsimage: %w", err)
	}
	defer os.RemoveAll(probe)
	img, mnt := filepath.Join(probe, "fs.img"), filepath.Join(probe, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return fmt.Errorf("wsimage: %w", err)
	}
	if err := t.Make(img, MinBytes, 16, 0, 0); err != nil {
		return err
	}
	if err := t.Mount(img, mnt); err != nil {
		return err
	}
	werr := os.WriteFile(filepath.Join(mnt, "probe"), []byte("ok"), 0o600)
	if err := Unmount(mnt); err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("wsimage: writing in a mounted image: %w", werr)
	}
	return nil
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
