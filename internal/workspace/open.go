package workspace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Open opens the workspace folder path as an os.Root, walking from the volume root one
// component at a time without following any link, so that the folder opened is the one
// Check accepted even if a sandbox has since swapped a folder on its way for a link (a
// sandbox whose workspace holds another's can do that at any time). Within the returned
// Root, links are followed but never out of it. Errors wrap sandbox.ErrInvalid for a path
// Check refuses or a link or non-folder on the way, sandbox.ErrNotFound for a missing
// folder and sandbox.ErrUnavailable when the volume root cannot be opened.
func (r *Root) Open(path string) (*os.Root, error) {
	rel, err := r.rel(path)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(r.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("workspace: open volume root: %w: %w", sandbox.ErrUnavailable, err)
	}
	for elem := range strings.SplitSeq(rel, "/") {
		next, err := unix.Openat(fd, elem, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		_ = unix.Close(fd)
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("workspace folder %s does not exist: %w", path, sandbox.ErrNotFound)
		case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
			return nil, fmt.Errorf("workspace path %s has a link or a file at %q: %w", path, elem, sandbox.ErrInvalid)
		case err != nil:
			return nil, fmt.Errorf("workspace: open %s: %w", path, err)
		}
		fd = next
	}
	defer unix.Close(fd)
	// The descriptor's magic link reopens exactly the folder reached above, whatever
	// its name leads to now.
	root, err := os.OpenRoot("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return nil, fmt.Errorf("workspace: open %s: %w", filepath.Join(r.dir, rel), err)
	}
	return root, nil
}
