package workspace

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Free returns the bytes an unprivileged writer may still write on the file system of
// the volume root (statfs's f_bavail: root's reserved blocks do not count). The error
// wraps sandbox.ErrUnavailable when the root cannot be examined.
func (r *Root) Free() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(r.dir, &st); err != nil {
		return 0, fmt.Errorf("workspace: statfs %s: %w: %w", r.dir, sandbox.ErrUnavailable, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// CheckFree refuses, with an error wrapping sandbox.ErrFull, when the volume root's file
// system has less than floor bytes free: new workspaces (and the sandboxes that write to
// them) are refused before anything is made, so that the volume never fills to the last
// byte with half-made state. A floor <= 0 checks nothing.
func (r *Root) CheckFree(floor int64) error {
	if floor <= 0 {
		return nil
	}
	free, err := r.Free()
	if err != nil {
		return err
	}
	if free < floor {
		return fmt.Errorf("the volume root %s is full: %d bytes free, below the floor of %d bytes: %w",
			r.dir, free, floor, sandbox.ErrFull)
	}
	return nil
}
