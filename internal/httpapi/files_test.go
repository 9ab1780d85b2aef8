package httpapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
)

const filesChat = "7a7a7a7a-1111-4d0e-9a61-6f0d2c8e4b1a"

func filesURL(chat, path string) string {
	return "/v1/chats/" + chat + "/sandbox/files?path=" + url.QueryEscape(path)
}

// entries is what the folder holds, by name.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestBinaryFileRoundTrip(t *testing.T) {
	f := newFixture(t)
	workspace := f.newSandbox(t, filesChat)
	ctx := context.Background()

	// Larger than the API's body limit (1 KiB here): uploads are exempt from it.
	content := make([]byte, testMaxFile)
	_, _ = rand.Read(content)
	info, err := f.client.Upload(ctx, filesChat, "/workspace/out/blob.bin", bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	if info.Path != "out/blob.bin" || info.Size != int64(len(content)) || info.IsDir || info.Mode != "-rw-r--r--" {
		t.Errorf("upload answered %+v", info)
	}
	onDisk, err := os.ReadFile(filepath.Join(workspace, "out", "blob.bin"))
	if err != nil || !bytes.Equal(onDisk, content) {
		t.Fatalf("the workspace holds %d bytes (%v), want the %d uploaded", len(onDisk), err, len(content))
	}

	var back bytes.Buffer
	n, err := f.client.Download(ctx, filesChat, "out/blob.bin", &back)
	if err != nil || n != int64(len(content)) || !bytes.Equal(back.Bytes(), content) {
		t.Fatalf("download: %d bytes, %v; want the %d uploaded", n, err, len(content))
	}
	resp := f.request(t, http.MethodGet, filesURL(filesChat, "out/blob.bin"), "", nil)
	if ct, cl := resp.Header.Get("Content-Type"), resp.Header.Get("Content-Length"); ct != "application/octet-stream" || cl != "262144" {
		t.Errorf("download headers: Content-Type %q Content-Length %q", ct, cl)
	}

	// Any media type is taken as raw bytes; an upload replaces the file whole.
	req, _ := http.NewRequest(http.MethodPut, f.srv.URL+filesURL(filesChat, "out/blob.bin"), strings.NewReader("short"))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	put, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	put.Body.Close()
	if onDisk, _ := os.ReadFile(filepath.Join(workspace, "out", "blob.bin")); put.StatusCode != http.StatusOK || string(onDisk) != "short" {
		t.Errorf("text/plain upload: %d, file %q", put.StatusCode, onDisk)
	}
	if _, err := f.client.Upload(ctx, filesChat, "empty", strings.NewReader("")); err != nil {
		t.Errorf("empty upload: %v", err)
	}

	list, err := f.client.ListFiles(ctx, filesChat, "")
	if err != nil || len(list) != 2 || list[0].Path != "empty" || list[1].Path != "out" || !list[1].IsDir || !strings.HasPrefix(list[1].Mode, "d") {
		t.Errorf("ListFiles(workspace) = %+v, %v", list, err)
	}
	list, err = f.client.ListFiles(ctx, filesChat, "/workspace/out")
	if err != nil || len(list) != 1 || list[0].Path != "out/blob.bin" || list[0].Size != 5 || list[0].ModTime.IsZero() {
		t.Errorf("ListFiles(out) = %+v, %v", list, err)
	}
	if got := entries(t, filepath.Join(workspace, "out")); len(got) != 1 {
		t.Errorf("the folder holds %v: an upload left something behind", got)
	}
}

func TestFileOverTheLimitIsRefusedAndLeavesNothing(t *testing.T) {
	f := newFixture(t)
	workspace := f.newSandbox(t, filesChat)
	ctx := context.Background()
	if _, err := f.client.Upload(ctx, filesChat, "keep.txt", strings.NewReader("old")); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		body io.Reader
	}{
		// Of unknown length: the server finds the excess as it streams.
		{"big.bin", io.MultiReader(bytes.NewReader(make([]byte, testMaxFile)), strings.NewReader("!"))},
		{"keep.txt", io.MultiReader(bytes.NewReader(make([]byte, testMaxFile)), strings.NewReader("!"))},
		// Of known length.
		{"big.bin", bytes.NewReader(make([]byte, 2*testMaxFile))},
	} {
		name := tc.name
		_, err := f.client.Upload(ctx, filesChat, name, tc.body)
		var problem *client.Error
		if !errors.Is(err, client.ErrTooLarge) || !errors.As(err, &problem) || problem.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("upload of %s over the limit: %v, want 413", name, err)
		}
	}
	if got := entries(t, workspace); len(got) != 1 || got[0] != "keep.txt" {
		t.Errorf("the workspace holds %v, want keep.txt only", got)
	}
	if b, _ := os.ReadFile(filepath.Join(workspace, "keep.txt")); string(b) != "old" {
		t.Errorf("keep.txt = %q after a refused upload, want old", b)
	}
}

