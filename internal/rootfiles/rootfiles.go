// Package rootfiles is the file API's work inside one folder opened as an os.Root, so that
// no path and no symlink on it (even one the sandbox planted a moment ago) leads outside:
// writes through a temporary file renamed into place, reads of regular files only,
// bounded listings. The same rules hold on both sides of a sandbox: on the host
// (hostfiles, on the workspace folder) and inside it (the in-sandbox agent, on the
// workspace's mount point or /tmp). It imports the standard library only, as the agent's
// static binary should.
//
// Errors wrap one of this package's sentinels, which the callers translate (hostfiles into
// the domain's errors, the agent into agentproto's codes), beside the system's error.
package rootfiles

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

// The kinds of failure, each wrapped by the errors of this package's functions that have
// that cause; any other error is the system's own (an I/O error, a failed chown).
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("not allowed")         // a path out of the folder, a folder or a pipe for a file, ...
	ErrTooLarge = errors.New("over the size limit") // a write past its limit
	ErrFull     = errors.New("the workspace is full")
)

// MaxListEntries bounds what List holds in memory: a sandbox can fill a folder with
// millions of names, and neither sandboxd nor the agent must hold them all.
const MaxListEntries = 10000

// TmpArea is how paths in a sandbox's /tmp are named.
const TmpArea = "/tmp"

// UploadPrefix starts the name of a write's temporary file, beside its target.
const UploadPrefix = ".sandboxd-upload-"

// Resolve turns a client's path into one relative to the workspace, or to the sandbox's
// /tmp (tmp true) when tmpOpen says /tmp has a meaning of its own. mount is where the
// workspace is mounted in the sandbox: "/workspace/a" and "a" name the same file. ".."
// and NUL are refused (ErrInvalid), never cleaned away: a client asking for them is wrong.
func Resolve(name, mount string, tmpOpen bool) (rel string, tmp bool, err error) {
	if strings.ContainsRune(name, 0) {
		return "", false, fmt.Errorf("path contains NUL: %w", ErrInvalid)
	}
	mount = path.Clean(mount)
	p := name
	switch {
	case p == mount:
		p = "."
	case strings.HasPrefix(p, mount+"/"):
		p = strings.TrimPrefix(p, mount+"/")
	case tmpOpen && (p == TmpArea || strings.HasPrefix(p, TmpArea+"/")):
		p, tmp = strings.TrimPrefix(strings.TrimPrefix(p, TmpArea), "/"), true
	default:
		p = strings.TrimPrefix(p, "/")
	}
	if p == "" {
		p = "."
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", false, fmt.Errorf("path %q leaves the workspace: %w", name, ErrInvalid)
		}
	}
	p = path.Clean(p)
	if !fs.ValidPath(p) {
		return "", false, fmt.Errorf("path %q is not valid: %w", name, ErrInvalid)
	}
	return p, tmp, nil
}

// CheckRel checks a path that Resolve made, as a side that did not resolve it must: valid,
// relative, without "..".
func CheckRel(rel string) error {
	if !fs.ValidPath(rel) || path.Clean(rel) != rel || strings.Contains("/"+rel+"/", "/../") {
		return fmt.Errorf("path %q is not valid: %w", rel, ErrInvalid)
	}
	return nil
}

// Owner is the user that written files and the folders a write makes belong to.
type Owner struct{ UID, GID int }

