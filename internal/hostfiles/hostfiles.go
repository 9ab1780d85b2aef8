// Package hostfiles provides the lifecycle's Files port on the host side of a sandbox's
// workspace bind mount, and of its /tmp where the profile allows it. Every access goes
// through an os.Root opened on the workspace folder (or the sandbox's /tmp), so no path and
// no symlink (even one the sandbox planted a moment ago) can lead outside it.
package hostfiles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

var _ lifecycle.Files = (*Files)(nil)

// Owner is the user that files written for a sandbox belong to, so that the sandbox's
// non-root user can change them.
type Owner struct{ UID, GID int }

// Config says, per agent, where the workspace is mounted in the sandbox (so that paths
// like /workspace/a.txt are understood; default /workspace) and whom written files
// belong to (nil: left as written).
//
// Open opens a sandbox's workspace folder. It should follow no link on the folder's way
// from the volume root, as docker.Runtime.OpenWorkspace does: a sandbox whose workspace
// holds another's can swap a folder on the latter's path for a link to / at any time. The
// default, os.OpenRoot, follows such links and is only safe when no workspace lies in
// another.
//
// OpenTmp, when set, opens the sandbox's own /tmp (as docker.Runtime.OpenTmp does); paths
// under /tmp then mean that folder, and OpenTmp decides whether the sandbox's profile
// allows it. Unset, /tmp/x is the workspace's tmp/x like any other path.
type Config struct {
	MountPoint func(agentID string) string
	Owner      func(agentID string) *Owner
	Open       func(path string) (*os.Root, error)
	OpenTmp    func(ctx context.Context, s sandbox.Session) (*os.Root, error)
}

// Files reads and writes workspaces.
type Files struct{ cfg Config }

// New returns Files for cfg.
func New(cfg Config) *Files { return &Files{cfg: cfg} }

// WriteFile writes r to name (up to maxBytes) through a temporary file that is renamed
// into place, so a refused or failed write leaves nothing behind. Missing parent folders
// are made, owned by the sandbox's user like the file; a failed chown fails the write.
func (f *Files) WriteFile(ctx context.Context, s sandbox.Session, name string, r io.Reader, maxBytes int64) (lifecycle.FileInfo, error) {
	root, rel, area, err := f.open(ctx, s, name)
	if err != nil {
		return lifecycle.FileInfo{}, err
	}
	defer root.Close()
	if rel == "." {
		return lifecycle.FileInfo{}, fmt.Errorf("hostfiles: %q names a folder: %w", name, sandbox.ErrInvalid)
	}
	owner := f.owner(s)
	if dir := path.Dir(rel); dir != "." {
		// The folders this write makes go to the owner; those that were there keep
		// theirs (a folder the sandbox may not change must stay so).
		var made []string
		for d := dir; d != "."; d = path.Dir(d) {
			if _, err := root.Lstat(d); errors.Is(err, fs.ErrNotExist) {
				made = append(made, d)
			}
		}
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return lifecycle.FileInfo{}, mapErr("make folder", dir, err)
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
					return lifecycle.FileInfo{}, fmt.Errorf("hostfiles: chown folder %q: %w", d, err)
				}
			}
		}
	}
	tmp := path.Join(path.Dir(rel), ".sandboxd-upload-"+uuid.NewString())
	out, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return lifecycle.FileInfo{}, mapErr("create", rel, err)
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
		return lifecycle.FileInfo{}, mapErr("write", name, err)
	}
	if n > maxBytes {
		return lifecycle.FileInfo{}, fmt.Errorf("hostfiles: %q is over the limit of %d bytes: %w", name, maxBytes, sandbox.ErrTooLarge)
	}
	if owner != nil {
		if err := out.Chown(owner.UID, owner.GID); err != nil {
			return lifecycle.FileInfo{}, fmt.Errorf("hostfiles: chown %q: %w", name, err)
		}
	}
	if err := out.Close(); err != nil {
		return lifecycle.FileInfo{}, mapErr("write", name, err)
	}
	if err := root.Rename(tmp, rel); err != nil {
		return lifecycle.FileInfo{}, mapErr("rename", rel, err)
	}
	committed = true
	st, err := root.Lstat(rel)
	if err != nil {
		return lifecycle.FileInfo{}, mapErr("stat", rel, err)
	}
	return info(area, rel, st), nil
}

// OpenFile opens the regular file name for reading. Folders, devices and pipes are
// refused with sandbox.ErrInvalid.
func (f *Files) OpenFile(ctx context.Context, s sandbox.Session, name string) (io.ReadCloser, lifecycle.FileInfo, error) {
	root, rel, area, err := f.open(ctx, s, name)
	if err != nil {
		return nil, lifecycle.FileInfo{}, err
	}
	defer root.Close()
	// O_NONBLOCK: a pipe planted by the sandbox must not hang the reader.
	file, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, lifecycle.FileInfo{}, mapErr("open", rel, err)
	}
	st, err := file.Stat()
	if err != nil {
		_ = file.Close()
		return nil, lifecycle.FileInfo{}, fmt.Errorf("hostfiles: stat %q: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		_ = file.Close()
		return nil, lifecycle.FileInfo{}, fmt.Errorf("hostfiles: %q is not a regular file (%s): %w", name, st.Mode().Type(), sandbox.ErrInvalid)
	}
	return file, info(area, rel, st), nil
}

