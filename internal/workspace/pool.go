package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// PoolDir is the folder of the volume root where the workspaces of pre-started (pooled)
// sandboxes wait, as <root>/.pool/<name>, until a chat claims one by renaming it to
// <root>/<chat id>. No workspace path may lie in it: Check, CheckCreatable and Ensure
// refuse them all.
const PoolDir = ".pool"

// PoolPath returns <root>/.pool/name without checking or creating anything.
func (r *Root) PoolPath(name string) string {
	return filepath.Join(r.dir, PoolDir, name)
}

// MakePooled creates the folder <root>/.pool/name (and <root>/.pool, mode 0700, if it is
// missing) with mode 0700, hands it to uid:gid as Ensure does, and returns its path. The
// folder must not exist yet.
func (r *Root) MakePooled(name string, uid, gid int) (string, error) {
	if err := poolName(name); err != nil {
		return "", err
	}
	pool, err := r.openPool(true)
	if err != nil {
		return "", err
	}
	defer pool.Close()
	if err := pool.Mkdir(name, 0o700); err != nil {
		return "", fmt.Errorf("workspace: create %s: %w", r.PoolPath(name), err)
	}
	if uid >= 0 && (uid != os.Geteuid() || gid != os.Getegid()) {
		if err := pool.Lchown(name, uid, gid); err != nil {
			_ = pool.Remove(name)
			return "", fmt.Errorf("workspace: hand %s to %d:%d: %w", r.PoolPath(name), uid, gid, err)
		}
	}
	return r.PoolPath(name), nil
}

// ClaimPooled renames <root>/.pool/name to the chat's folder <root>/<chat id> and returns
// the latter. It never replaces anything: when the chat's folder exists (even empty) the
// error wraps fs.ErrExist and nothing changes. A sandbox that mounts the pooled folder
// keeps it through the rename, since a bind mount holds the directory, not its name.
func (r *Root) ClaimPooled(name string, chatID uuid.UUID) (string, error) {
	if err := r.renamePooled(name, chatID, true); err != nil {
		return "", err
	}
	return r.Derive(chatID), nil
}

// UnclaimPooled undoes ClaimPooled: it renames <root>/<chat id> back to <root>/.pool/name,
// which must not exist.
func (r *Root) UnclaimPooled(name string, chatID uuid.UUID) error {
	return r.renamePooled(name, chatID, false)
}

// RemovePooled removes <root>/.pool/name and everything in it; a missing one is no error.
func (r *Root) RemovePooled(name string) error {
	if err := poolName(name); err != nil {
		return err
	}
	pool, err := r.openPool(false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := pool.RemoveAll(name); err != nil {
		return fmt.Errorf("workspace: remove %s: %w", r.PoolPath(name), err)
	}
	return nil
}

// Pooled lists the names in <root>/.pool (none when it does not exist).
func (r *Root) Pooled() ([]string, error) {
	pool, err := r.openPool(false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	f, err := pool.Open(".")
	if err != nil {
		return nil, fmt.Errorf("workspace: list %s: %w", filepath.Join(r.dir, PoolDir), err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("workspace: list %s: %w", filepath.Join(r.dir, PoolDir), err)
	}
	return names, nil
}

// LockPooled takes an exclusive lock (flock) on the file <root>/.pool/name without
// waiting, creating the file when create is set. It reports false when another holder
// has it (in this process or another), and fs.ErrNotExist when the file is missing and
// create is not set. unlock releases the lock, removing the file first when remove is set.
func (r *Root) LockPooled(name string, create bool) (unlock func(remove bool), ok bool, err error) {
	if err := poolName(name); err != nil {
		return nil, false, err
	}
	pool, err := r.openPool(create)
	if err != nil {
		return nil, false, err
	}
	defer pool.Close()
	flag := os.O_RDWR | unix.O_NOFOLLOW
	if create {
		flag |= os.O_CREATE
	}
	f, err := pool.OpenFile(name, flag, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("workspace: open %s: %w", r.PoolPath(name), err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("workspace: lock %s: %w", r.PoolPath(name), err)
	}
	path := r.PoolPath(name)
	return func(remove bool) {
		if remove {
			_ = os.Remove(path) // still locked: a concurrent locker sees it gone or locked
		}
		_ = f.Close()
	}, true, nil
}

// renamePooled renames <root>/.pool/name to <root>/<chat id> (claim) or back, with
// RENAME_NOREPLACE so that an existing target is never replaced, through directory file
// descriptors so that no link on the way is followed.
func (r *Root) renamePooled(name string, chatID uuid.UUID, claim bool) error {
	if err := poolName(name); err != nil {
		return err
	}
	rootFD, err := unix.Open(r.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("workspace: open volume root: %w: %w", sandbox.ErrUnavailable, err)
	}
	defer unix.Close(rootFD)
	poolFD, err := unix.Openat(rootFD, PoolDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("workspace: open %s: %w", filepath.Join(r.dir, PoolDir), err)
	}
	defer unix.Close(poolFD)
	from, fromFD, to, toFD := name, poolFD, chatID.String(), rootFD
	if !claim {
		from, fromFD, to, toFD = to, toFD, from, fromFD
	}
	if err := unix.Renameat2(fromFD, from, toFD, to, unix.RENAME_NOREPLACE); err != nil {
		err = &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
		return fmt.Errorf("workspace: %w", err)
	}
	return nil
}

// openPool opens <root>/.pool, refusing a link in its place; with create it makes it
// (mode 0700) when it is missing.
func (r *Root) openPool(create bool) (*os.Root, error) {
	root, err := r.open()
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if create {
		if err := root.Mkdir(PoolDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("workspace: create %s: %w", filepath.Join(r.dir, PoolDir), err)
		}
	}
	fi, err := root.Lstat(PoolDir)
	if err != nil {
		return nil, fmt.Errorf("workspace: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("workspace: %s is not a directory", filepath.Join(r.dir, PoolDir))
	}
	pool, err := root.OpenRoot(PoolDir)
	if err != nil {
		return nil, fmt.Errorf("workspace: open %s: %w", filepath.Join(r.dir, PoolDir), err)
	}
	return pool, nil
}

// poolName refuses a name that is not one plain path element.
func poolName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("workspace: pool entry %q is not a plain name: %w", name, sandbox.ErrInvalid)
	}
	return nil
}
