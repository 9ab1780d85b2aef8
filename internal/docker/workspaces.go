package docker

import (
	"context"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/workspace"
)

// The workspace folders of the volume root, for the lifecycle's DeleteWorkspace and the
// retention sweep.

var _ lifecycle.Workspaces = (*Runtime)(nil)

// Derive returns the folder a chat of tenant gets when it names none: <root>/<chat id>
// for the default tenant, <root>/.tenants/<tenant>/<chat id> for another. It neither
// checks nor creates it.
func (r *Runtime) Derive(tenant string, chatID uuid.UUID) string {
	if tenant == "" || tenant == sandbox.DefaultTenant {
		return r.root.Derive(chatID)
	}
	return filepath.Join(r.root.Dir(), workspace.TenantsDir, tenant, chatID.String())
}

// Folders lists the workspace folders of the volume root, every tenant's part's included
// (not the pool's); a folder's last use is its modification time, which Touch sets when a
// sandbox of it ends.
func (r *Runtime) Folders(context.Context) ([]lifecycle.Folder, error) {
	parts, err := r.parts()
	if err != nil {
		return nil, err
	}
	var out []lifecycle.Folder
	for _, part := range parts {
		found, err := part.Folders()
		if err != nil {
			return nil, err
		}
		for _, f := range found {
			out = append(out, lifecycle.Folder{Path: f.Path, ChatID: f.ChatID, LastUsed: f.ModTime})
		}
	}
	return out, nil
}

// parts returns the parts of the volume root: the default tenant's (the root) and every
// other tenant's that exists.
func (r *Runtime) parts() ([]*workspace.Root, error) {
	tenants, err := r.root.Tenants()
	if err != nil {
		return nil, err
	}
	parts := []*workspace.Root{r.root}
	for _, t := range tenants {
		part, err := r.part(t)
		if err != nil {
			return nil, err
		}
		parts = append(parts, part)
	}
	return parts, nil
}

// Touch marks the workspace folder path used at t (its modification time).
func (r *Runtime) Touch(_ context.Context, path string, t time.Time) error {
	part, err := r.partOf(path)
	if err != nil {
		return err
	}
	return part.Touch(path, t)
}

// RemoveFolder removes the workspace folder path and everything in it; false when there
// was none.
func (r *Runtime) RemoveFolder(_ context.Context, path string) (bool, error) {
	part, err := r.partOf(path)
	if err != nil {
		return false, err
	}
	return part.Remove(path)
}
