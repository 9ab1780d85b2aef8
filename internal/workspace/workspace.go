// Package workspace confines the host folders that sandboxes mount as their workspace to
// one volume root. A workspace path must be absolute, lie strictly inside the root and
// reach a real directory with no symbolic link on its way; anything else is refused with
// an error wrapping sandbox.ErrInvalid that says what was wrong.
//
// A workspace is a direct child of the root, so a check is one lstat of that child, which
// follows no link it may be. It can only say what the folder was when it looked: callers
// that act on a path later check it again right before (and Open follows no link).
package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Root is a volume root: the folder every workspace must lie in. It is safe for
// concurrent use.
type Root struct {
	dir string
}

// NewRoot returns the volume root dir. dir must be an absolute path to an existing
// directory; the error otherwise is a configuration error, not sandbox.ErrInvalid.
func NewRoot(dir string) (*Root, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("workspace: volume root %q is not an absolute path", dir)
	}
	dir = filepath.Clean(dir)
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("workspace: volume root: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("workspace: volume root %s is not a directory", dir)
	}
	return &Root{dir: dir}, nil
}

// Dir returns the root's cleaned absolute path.
func (r *Root) Dir() string { return r.dir }

// Derive returns the workspace a chat gets when it names none: <root>/<chat id>. It
// neither checks nor creates it.
func (r *Root) Derive(chatID uuid.UUID) string {
	return filepath.Join(r.dir, chatID.String())
}

// Check returns the cleaned form of path if it is an existing real directory directly
// inside the root (workspaces never nest: a sandbox whose workspace held another's could
// swap that folder for a link between this check and the engine's mount), reached
// without any symbolic link. Errors wrap sandbox.ErrInvalid when
// the path is refused and sandbox.ErrUnavailable when the root cannot be opened.
func (r *Root) Check(path string) (string, error) {
	return r.check(path, false)
}

// User is the sandbox user a workspace is for, by its numeric ids.
type User struct{ UID, GID int }

// CheckFor is Check that also refuses a folder the sandbox user u could not write in
// (and search): its /workspace would be read-only to it. The error (sandbox.ErrInvalid)
// names the folder's owner and mode.
func (r *Root) CheckFor(path string, u User) (string, error) {
	return r.checkFor(path, false, &u)
}

// CheckCreatableFor is CheckCreatable that refuses, as CheckFor does, an existing folder
// the sandbox user u could not write in.
func (r *Root) CheckCreatableFor(path string, u User) (string, error) {
	return r.checkFor(path, true, &u)
}

// CheckCreatable is Check for a folder that may not exist yet: a missing last component
// is accepted, but everything above it must exist and pass Check's rules, and if the
// folder does exist it must pass them too. Errors are Check's.
func (r *Root) CheckCreatable(path string) (string, error) {
	return r.check(path, true)
}

// Ensure makes sure the folder path exists: when its last component is missing it is
// created with mode 0700 and handed to uid:gid (so a non-root sandbox user can write in
// it; negative ids leave the owner alone), then the whole path is checked again. Only
// the last component is ever created. Errors are Check's, or the failed file operation's.
func (r *Root) Ensure(path string, uid, gid int) (string, error) {
	rel, err := r.workspaceRel(path)
	if err != nil {
		return "", err
	}
	if _, err := r.look(rel, true); err != nil {
		return "", err
	}
	switch err := r.mkdir(rel, uid, gid); {
	case errors.Is(err, fs.ErrExist):
		// Made earlier: the check below says whether it is still acceptable.
	case err != nil:
		return "", fmt.Errorf("workspace: create %s: %w", path, err)
	}
	if uid < 0 {
		return r.Check(path)
	}
	return r.CheckFor(path, User{UID: uid, GID: gid}) // one made earlier may be another's
}

// mkdir makes the folder name (mode 0700) of uid:gid (negative: of this process), never
// visible with another owner: a concurrent admission of the same chat must not find a
// folder its sandbox user cannot write in. The folder is made and handed over under a
// name of sandboxd's own (a leading ".", which no workspace has), then renamed into place
// without replacing anything; an error matching fs.ErrExist says name exists.
func (r *Root) mkdir(name string, uid, gid int) error {
	root, err := r.open()
	if err != nil {
		return err
	}
	defer root.Close()
	if uid < 0 || (uid == os.Geteuid() && gid == os.Getegid()) {
		return root.Mkdir(name, 0o700)
	}
	if _, err := root.Lstat(name); err == nil {
		return fs.ErrExist
	}
	tmp := ".new-" + name + "-" + uuid.NewString()[:8]
	if err := root.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	if err := root.Lchown(tmp, uid, gid); err != nil {
		_ = root.Remove(tmp)
		return fmt.Errorf("hand it to %d:%d: %w", uid, gid, err)
	}
	rootFD, err := unix.Open(r.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = root.Remove(tmp)
		return err
	}
	defer unix.Close(rootFD)
	if err := unix.Renameat2(rootFD, tmp, rootFD, name, unix.RENAME_NOREPLACE); err != nil {
		_ = root.Remove(tmp)
		return &os.LinkError{Op: "rename", Old: tmp, New: name, Err: err}
	}
	return nil
}

func (r *Root) check(path string, missingOK bool) (string, error) {
	return r.checkFor(path, missingOK, nil)
}

