package sqlitestore

import (
	"errors"
	"os"
	"sync"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"golang.org/x/sys/unix"
)

// reserveBytes is the room the store keeps aside, in a file next to the database, for
// forgetting sessions when its file system is full: a DELETE appends pages to the WAL
// like any write, and a registry that cannot forget expired sessions would wedge the
// sweep (and keep the space their workspaces hold).
const reserveBytes = 1 << 20

// reserve is that file. It is made at Open (when there is room) and again after a
// successful save once it was spent.
type reserve struct {
	path string

	mu   sync.Mutex
	held bool
}

// fill makes the reserve file if it is not there; on a full file system it quietly
// makes none.
func (r *reserve) fill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held {
		return
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, reserveBytes)
	_ = f.Close()
	if err != nil {
		_ = os.Remove(r.path)
		return
	}
	r.held = true
}

// release removes the reserve file, freeing its room; false when there was none.
func (r *reserve) release() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.held {
		return false
	}
	r.held = false
	return os.Remove(r.path) == nil
}

// isFull reports whether err is SQLite's "database or disk is full".
func isFull(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL
}