// ListDir lists the folder name ("" or "." for the workspace itself). Anything but a
// folder, and a folder of more than MaxListEntries entries, is refused with
// sandbox.ErrInvalid.
func (f *Files) ListDir(ctx context.Context, s sandbox.Session, name string) ([]lifecycle.FileInfo, error) {
	root, rel, area, err := f.open(ctx, s, name)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	// O_DIRECTORY: anything else, such as a pipe the sandbox planted (whose open would
	// block until a writer came), is refused by the open itself.
	dir, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, mapErr("open", rel, err)
	}
	defer dir.Close()
	var out []lifecycle.FileInfo
	for {
		entries, err := dir.ReadDir(1024)
		for _, e := range entries {
			st, err := e.Info()
			if err != nil {
				continue // vanished meanwhile
			}
			out = append(out, info(area, path.Join(rel, e.Name()), st))
		}
		if len(out) > MaxListEntries {
			return nil, fmt.Errorf("hostfiles: folder %q has more than %d entries, too many to list: %w", name, MaxListEntries, sandbox.ErrInvalid)
		}
		switch {
		case errors.Is(err, io.EOF):
			return out, nil
		case err != nil:
			return nil, fmt.Errorf("hostfiles: list %q: %w: %w", name, err, sandbox.ErrInvalid)
		}
	}
}

// MaxListEntries bounds what ListDir holds in memory: a sandbox can fill a folder with
// millions of names, and the listing must not make sandboxd hold them all.
const MaxListEntries = 10000

// tmpArea is how paths in the sandbox's /tmp are named, and shown in FileInfo.Path.
const tmpArea = "/tmp"

// open resolves a client's path to the folder it lies in, opened as an os.Root, and the
// path relative to it; area is "" for the workspace (whose infos carry relative paths)
// or tmpArea.
func (f *Files) open(ctx context.Context, s sandbox.Session, name string) (root *os.Root, rel, area string, err error) {
	rel, area, err = f.relative(s, name)
	if err != nil {
		return nil, "", "", err
	}
	if area == tmpArea {
		if root, err = f.cfg.OpenTmp(ctx, s); err != nil {
			return nil, "", "", fmt.Errorf("hostfiles: open /tmp of %s: %w", s.ID, err)
		}
		return root, rel, area, nil
	}
	root, err = f.openRoot(s)
	return root, rel, area, err
}

// relative turns a client's path into one relative to the workspace root, or to the
// sandbox's /tmp (area tmpArea).
func (f *Files) relative(s sandbox.Session, name string) (rel, area string, err error) {
	if strings.ContainsRune(name, 0) {
		return "", "", fmt.Errorf("hostfiles: path contains NUL: %w", sandbox.ErrInvalid)
	}
	mount := "/workspace"
	if f.cfg.MountPoint != nil {
		if m := f.cfg.MountPoint(s.AgentID); m != "" {
			mount = path.Clean(m)
		}
	}
	p := name
	switch {
	case p == mount:
		p = "."
	case strings.HasPrefix(p, mount+"/"):
		p = strings.TrimPrefix(p, mount+"/")
	case f.cfg.OpenTmp != nil && (p == tmpArea || strings.HasPrefix(p, tmpArea+"/")):
		p, area = strings.TrimPrefix(strings.TrimPrefix(p, tmpArea), "/"), tmpArea
	default:
		p = strings.TrimPrefix(p, "/")
	}
	if p == "" {
		p = "."
	}
	// Refuse rather than clean away "..": a client asking for it is wrong.
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", "", fmt.Errorf("hostfiles: path %q leaves the workspace: %w", name, sandbox.ErrInvalid)
		}
	}
	p = path.Clean(p)
	if !fs.ValidPath(p) {
		return "", "", fmt.Errorf("hostfiles: path %q is not valid: %w", name, sandbox.ErrInvalid)
	}
	return p, area, nil
}

func (f *Files) owner(s sandbox.Session) *Owner {
	if f.cfg.Owner == nil {
		return nil
	}
	return f.cfg.Owner(s.AgentID)
}

func (f *Files) openRoot(s sandbox.Session) (*os.Root, error) {
	if s.VolumeHostPath == "" {
		return nil, fmt.Errorf("hostfiles: sandbox %s has no workspace folder: %w", s.ID, sandbox.ErrNotFound)
	}
	open := os.OpenRoot
	if f.cfg.Open != nil {
		open = f.cfg.Open
	}
	root, err := open(s.VolumeHostPath)
	if err != nil {
		return nil, fmt.Errorf("hostfiles: open workspace of %s: %w", s.ID, err)
	}
	return root, nil
}

// mapErr translates what os.Root says into the domain's errors.
func mapErr(op, name string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("hostfiles: %s %q: %w", op, name, sandbox.ErrNotFound)
	case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR),
		strings.Contains(err.Error(), "path escapes"):
		// os.Root refuses symlinks out of the workspace with an unexported error.
		return fmt.Errorf("hostfiles: %s %q: %v: %w", op, name, err, sandbox.ErrInvalid)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		// The volume, or the workspace's own file system at its quota, is full; the
		// partial file is removed.
		return fmt.Errorf("hostfiles: %s %q: the workspace is full: %w", op, name, sandbox.ErrFull)
	}
	return fmt.Errorf("hostfiles: %s %q: %w", op, name, err)
}

// info describes the entry at rel of area: workspace paths stay relative, /tmp ones are
// shown in full.
func info(area, rel string, st fs.FileInfo) lifecycle.FileInfo {
	return lifecycle.FileInfo{Path: path.Join(area, rel), Size: st.Size(), Mode: st.Mode(), ModTime: st.ModTime().UTC()}
}
