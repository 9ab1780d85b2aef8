package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// Folder is a workspace folder of the root: a direct child that is a real directory and
// whose name does not start with "." (those are sandboxd's own, such as PoolDir).
type Folder struct {
	Path    string
	ChatID  uuid.UUID // the chat the folder is named after (Derive); uuid.Nil if none
	ModTime time.Time
}

// Folders lists the workspace folders of the root.
func (r *Root) Folders() ([]Folder, error) {
	root, err := r.open()
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("workspace: list %s: %w", r.dir, err)
	}
	defer f.Close()
	entries, err := f.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("workspace: list %s: %w", r.dir, err)
	}
	var out []Folder
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !e.IsDir() { // ReadDir does not follow links
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // gone meanwhile
		}
		folder := Folder{Path: filepath.Join(r.dir, name), ModTime: info.ModTime()}
		// A bounded workspace's image changes whenever its files do, and once more when
		// it is unmounted as its sandbox ends, whose mount hid the folder's own time.
		if img, err := os.Lstat(filepath.Join(r.dir, ImagesDir, name+".img")); err == nil && img.ModTime().After(folder.ModTime) {
			folder.ModTime = img.ModTime()
		}
		if id, err := uuid.Parse(name); err == nil && id.String() == name {
			folder.ChatID = id
		}
		out = append(out, folder)
	}
	return out, nil
}

// Touch sets the modification time of the workspace folder path to t, without following
// a link in its place. A missing folder is no error. Errors are Check's.
func (r *Root) Touch(path string, t time.Time) error {
	rel, err := r.workspaceRel(path)
	if err != nil {
		return err
	}
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	err = unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(r.dir, rel), ts, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("workspace: touch %s: %w", path, err)
	}
	return nil
}

// Remove removes the workspace folder path and everything in it, within the root (no
// link on the way is followed), and its image if it has one (unmounted first). It
// reports false, and no error, when there was neither. Errors are Check's, or the
// removal's.
func (r *Root) Remove(path string) (bool, error) {
	rel, err := r.workspaceRel(path)
	if err != nil {
		return false, err
	}
	imaged := false
	if r.HasImage(path) {
		img, _, err := r.LockImage(path, true)
		if err != nil {
			return false, err
		}
		imaged, err = img.Remove()
		img.Unlock()
		if err != nil {
			return false, err
		}
	}
	fi, err := r.look(rel, true)
	if err != nil || fi == nil {
		return imaged, err
	}
	root, err := r.open()
	if err != nil {
		return false, err
	}
	defer root.Close()
	if err := root.RemoveAll(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("workspace: remove %s: %w", path, err)
	}
	return true, nil
}
