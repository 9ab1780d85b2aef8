package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
)

const (
	acmeToken = "acme-e2e-token"
	betaToken = "beta-e2e-token"
)

// rawAs sends one request with tok and returns the answer, its body read.
func (s *server) rawAs(tok, method, path, contentType, body string, header ...string) (*http.Response, string) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (s *server) as(tok string) *client.Client {
	s.t.Helper()
	c, err := client.New(s.base, tok, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// Two tenants (acme, and beta whose token the file holds as its SHA-256) beside the
// default tenant of the plain `tokens` setting, through the real binary: every route on
// another tenant's chat answers as for a chat without sandbox and changes nothing; lists
// show the caller's chats only; acme's max_sandboxes is 429 with Retry-After; each
// tenant's folders lie in its part of the volume root, and a folder is one chat's.
func TestTwoTenantsThroughTheBinary(t *testing.T) {
	sum := sha256.Sum256([]byte(betaToken))
	w := newWorld(t)
	conf := filepath.Join(w.dataDir, "sandboxd.yaml")
	yaml := "tenants:\n" +
		"  acme:\n    tokens: [" + acmeToken + "]\n    max_sandboxes: 2\n" +
		"  beta:\n    tokens: [\"sha256:" + hex.EncodeToString(sum[:]) + "\"]\n"
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	w.cfg.Settings = append(w.cfg.Settings, "SANDBOXD_CONFIG="+conf)
	srv := w.start()
	ctx := context.Background()
	def, acme, beta := srv.api, srv.as(acmeToken), srv.as(betaToken)
	vol := w.cfg.VolumeRoot

	// acme's chat, with a file in its workspace.
	chatA := newChat()
	a, res, err := acme.Create(ctx, chatA, client.CreateBody{})
	if err != nil || res != client.Created {
		t.Fatalf("acme creates: %v, %v", res, err)
	}
	if want := filepath.Join(vol, ".tenants", "acme", chatA); a.VolumeHostPath != want {
		t.Fatalf("acme's workspace = %s, want %s", a.VolumeHostPath, want)
	}
	if _, err := acme.Upload(ctx, chatA, "notes.txt", strings.NewReader("acme's")); err != nil {
		t.Fatal(err)
	}
	// The single-token setup: the default tenant's workspaces where they always were.
	chatD := newChat()
	d, _, err := def.Create(ctx, chatD, client.CreateBody{})
	if err != nil || d.VolumeHostPath != filepath.Join(vol, chatD) {
		t.Fatalf("the default tenant creates: %+v, %v; want its folder %s", d, err, filepath.Join(vol, chatD))
	}
	before := folderNames(t, vol)
	containers := w.labelled()

	// Every route of another tenant (beta, and the default tenant) on acme's chat.
	for name, c := range map[string]*client.Client{"beta": beta, "default": def} {
		notFound := func(route string, err error) {
			t.Helper()
			if !errors.Is(err, client.ErrNotFound) {
				t.Errorf("%s %s on acme's chat: %v, want not_found", name, route, err)
			}
		}
		_, err := c.Get(ctx, chatA)
		notFound("GET", err)
		_, _, err = c.Create(ctx, chatA, client.CreateBody{})
		notFound("PUT", err)
		_, err = c.Exec(ctx, chatA, client.ExecBody{Cmd: []string{"rm", "-rf", "/workspace/notes.txt"}})
		notFound("exec", err)
		_, err = c.Upload(ctx, chatA, "notes.txt", strings.NewReader("overwritten"))
		notFound("upload", err)
		_, err = c.Download(ctx, chatA, "notes.txt", io.Discard)
		notFound("download", err)
		_, err = c.ListFiles(ctx, chatA, "")
		notFound("list files", err)
		_, err = c.Keepalive(ctx, chatA, 2*time.Hour)
		notFound("keepalive", err)
		if del, err := c.Delete(ctx, chatA); err != nil || del.Result != client.NotFound {
			t.Errorf("%s DELETE sandbox of acme's chat: %+v, %v; want not_found", name, del, err)
		}
		if del, err := c.DeleteWorkspace(ctx, chatA); err != nil || del.Result != client.NotFound {
			t.Errorf("%s DELETE workspace of acme's chat: %+v, %v; want not_found", name, del, err)
		}
	}
	// MCP with beta's token on acme's chat: the tools find no sandbox.
	var resp *http.Response
	var body string
	for call, want := range map[string][]string{
		`{"name":"sandbox_status","arguments":{}}`:                                   {`"exists":false`},
		`{"name":"exec","arguments":{"shell":"rm -rf /workspace/notes.txt"}}`:        {`"isError":true`, "not_found"},
		`{"name":"write_file","arguments":{"path":"notes.txt","content":"changed"}}`: {`"isError":true`, "not_found"},
	} {
		resp, body = srv.rawAs(betaToken, http.MethodPost, "/mcp/chats/"+chatA, "application/json",
			`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":`+call+`}`,
			"Accept", "application/json, text/event-stream")
		for _, w := range want {
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, w) {
				t.Errorf("beta's MCP call %s on acme's chat: %d %s; want %s", call, resp.StatusCode, body, w)
			}
		}
	}

	// Nothing of acme's changed.
	got, err := acme.Get(ctx, chatA)
	if err != nil || got.SessionID != a.SessionID || got.ExpiresAt.Sub(a.ExpiresAt).Abs() > time.Millisecond || got.ContainerID != a.ContainerID {
		t.Fatalf("acme's chat after the others' calls: %+v, %v; want %+v unchanged", got, err, a)
	}
	var buf bytes.Buffer
	if _, err := acme.Download(ctx, chatA, "notes.txt", &buf); err != nil || buf.String() != "acme's" {
		t.Fatalf("acme's file after the others' calls: %q, %v", buf.String(), err)
	}
	if !w.running(a.ContainerID) {
		t.Fatal("acme's sandbox stopped running")
	}
	if after := folderNames(t, vol); after != before {
		t.Errorf("the volume root changed:\nbefore %s\nafter  %s", before, after)
	}
	if after := w.labelled(); !slices.Equal(after, containers) {
		t.Errorf("containers changed: %v, want %v", after, containers)
	}

	// Lists: each tenant its own.
	lists := map[*client.Client][]string{acme: {chatA}, beta: nil, def: {chatD}}
	for c, want := range lists {
		page, err := c.List(ctx, client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range page.Items {
			ids = append(ids, s.ChatID)
		}
		if !slices.Equal(ids, want) {
			t.Errorf("list = %v, want %v", ids, want)
		}
	}

	// acme's max_sandboxes (2): the third is 429 limit_exceeded with Retry-After, nothing made.
	if _, _, err := acme.Create(ctx, newChat(), client.CreateBody{}); err != nil {
		t.Fatalf("acme's second sandbox: %v", err)
	}
	containers = w.labelled()
	before = folderNames(t, vol)
	third := newChat()
	resp, body = srv.rawAs(acmeToken, http.MethodPut, "/v1/chats/"+third+"/sandbox", "application/json", `{}`)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, `"limit_exceeded"`) || resp.Header.Get("Retry-After") == "" {
		t.Errorf("acme's third sandbox: %d Retry-After %q %s; want 429 limit_exceeded with Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if after := folderNames(t, vol); after != before {
		t.Errorf("the refused create changed the volume root:\nbefore %s\nafter  %s", before, after)
	}
	// beta is not held back by acme's limit.
	if _, _, err := beta.Create(ctx, newChat(), client.CreateBody{}); err != nil {
		t.Fatalf("beta creates while acme is at its limit: %v", err)
	}
	if after := w.labelled(); len(after) != len(containers)+1 {
		t.Errorf("%d containers after acme's refused and beta's create, want %d", len(after), len(containers)+1)
	}

	// A folder is one chat's: 409 workspace_in_use, nothing made; another tenant's part
	// is not the caller's to name (422).
	project := filepath.Join(vol, "project")
	if err := os.Mkdir(project, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(project, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if _, _, err := def.Create(ctx, newChat(), client.CreateBody{VolumeHostPath: project}); err != nil {
		t.Fatalf("the default tenant's chat on a folder of its own: %v", err)
	}
	containers = w.labelled()
	for name, folder := range map[string]string{"another chat's sandbox's folder": project, "another chat's derived folder": d.VolumeHostPath} {
		_, _, err := def.Create(ctx, newChat(), client.CreateBody{VolumeHostPath: folder})
		var ce *client.Error
		if !errors.Is(err, client.ErrWorkspaceInUse) || !errors.As(err, &ce) || ce.Status != http.StatusConflict {
			t.Errorf("%s: %v, want 409 workspace_in_use", name, err)
		}
	}
	if _, _, err := acme.Create(ctx, newChat(), client.CreateBody{VolumeHostPath: project}); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("acme names a folder of the default tenant's part: %v, want 422", err)
	}
	if after := w.labelled(); !slices.Equal(after, containers) {
		t.Errorf("refused creates made containers: %v, want %v", after, containers)
	}
}