func TestFilePathsStayInTheWorkspace(t *testing.T) {
	f := newFixture(t)
	workspace := f.newSandbox(t, filesChat)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	// What a sandbox could plant in its own workspace: ln -s / x, and a link to a file.
	if err := os.Symlink("/", filepath.Join(workspace, "x")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(workspace, "s")); err != nil {
		t.Fatal(err)
	}
	through := "x" + outside // the outside folder, reached through x
	ctx := context.Background()

	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "x/etc/passwd"},
		{http.MethodGet, "/workspace/x/etc/passwd"},
		{http.MethodGet, through + "/secret"},
		{http.MethodGet, "s"},
		{http.MethodGet, "../secret"},
		{http.MethodPut, through + "/planted"},
		{http.MethodPut, "x/etc/passwd"},
		{http.MethodPut, "x/tmp/planted"},
		{http.MethodPut, "a/../../planted"},
		{http.MethodPut, "/workspace"},
	} {
		body := ""
		if tc.method == http.MethodPut {
			body = "pwned"
		}
		resp := f.request(t, tc.method, filesURL(filesChat, tc.path), body, nil)
		if resp.StatusCode != http.StatusUnprocessableEntity {
			b, _ := io.ReadAll(resp.Body)
			t.Errorf("%s %s: %d %s, want 422", tc.method, tc.path, resp.StatusCode, b)
		}
	}
	if _, err := f.client.ListFiles(ctx, filesChat, through); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("listing through x: %v, want 422", err)
	}
	// Writing to the link replaces the link (the upload is renamed into place), never
	// what it points at.
	if _, err := f.client.Upload(ctx, filesChat, "s", strings.NewReader("mine")); err != nil {
		t.Errorf("upload over the link s: %v", err)
	}
	if st, err := os.Lstat(filepath.Join(workspace, "s")); err != nil || !st.Mode().IsRegular() {
		t.Errorf("s after an upload over it: %v, %v; want a regular file", st, err)
	}
	if got := entries(t, outside); len(got) != 1 {
		t.Errorf("the outside folder holds %v: something was written through a link", got)
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "secret" {
		t.Errorf("the outside file now holds %q", b)
	}
	if _, err := os.Lstat("/tmp/planted"); err == nil {
		t.Error("/tmp/planted exists")
	}
	if got := entries(t, workspace); len(got) != 2 {
		t.Errorf("the workspace holds %v, want the two links only", got)
	}
}

