package main

import (
	"context"
	"errors"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/memstore"
)

// dirWorkspaces keeps workspace folders in a real folder.
type dirWorkspaces struct{ root string }

func (w dirWorkspaces) Derive(_ string, chat uuid.UUID) string {
	return filepath.Join(w.root, chat.String())
}
func (w dirWorkspaces) Folders(context.Context) ([]lifecycle.Folder, error) {
	return nil, nil
}
func (w dirWorkspaces) Touch(context.Context, string, time.Time) error { return nil }
func (w dirWorkspaces) RemoveFolder(_ context.Context, path string) (bool, error) {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return true, os.RemoveAll(path)
}

func TestDeletePurgeRemovesTheWorkspaceFolder(t *testing.T) {
	ws := dirWorkspaces{root: t.TempDir()}
	svc, err := lifecycle.New(lifecycle.Config{
		Store: memstore.New(), Locker: keylock.New(), Runtime: &lifecycletest.Runtime{}, TTL: time.Hour, Workspaces: ws,
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpapi.New(httpapi.Config{Sandboxes: svc, Tokens: []string{token}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	folder := ws.Derive("", uuid.MustParse(chatA))
	if err := os.MkdirAll(filepath.Join(folder, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustRun(t, srv, "create", chatA, "--volume", folder)

	out := mustRun(t, srv, "delete", chatA)
	if strings.Contains(out, "WORKSPACE") {
		t.Errorf("delete without --purge spoke of the workspace:\n%s", out)
	}
	if _, err := os.Stat(folder); err != nil {
		t.Fatalf("delete without --purge touched the folder: %v", err)
	}
	mustRun(t, srv, "create", chatA, "--volume", folder)
	out = mustRun(t, srv, "delete", chatA, "--purge")
	for _, want := range []string{"RESULT     deleted", "WORKSPACE  removed", "FOLDER     " + folder} {
		if !strings.Contains(out, want) {
			t.Errorf("delete --purge lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(folder); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("folder after delete --purge: %v, want gone", err)
	}
	out = mustRun(t, srv, "--json", "delete", chatA, "--purge")
	if !strings.Contains(out, `"workspace"`) || !strings.Contains(out, `"not_found"`) {
		t.Errorf("delete --purge --json of a purged chat:\n%s", out)
	}
}
