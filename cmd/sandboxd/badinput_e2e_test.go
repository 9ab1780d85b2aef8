package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/client"
)

// Bad input through HTTP against the real binary, SQLite and Docker: each request gets its
// precise 4xx, a problem document that says what was wrong, and leaves no container, no
// registry row and no folder behind.
func TestBadInputChangesNothing(t *testing.T) {
	w := newWorld(t, "SANDBOXD_MAX_BODY_BYTES=1024")
	s := w.start()
	volumes := filepath.Join(w.dataDir, "volumes")
	outside := t.TempDir()
	if err := os.Symlink("/", filepath.Join(volumes, "toroot")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(volumes, "team", "inner"), 0o700); err != nil {
		t.Fatal(err)
	}
	before := folderNames(t, volumes)
	chat := newChat()
	put := "/v1/chats/" + chat + "/sandbox"
	for _, tc := range []struct {
		name, method, path, contentType, auth, body string
		status                                      int
		detail                                      string // a part of the problem's detail or title
	}{
		{"malformed chat id", "PUT", "/v1/chats/not-a-uuid/sandbox", "application/json", token, `{}`, 422, "not-a-uuid"},
		{"nil chat id", "PUT", "/v1/chats/00000000-0000-0000-0000-000000000000/sandbox", "application/json", token, `{}`, 422, "nil UUID"},
		{"malformed id on delete", "DELETE", "/v1/chats/1234/sandbox", "", token, ``, 422, "1234"},
		{"unknown field", "PUT", put, "application/json", token, `{"agent_id":"a","image":"alpine"}`, 422, "image"},
		{"wrong content type", "PUT", put, "text/plain", token, `{}`, 415, ""},
		{"body over the limit", "PUT", put, "application/json", token, `{"agent_id":"` + strings.Repeat("a", 2048) + `"}`, 413, ""},
		{"traversal", "PUT", put, "application/json", token, `{"volume_host_path":"` + volumes + `/../../etc"}`, 422, ".."},
		{"outside the volume root", "PUT", put, "application/json", token, `{"volume_host_path":"` + outside + `"}`, 422, "outside the volume root"},
		{"symlink to /", "PUT", put, "application/json", token, `{"volume_host_path":"` + volumes + `/toroot"}`, 422, "symbolic link"},
		{"nested workspace", "PUT", put, "application/json", token, `{"volume_host_path":"` + volumes + `/team/inner"}`, 422, "nest"},
		{"relative path", "PUT", put, "application/json", token, `{"volume_host_path":"etc"}`, 422, "absolute"},
		{"workspace the sandbox user cannot write", "PUT", put, "application/json", token, `{"volume_host_path":"` + volumes + `/team"}`, 422, fmt.Sprintf("owned by %d:%d with mode 0700", os.Geteuid(), os.Getegid())},
		{"duplicate key", "PUT", put, "application/json", token, `{"agent_id":"a","agent_id":"b"}`, 422, "duplicate key"},
		{"missing token", "PUT", put, "application/json", "", `{}`, 401, ""},
		{"wrong token", "PUT", put, "application/json", "not-the-token", `{}`, 401, ""},
		{"wrong token on delete", "DELETE", put, "", "not-the-token", ``, 401, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, s.base+tc.path, bytes.NewBufferString(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", "Bearer "+tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, raw)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
				t.Fatalf("Content-Type %q, want a problem document", ct)
			}
			var problem struct{ Title, Detail string }
			if err := json.Unmarshal(raw, &problem); err != nil {
				t.Fatalf("problem document: %v: %s", err, raw)
			}
			if !strings.Contains(problem.Detail+" "+problem.Title+" "+string(raw), tc.detail) {
				t.Fatalf("problem %s does not say %q", raw, tc.detail)
			}
		})
	}
	if ids := w.labelled(); len(ids) != 0 {
		t.Fatalf("bad requests left containers: %v", ids)
	}
	page, err := s.api.List(t.Context(), client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 0 {
		t.Fatalf("bad requests left registry rows: %+v", page.Items)
	}
	if after := folderNames(t, volumes); after != before {
		t.Fatalf("volume root holds %s after the bad requests, %s before", after, before)
	}
}

func folderNames(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return strings.Join(names, ",")
}
