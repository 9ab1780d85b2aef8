// Package hostfiles provides the lifecycle's Files port on the host side of a sandbox's
// workspace bind mount, and of its /tmp where the profile allows it. Every access goes
// through an os.Root opened on the workspace folder (or the sandbox's /tmp), so no path and
// no symlink (even one the sandbox planted a moment ago) can lead outside it; the work
// inside that root is package rootfiles', which the in-sandbox agent does too.
package hostfiles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/rootfiles"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

var _ lifecycle.Files = (*Files)(nil)

// Owner is the user that files written for a sandbox belong to, so that the sandbox's
// non-root user can change them.
type Owner = rootfiles.Owner

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
	st, err := rootfiles.Write(root, rel, r, maxBytes, f.owner(s))
	if err != nil {
		return lifecycle.FileInfo{}, Err(err)
	}
	return Info(area, rel, st), nil
}

// OpenFile opens the regular file name for reading. Folders, devices and pipes are
// refused with sandbox.ErrInvalid.
func (f *Files) OpenFile(ctx context.Context, s sandbox.Session, name string) (io.ReadCloser, lifecycle.FileInfo, error) {
	root, rel, area, err := f.open(ctx, s, name)
	if err != nil {
		return nil, lifecycle.FileInfo{}, err
	}
	defer root.Close()
	file, st, err := rootfiles.Open(root, rel)
	if err != nil {
		return nil, lifecycle.FileInfo{}, Err(err)
	}
	return file, Info(area, rel, st), nil
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
	entries, err := rootfiles.List(root, rel)
	if err != nil {
		return nil, Err(err)
	}
	out := make([]lifecycle.FileInfo, len(entries))
	for i, st := range entries {
		out[i] = Info(area, path.Join(rel, st.Name()), st)
	}
	return out, nil
}

// MaxListEntries bounds what ListDir holds in memory: a sandbox can fill a folder with
// millions of names, and the listing must not make sandboxd hold them all.
const MaxListEntries = rootfiles.MaxListEntries

// open resolves a client's path to the folder it lies in, opened as an os.Root, and the
// path relative to it; area is "" for the workspace (whose infos carry relative paths)
// or rootfiles.TmpArea.
func (f *Files) open(ctx context.Context, s sandbox.Session, name string) (root *os.Root, rel, area string, err error) {
	rel, tmp, err := rootfiles.Resolve(name, f.mount(s), f.cfg.OpenTmp != nil)
	if err != nil {
		return nil, "", "", Err(err)
	}
	if tmp {
		if root, err = f.cfg.OpenTmp(ctx, s); err != nil {
			return nil, "", "", fmt.Errorf("hostfiles: open /tmp of %s: %w", s.ID, err)
		}
		return root, rel, rootfiles.TmpArea, nil
	}
	root, err = f.openRoot(s)
	return root, rel, "", err
}

// mount is where the workspace of s is mounted in its sandbox.
func (f *Files) mount(s sandbox.Session) string {
	if f.cfg.MountPoint != nil {
		if m := f.cfg.MountPoint(s.AgentID); m != "" {
			return m
		}
	}
	return "/workspace"
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

// Err translates an error of package rootfiles into the domain's: its kind becomes the
// matching sentinel of package sandbox; any other error stays as it is.
func Err(err error) error { return fmt.Errorf("hostfiles: %w", Domain(err)) }

// Domain is err, an error of package rootfiles, with the sentinel of package sandbox
// that matches its kind wrapped too; any other error is returned as it is. The Docker
// runtime's files through the agent translate with it as well.
func Domain(err error) error {
	for _, k := range []struct{ from, to error }{
		{rootfiles.ErrNotFound, sandbox.ErrNotFound},
		{rootfiles.ErrInvalid, sandbox.ErrInvalid},
		{rootfiles.ErrTooLarge, sandbox.ErrTooLarge},
		{rootfiles.ErrFull, sandbox.ErrFull},
	} {
		if errors.Is(err, k.from) {
			return fmt.Errorf("%w: %w", err, k.to)
		}
	}
	return err
}

// Info describes the entry at rel of area ("" or rootfiles.TmpArea): workspace paths
// stay relative, /tmp ones are shown in full.
func Info(area, rel string, st fs.FileInfo) lifecycle.FileInfo {
	return lifecycle.FileInfo{Path: path.Join(area, rel), Size: st.Size(), Mode: st.Mode(), ModTime: st.ModTime().UTC()}
}