func TestFileErrors(t *testing.T) {
	f := newFixture(t)
	f.newSandbox(t, filesChat)
	const expiring = "8b8b8b8b-1111-4d0e-9a61-6f0d2c8e4b1a"
	f.newSandbox(t, expiring)
	f.clock.Advance(testTTL)
	f.newSandbox(t, filesChat) // replaced; its workspace is new

	for _, tc := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"missing file", http.MethodGet, filesURL(filesChat, "nope.txt"), "", http.StatusNotFound},
		{"missing folder", http.MethodGet, "/v1/chats/" + filesChat + "/sandbox/files/list?path=nope", "", http.StatusNotFound},
		{"no path", http.MethodGet, "/v1/chats/" + filesChat + "/sandbox/files", "", http.StatusUnprocessableEntity},
		{"no sandbox", http.MethodGet, filesURL("9c9c9c9c-1111-4d0e-9a61-6f0d2c8e4b1a", "a"), "", http.StatusNotFound},
		{"no sandbox to write to", http.MethodPut, filesURL("9c9c9c9c-1111-4d0e-9a61-6f0d2c8e4b1a", "a"), "x", http.StatusNotFound},
		{"expired, read", http.MethodGet, filesURL(expiring, "a"), "", http.StatusConflict},
		{"expired, write", http.MethodPut, filesURL(expiring, "a"), "x", http.StatusConflict},
		{"expired, list", http.MethodGet, "/v1/chats/" + expiring + "/sandbox/files/list", "", http.StatusConflict},
		{"bad chat", http.MethodPut, filesURL("nope", "a"), "x", http.StatusUnprocessableEntity},
	} {
		resp := f.request(t, tc.method, tc.path, tc.body, nil)
		if resp.StatusCode != tc.want || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: %d %s, want %d problem", tc.name, resp.StatusCode, resp.Header.Get("Content-Type"), tc.want)
		}
	}
	if err := os.Mkdir(filepath.Join(f.workspace(t, filesChat), "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Download(context.Background(), filesChat, "dir", io.Discard); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("download of a folder: %v, want 422", err)
	}
	resp := f.request(t, http.MethodPut, filesURL(filesChat, "a"), "x", map[string]string{"Authorization": ""})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("upload without a token: %d, want 401", resp.StatusCode)
	}
}

// workspace is the workspace folder of the chat's sandbox.
func (f *fixture) workspace(t *testing.T, chat string) string {
	t.Helper()
	s, err := f.client.Get(context.Background(), chat)
	if err != nil {
		t.Fatal(err)
	}
	return s.VolumeHostPath
}

func TestKeepaliveMovesExpiryUpToTheCap(t *testing.T) {
	f := newFixture(t)
	const chat = "abababab-1111-4d0e-9a61-6f0d2c8e4b1a"
	f.newSandbox(t, chat)
	ctx := context.Background()
	created := f.clock.Now()

	f.clock.Advance(30 * time.Minute)
	got, err := f.client.Keepalive(ctx, chat, 2*time.Hour)
	if want := f.clock.Now().Add(2 * time.Hour); err != nil || !got.ExpiresAt.Equal(want) || got.Expired {
		t.Fatalf("keepalive 2h = %+v, %v; want expiry %v", got, err, want)
	}
	if s, _ := f.client.Get(ctx, chat); !s.ExpiresAt.Equal(got.ExpiresAt) {
		t.Errorf("the registry's expiry is %v, want %v", s.ExpiresAt, got.ExpiresAt)
	}

	got, err = f.client.Keepalive(ctx, chat, 48*time.Hour)
	if want := created.Add(testMaxLifetime); err != nil || !got.ExpiresAt.Equal(want) {
		t.Errorf("keepalive 48h = %v, %v; want capped at %v", got.ExpiresAt, err, want)
	}

	path := "/v1/chats/" + chat + "/sandbox/keepalive"
	for _, tc := range []struct {
		name, path, body string
		want             int
	}{
		{"zero ttl", path, `{"ttl_s":0}`, http.StatusUnprocessableEntity},
		{"no ttl", path, `{}`, http.StatusUnprocessableEntity},
		{"unknown field", path, `{"ttl_s":60,"forever":true}`, http.StatusUnprocessableEntity},
		{"ttl that overflows", path, `{"ttl_s":9223372036854775807}`, http.StatusUnprocessableEntity},
		{"no sandbox", "/v1/chats/cdcdcdcd-1111-4d0e-9a61-6f0d2c8e4b1a/sandbox/keepalive", `{"ttl_s":60}`, http.StatusNotFound},
	} {
		resp := f.request(t, http.MethodPost, tc.path, tc.body, nil)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}

	f.clock.Advance(testMaxLifetime)
	if _, err := f.client.Keepalive(ctx, chat, time.Hour); !errors.Is(err, client.ErrExpired) || errors.Is(err, client.ErrConflict) {
		t.Errorf("keepalive of an expired sandbox: %v, want expired (409), not conflict", err)
	}
	resp := f.request(t, http.MethodPost, path, `{"ttl_s":60}`, nil)
	var p struct{ Detail string }
	_ = json.NewDecoder(resp.Body).Decode(&p)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(p.Detail, "expired") {
		t.Errorf("keepalive of an expired sandbox: %d %q", resp.StatusCode, p.Detail)
	}
}
