package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/wsimage"
)

// ImagesDir is the folder of the volume root that holds the file system images of bounded
// workspaces: the workspace <root>/<name> is bounded by <root>/.images/<name>.img, which
// is loop-mounted on it while a sandbox uses it (internal/wsimage), beside the lock file
// <name>.lock. No workspace path may lie in it.
const ImagesDir = ".images"

// Quota bounds a workspace: the size of its image and its files (0: mkfs's default).
type Quota struct{ Bytes, Files int64 }

// ImagesDir returns <root>/.images, which need not exist.
func (r *Root) ImagesDir() string { return filepath.Join(r.dir, ImagesDir) }

// Image is the image of one workspace folder, locked (flock) against the other holders
// of its lock, in this process or another: attaching, detaching and removing an image
// happen under it, so that no one unmounts what another is about to use.
type Image struct {
	folder string // the workspace folder
	img    string // its image file
	lock   *os.File
}

// LockImage takes the lock of the image of the workspace folder path (which need not have
// an image), waiting for it when wait is set; without wait it reports false when another
// holds it. Errors are Check's, or the lock file's.
func (r *Root) LockImage(path string, wait bool) (*Image, bool, error) {
	rel, err := r.workspaceRel(path)
	if err != nil {
		return nil, false, err
	}
	base := filepath.Join(r.dir, ImagesDir, rel)
	if err := os.Mkdir(r.ImagesDir(), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, false, fmt.Errorf("workspace: %w", err)
	}
	if fi, err := os.Lstat(r.ImagesDir()); err != nil || !fi.IsDir() {
		return nil, false, fmt.Errorf("workspace: %s is not a folder (%v)", r.ImagesDir(), err)
	}
	// A workspace deeper in the root (<tenant>/<chat>) has its image as deep in .images.
	if err := os.MkdirAll(filepath.Dir(base), 0o700); err != nil {
		return nil, false, fmt.Errorf("workspace: %w", err)
	}
	f, err := os.OpenFile(base+".lock", os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("workspace: %w", err)
	}
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("workspace: lock %s.lock: %w", base, err)
	}
	return &Image{folder: filepath.Join(r.dir, rel), img: base + ".img", lock: f}, true, nil
}

// Unlock lets the image go.
func (m *Image) Unlock() { _ = m.lock.Close() }

// Folder is the workspace folder.
func (m *Image) Folder() string { return m.folder }

// Path is the image file.
func (m *Image) Path() string { return m.img }

// Exists reports whether the workspace has an image.
func (m *Image) Exists() (bool, error) {
	_, err := os.Lstat(m.img)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("workspace: %w", err)
	}
	return true, nil
}

// Mounted reports whether the image is mounted on its workspace folder. Another file
// system mounted there is an error.
func (m *Image) Mounted() (bool, error) {
	on, err := wsimage.MountedOn(filepath.Dir(m.img), m.folder)
	switch {
	case err != nil:
		return false, fmt.Errorf("workspace: %w", err)
	case on != "" && on != m.img:
		return false, fmt.Errorf("workspace: %s has %s mounted on it, not its own image %s", m.folder, on, m.img)
	}
	return on == m.img, nil
}

// Attach mounts the image on its workspace folder unless it is already, first making it
// when the workspace has none and q bounds it: an image of q.Bytes with room for about
// q.Files files, whose root folder is u's, mode 0700, as Ensure makes folders. A folder
// that already holds files cannot get a new image (it would hide them): the error wraps
// sandbox.ErrInvalid. With no image and no bound, nothing is done. It reports whether it
// mounted the image (for Detach to undo) and whether it made it (for Remove).
func (m *Image) Attach(tools wsimage.Tools, q Quota, u User) (mounted, made bool, err error) {
	if on, err := m.Mounted(); err != nil || on {
		return false, false, err
	}
	exists, err := m.Exists()
	if err != nil || (!exists && q.Bytes <= 0) {
		return false, false, err
	}
	if !exists {
		entries, err := os.ReadDir(m.folder)
		if err != nil {
			return false, false, fmt.Errorf("workspace: %w", err)
		}
		if len(entries) > 0 {
			return false, false, fmt.Errorf("workspace folder %s already holds files (%s, ...) and has no image to bound it: remove the chat's workspace first, or use a profile without workspace_max_bytes: %w",
				m.folder, entries[0].Name(), sandbox.ErrInvalid)
		}
		if err := tools.Make(m.img, q.Bytes, q.Files, u.UID, u.GID); err != nil {
			return false, false, fmt.Errorf("workspace: %w", err)
		}
	}
	if err := tools.Mount(m.img, m.folder); err != nil {
		if !exists {
			_ = os.Remove(m.img)
		}
		return false, false, fmt.Errorf("workspace: %w", err)
	}
	if !exists {
		// mkfs gives the root folder mode 0755 and a lost+found owned by root.
		err := os.Chmod(m.folder, 0o700)
		if rmErr := os.Remove(filepath.Join(m.folder, "lost+found")); err == nil && !errors.Is(rmErr, fs.ErrNotExist) {
			err = rmErr
		}
		if err != nil {
			_ = wsimage.Unmount(m.folder)
			_ = os.Remove(m.img)
			return false, false, fmt.Errorf("workspace: prepare %s: %w", m.folder, err)
		}
	}
	return true, !exists, nil
}

// Detach unmounts the image from its workspace folder; it reports false when it was not
// mounted.
func (m *Image) Detach() (bool, error) {
	on, err := m.Mounted()
	if err != nil || !on {
		return false, err
	}
	if err := wsimage.Unmount(m.folder); err != nil {
		return false, fmt.Errorf("workspace: %w", err)
	}
	return true, nil
}

// Remove detaches the image and removes it; it reports false when there was none.
func (m *Image) Remove() (bool, error) {
	if _, err := m.Detach(); err != nil {
		return false, err
	}
	err := os.Remove(m.img)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("workspace: %w", err)
	}
	// Still locked: a concurrent locker sees it gone or locked.
	_ = os.Remove(strings.TrimSuffix(m.img, ".img") + ".lock")
	return err == nil, nil
}

// HasImage reports whether the workspace folder path has an image (false for a path
// Check refuses).
func (r *Root) HasImage(path string) bool {
	rel, err := r.workspaceRel(path)
	if err != nil {
		return false
	}
	_, err = os.Lstat(filepath.Join(r.dir, ImagesDir, rel+".img"))
	return err == nil
}