// checkFor is check that, given a user, also refuses a folder that user could not write in.
func (r *Root) checkFor(path string, missingOK bool, u *User) (string, error) {
	rel, err := r.workspaceRel(path)
	if err != nil {
		return "", err
	}
	fi, err := r.look(rel, missingOK)
	if err != nil {
		return "", err
	}
	shown := filepath.Join(r.dir, rel)
	if fi != nil && u != nil {
		if err := writable(shown, fi, *u); err != nil {
			return "", err
		}
	}
	return shown, nil
}

// writable refuses a folder that u cannot write in and search, by its owner, group and
// mode as the kernel would judge them (the sandbox user has no supplementary groups).
func writable(shown string, fi fs.FileInfo, u User) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || u.UID == 0 {
		return nil
	}
	perm := fi.Mode().Perm()
	var need fs.FileMode
	switch {
	case int(st.Uid) == u.UID:
		need = 0o300
	case int(st.Gid) == u.GID:
		need = 0o030
	default:
		need = 0o003
	}
	if perm&need == need {
		return nil
	}
	return fmt.Errorf("workspace folder %s is owned by %d:%d with mode %04o: the sandbox user %d:%d could not write in it (give it to %d:%d, or name no folder and let sandboxd make the chat's): %w",
		shown, st.Uid, st.Gid, perm, u.UID, u.GID, u.UID, u.GID, sandbox.ErrInvalid)
}

// workspaceRel is rel for a folder that is to become a workspace: it must be a direct
// child of the root, so no workspace lies inside another.
func (r *Root) workspaceRel(path string) (string, error) {
	rel, err := r.rel(path)
	switch {
	case err == nil && strings.Contains(rel, "/"):
		err = fmt.Errorf("workspace path %q is not directly inside the volume root %s (workspaces may not nest): %w",
			path, r.dir, sandbox.ErrInvalid)
	case err == nil && rel == TenantsDir:
		// It holds the tenants' parts (tenants.go).
		err = fmt.Errorf("workspace path %q is the folder of the tenants' parts %s: %w",
			path, filepath.Join(r.dir, TenantsDir), sandbox.ErrInvalid)
	}
	return rel, err
}

// rel applies the rules that need no file system and returns path relative to the root.
func (r *Root) rel(path string) (string, error) {
	refuse := func(why string) (string, error) {
		return "", fmt.Errorf("workspace path %q %s: %w", path, why, sandbox.ErrInvalid)
	}
	switch {
	case strings.TrimSpace(path) == "":
		return refuse("is empty")
	case strings.TrimSpace(path) != path:
		return refuse("has leading or trailing white space")
	case strings.ContainsRune(path, 0):
		return refuse("contains a NUL byte")
	case !filepath.IsAbs(path):
		return refuse("is not an absolute path")
	}
	for elem := range strings.SplitSeq(path, "/") {
		if elem == ".." {
			return refuse("contains \"..\"")
		}
		// A path is not a URL, but a client that escapes "." or "/" means to traverse.
		if dec, err := url.PathUnescape(elem); err == nil && dec != elem &&
			(dec == "." || dec == ".." || strings.ContainsAny(dec, "/\\\x00")) {
			return refuse("contains an encoded traversal")
		}
	}
	rel, err := filepath.Rel(r.dir, filepath.Clean(path))
	switch {
	case err != nil || rel == ".." || strings.HasPrefix(rel, "../"):
		return refuse(fmt.Sprintf("is outside the volume root %s", r.dir))
	case rel == ".":
		return refuse("is the volume root itself")
	case rel == PoolDir || strings.HasPrefix(rel, PoolDir+"/"):
		// The pool's folders belong to sandboxes not yet handed out (see PoolDir).
		return refuse("lies in the sandbox pool's folder " + filepath.Join(r.dir, PoolDir))
	case rel == ImagesDir || strings.HasPrefix(rel, ImagesDir+"/"):
		return refuse("lies in the workspace images' folder " + filepath.Join(r.dir, ImagesDir))
	}
	return rel, nil
}

// look examines the workspace folder name, a direct child of the root (workspaceRel),
// without following it should it be a link: one lstat, the whole of admission's file
// system cost on the hot create path. It returns what it found (nil: the folder does not
// exist, which is an error unless missingOK).
func (r *Root) look(name string, missingOK bool) (fs.FileInfo, error) {
	if strings.Contains(name, "/") {
		return nil, fmt.Errorf("workspace: %q is not a direct child of the volume root: %w", name, sandbox.ErrInvalid)
	}
	shown := filepath.Join(r.dir, name)
	fi, err := os.Lstat(shown)
	if err != nil {
		if _, rootErr := os.Stat(r.dir); rootErr != nil {
			return nil, fmt.Errorf("workspace: volume root: %w: %w", sandbox.ErrUnavailable, rootErr)
		}
	}
	switch {
	case errors.Is(err, fs.ErrNotExist) && missingOK:
		return nil, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("workspace folder %s does not exist: %w", shown, sandbox.ErrInvalid)
	case err != nil:
		return nil, fmt.Errorf("workspace folder %s cannot be checked (%v): %w", shown, err, sandbox.ErrInvalid)
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, fmt.Errorf("workspace path %s is a symbolic link: %w", shown, sandbox.ErrInvalid)
	case !fi.IsDir():
		return nil, fmt.Errorf("workspace path %s is not a directory: %w", shown, sandbox.ErrInvalid)
	}
	return fi, nil
}

func (r *Root) open() (*os.Root, error) {
	root, err := os.OpenRoot(r.dir)
	if err != nil {
		return nil, fmt.Errorf("workspace: open volume root: %w: %w", sandbox.ErrUnavailable, err)
	}
	return root, nil
}
