package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/memstore"
)

type memWorkspaces struct {
	mu      sync.Mutex
	folders map[string]bool
}

func (w *memWorkspaces) Derive(_ string, chat uuid.UUID) string { return "/vol/" + chat.String() }
func (w *memWorkspaces) Folders(context.Context) ([]lifecycle.Folder, error) {
	return nil, nil
}
func (w *memWorkspaces) Touch(context.Context, string, time.Time) error { return nil }
func (w *memWorkspaces) RemoveFolder(_ context.Context, path string) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ok := w.folders[path]
	delete(w.folders, path)
	return ok, nil
}

func TestDeleteWorkspace(t *testing.T) {
	const chat = "8a8a8a8a-1111-4d0e-9a61-6f0d2c8e4b1a"
	ws := &memWorkspaces{folders: map[string]bool{"/vol/" + chat: true}}
	svc, err := lifecycle.New(lifecycle.Config{
		Store: memstore.New(), Locker: keylock.New(), Runtime: &lifecycletest.Runtime{}, TTL: testTTL, Workspaces: ws,
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpapi.New(httpapi.Config{Sandboxes: svc})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	do := func(method, path string) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	if resp := do(http.MethodPut, "/v1/chats/"+chat+"/sandbox"); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %s", resp.Status)
	}
	resp := do(http.MethodDelete, "/v1/chats/"+chat+"/workspace")
	if status, _ := problem(t, resp); resp.StatusCode != http.StatusConflict || status != http.StatusConflict {
		t.Fatalf("delete workspace while the sandbox runs: %s, want 409", resp.Status)
	}
	if !ws.folders["/vol/"+chat] {
		t.Fatal("the refused delete removed the folder")
	}
	do(http.MethodDelete, "/v1/chats/"+chat+"/sandbox")
	for _, want := range []string{"removed", "not_found"} {
		resp := do(http.MethodDelete, "/v1/chats/"+chat+"/workspace")
		var body struct{ ChatID, Result, Path string }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || body.Result != want || body.Path != "/vol/"+chat {
			t.Errorf("delete workspace: %s %+v, want 200 %s", resp.Status, body, want)
		}
	}
	if resp := do(http.MethodDelete, "/v1/chats/nope/workspace"); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("bad chat id: %s, want 422", resp.Status)
	}
}
