package docker

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
)

// The workspace folders of the volume root, for the lifecycle's DeleteWorkspace and the
// retention sweep.

var _ lifecycle.Workspaces = (*Runtime)(nil)

// Derive returns the folder a chat gets when it names none: <root>/<chat id>.
func (r *Runtime) Derive(chatID uuid.UUID) string { return r.root.Derive(chatID) }

// Folders lists the workspace folders of the volume root (not the pool's); a folder's
// last use is its modification time, which Touch sets when a sandbox of it ends.
func (r *Runtime) Folders(context.Context) ([]lifecycle.Folder, error) {
	found, err := r.root.Folders()
	if err != nil {
		return nil, err
	}
	out := make([]lifecycle.Folder, 0, len(found))
	for _, f := range found {
		out = append(out, lifecycle.Folder{Path: f.Path, ChatID: f.ChatID, LastUsed: f.ModTime})
	}
	return out, nil
}

// Touch marks the workspace folder path used at t (its modification time).
func (r *Runtime) Touch(_ context.Context, path string, t time.Time) error {
	return r.root.Touch(path, t)
}

// RemoveFolder removes the workspace folder path and everything in it; false when there
// was none.
func (r *Runtime) RemoveFolder(_ context.Context, path string) (bool, error) {
	return r.root.Remove(path)
}