// Write writes r to rel (up to maxBytes) through a temporary file that is renamed into
// place, so a refused or failed write leaves nothing behind; a link at rel is replaced,
// never followed. Missing parent folders are made; with an owner, they and the file are
// given to it (a failed chown fails the write and removes what it made), while folders
// that were there keep theirs.
func Write(root *os.Root, rel string, r io.Reader, maxBytes int64, owner *Owner) (fs.FileInfo, error) {
	if rel == "." {
		return nil, fmt.Errorf("%q names a folder: %w", rel, ErrInvalid)
	}
	if dir := path.Dir(rel); dir != "." {
		var made []string
		for d := dir; d != "."; d = path.Dir(d) {
			if _, err := root.Lstat(d); errors.Is(err, fs.ErrNotExist) {
				made = append(made, d)
			}
		}
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return nil, classify("make folder", dir, err)
		}
		if owner != nil {
			for _, d := range made {
				if err := root.Lchown(d, owner.UID, owner.GID); err != nil {
					// A folder the sandbox's user cannot change would fail its next
					// write: fail this one, and remove what it made (deepest first; a
					// folder something was put in meanwhile stays).
					for _, d := range made {
						_ = root.Remove(d)
					}
					return nil, fmt.Errorf("chown folder %q: %w", d, err)
				}
			}
		}
	}
	tmp := path.Join(path.Dir(rel), UploadPrefix+rand.Text())
	out, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, classify("create", rel, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = out.Close()
			_ = root.Remove(tmp)
		}
	}()
	n, err := io.Copy(out, io.LimitReader(r, maxBytes+1))
	if err != nil {
		return nil, classify("write", rel, err)
	}
	if n > maxBytes {
		return nil, fmt.Errorf("%q is over the limit of %d bytes: %w", rel, maxBytes, ErrTooLarge)
	}
	if owner != nil {
		if err := out.Chown(owner.UID, owner.GID); err != nil {
			return nil, fmt.Errorf("chown %q: %w", rel, err)
		}
	}
	if err := out.Close(); err != nil {
		return nil, classify("write", rel, err)
	}
	if err := root.Rename(tmp, rel); err != nil {
		return nil, classify("rename", rel, err)
	}
	committed = true
	st, err := root.Lstat(rel)
	if err != nil {
		return nil, classify("stat", rel, err)
	}
	return st, nil
}

// Open opens the regular file rel for reading. Folders, devices and pipes are refused
// (ErrInvalid), without blocking on a pipe.
func Open(root *os.Root, rel string) (*os.File, fs.FileInfo, error) {
	// O_NONBLOCK: a pipe planted by the sandbox must not hang the reader.
	file, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, classify("open", rel, err)
	}
	st, err := file.Stat()
	if err != nil {
		_ = file.Close()
		return nil, nil, fmt.Errorf("stat %q: %w", rel, err)
	}
	if !st.Mode().IsRegular() {
		_ = file.Close()
		return nil, nil, fmt.Errorf("%q is not a regular file (%s): %w", rel, st.Mode().Type(), ErrInvalid)
	}
	return file, st, nil
}

// List lists the folder rel: at most MaxListEntries entries, more is ErrInvalid, and so
// is anything but a folder. Entries that vanish meanwhile are left out.
func List(root *os.Root, rel string) ([]fs.FileInfo, error) {
	// O_DIRECTORY: anything else, such as a pipe the sandbox planted (whose open would
	// block until a writer came), is refused by the open itself.
	dir, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, classify("open", rel, err)
	}
	defer dir.Close()
	var out []fs.FileInfo
	for {
		entries, err := dir.ReadDir(1024)
		for _, e := range entries {
			if st, err := e.Info(); err == nil {
				out = append(out, st)
			}
		}
		if len(out) > MaxListEntries {
			return nil, fmt.Errorf("folder %q has more than %d entries, too many to list: %w", rel, MaxListEntries, ErrInvalid)
		}
		switch {
		case errors.Is(err, io.EOF):
			return out, nil
		case err != nil:
			return nil, fmt.Errorf("list %q: %w: %w", rel, err, ErrInvalid)
		}
	}
}

// classify adds to what os.Root says the kind of failure it is.
func classify(op, name string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %q: %w", op, name, ErrNotFound)
	case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR),
		strings.Contains(err.Error(), "path escapes"):
		// os.Root refuses symlinks out of the folder with an unexported error.
		return fmt.Errorf("%s %q: %v: %w", op, name, err, ErrInvalid)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		// The volume, or the workspace's own file system at its quota, is full; the
		// partial file is removed.
		return fmt.Errorf("%s %q: %w: %w", op, name, err, ErrFull)
	}
	return fmt.Errorf("%s %q: %w", op, name, err)
}
