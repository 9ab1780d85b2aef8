package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/hostfiles"
	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/memstore"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

func TestMain(m *testing.M) {
	// The stdio MCP test runs this binary as sandboxctl.
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

const runMainEnv = "SANDBOXCTL_TEST_RUN_MAIN"

// dockerLengthID names the nth container with as many digits as the engine's ids have.
func dockerLengthID(n int, _ lifecycle.CreateSpec) string { return fmt.Sprintf("%064d", n) }

const token = "tok-123"

func newServer(t *testing.T) *httptest.Server {
	t.Helper()
	svc, err := lifecycle.New(lifecycle.Config{
		Store: memstore.New(), Locker: keylock.New(), Runtime: &lifecycletest.Runtime{ContainerID: dockerLengthID}, TTL: time.Hour,
		Executor: &lifecycletest.Executor{}, Files: hostfiles.New(hostfiles.Config{}),
		MaxLifetime: 2 * time.Hour, MaxFileBytes: 1 << 20,
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
	return srv
}

// sandboxctl runs the command line with the server and token in the environment.
func sandboxctl(t *testing.T, srv *httptest.Server, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	env := map[string]string{"SANDBOXD_URL": srv.URL, "SANDBOXD_TOKEN": token}
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), err
}

func mustRun(t *testing.T, srv *httptest.Server, args ...string) string {
	t.Helper()
	out, _, err := sandboxctl(t, srv, args...)
	if err != nil {
		t.Fatalf("sandboxctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

const (
	chatA = "11111111-1111-1111-1111-111111111111"
	chatB = "22222222-2222-2222-2222-222222222222"
)

func TestTables(t *testing.T) {
	srv := newServer(t)

	out := mustRun(t, srv, "create", strings.ReplaceAll(chatA, "-", ""), "--agent", "coder", "--volume", "/srv/a")
	for _, want := range []string{"RESULT     created", "CHAT       " + chatA, "AGENT      coder", "VOLUME     /srv/a", "STATUS     RUNNING", fmt.Sprintf("CONTAINER  %064d", 1)} {
		if !strings.Contains(out, want) {
			t.Errorf("create table lacks %q:\n%s", want, out)
		}
	}
	if out := mustRun(t, srv, "create", chatA, "--agent", "coder", "--volume", "/srv/a"); !strings.Contains(out, "RESULT     reused") {
		t.Errorf("second create:\n%s", out)
	}
	if out := mustRun(t, srv, "get", chatA); !strings.Contains(out, "CHAT       "+chatA) || strings.Contains(out, "RESULT") {
		t.Errorf("get table:\n%s", out)
	}
	mustRun(t, srv, "create", chatB)

	out = mustRun(t, srv, "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "CHAT") || !strings.HasPrefix(lines[1], chatA) ||
		!strings.Contains(lines[1], fmt.Sprintf(" %012d ", 0)) || !strings.Contains(lines[2], " - ") {
		t.Errorf("list table:\n%s", out)
	}
	out, stderr, err := sandboxctl(t, srv, "list", "--limit", "1")
	if err != nil || strings.Count(out, "\n") != 2 || stderr != "more: sandboxctl list --after "+chatA+"\n" {
		t.Errorf("list --limit 1: %v\n%s%s", err, out, stderr)
	}
	if out := mustRun(t, srv, "list", "--agent", "coder"); strings.Count(out, "\n") != 2 || strings.Contains(out, chatB) {
		t.Errorf("list --agent coder:\n%s", out)
	}
	if out := mustRun(t, srv, "list", "--expired"); strings.Count(out, "\n") != 1 {
		t.Errorf("list --expired:\n%s", out)
	}

	if out := mustRun(t, srv, "delete", chatA); !strings.Contains(out, "RESULT     deleted") || !strings.Contains(out, fmt.Sprintf("%064d", 1)) {
		t.Errorf("delete table:\n%s", out)
	}
	if out := mustRun(t, srv, "delete", chatA); !strings.Contains(out, "RESULT     not_found") || !strings.Contains(out, "SESSION    -") {
		t.Errorf("second delete table:\n%s", out)
	}
}

func TestJSON(t *testing.T) {
	srv := newServer(t)
	var created struct {
		client.Session
		Result string `json:"result"`
	}
	decode(t, mustRun(t, srv, "create", chatA, "--agent", "coder", "--json"), &created)
	if created.Result != "created" || created.ChatID != chatA || created.AgentID != "coder" || created.SessionID == "" {
		t.Errorf("create --json = %+v", created)
	}
	var got client.Session
	decode(t, mustRun(t, srv, "--json", "get", chatA), &got)
	if got.SessionID != created.SessionID {
		t.Errorf("get --json = %+v", got)
	}
	var page client.Page
	decode(t, mustRun(t, srv, "list", "--json", "--expired=false"), &page)
	if len(page.Items) != 1 || page.Items[0].ChatID != chatA || page.Next != "" {
		t.Errorf("list --json = %+v", page)
	}
	var del client.DeleteResult
	decode(t, mustRun(t, srv, "delete", chatA, "--json"), &del)
	if del != (client.DeleteResult{ChatID: chatA, Result: client.Deleted, SessionID: created.SessionID, ContainerID: created.ContainerID}) {
		t.Errorf("delete --json = %+v", del)
	}
}

func decode(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%v in %q", err, s)
	}
}

func TestErrors(t *testing.T) {
	srv := newServer(t)
	_, _, err := sandboxctl(t, srv, "get", chatA)
	if !errors.Is(err, client.ErrNotFound) || strings.Contains(err.Error(), "\n") {
		t.Errorf("get of a chat with no sandbox: %v, want a one-line 404", err)
	}
	_, _, err = sandboxctl(t, srv, "create", "not-a-chat")
	if !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), `"not-a-chat"`) {
		t.Errorf("create of a malformed chat: %v", err)
	}
	_, _, err = sandboxctl(t, srv, "--token", "wrong", "list")
	var p *client.Error
	if !errors.As(err, &p) || p.Status != 401 {
		t.Errorf("list with a wrong token: %v, want 401", err)
	}
	_, _, err = sandboxctl(t, srv, "--server", "http://127.0.0.1:1", "list")
	if err == nil {
		t.Error("list against no server: no error")
	}
	if _, _, err := sandboxctl(t, srv, "get"); err == nil {
		t.Error("get without a chat: no error")
	}
	if _, _, err := sandboxctl(t, srv, "frobnicate"); err == nil {
		t.Error("unknown command: no error")
	}
}

func TestSpinner(t *testing.T) {
	var buf syncbuf.Buffer
	stop := spin(&buf, "waiting", time.Millisecond)
	waitfor.True(t, 5*time.Second, "a spinner frame", func() bool { return strings.Contains(buf.String(), "⠋ waiting") })
	stop()
	stop() // idempotent
	out := buf.String()
	if !strings.Contains(out, "⠋ waiting") || !strings.HasSuffix(out, "\r\033[K") {
		t.Errorf("spinner wrote %q", out)
	}
	// Not a terminal: nothing is written and nothing keeps running.
	var quiet bytes.Buffer
	startSpinner(&quiet, "waiting")()
	if quiet.Len() != 0 {
		t.Errorf("spinner on a buffer wrote %q", quiet.String())
	}
}
