package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

const otherTenantToken = "e2e-other-tenant-token"

// withOtherTenant is the setting of a world whose sandboxd also knows the tenant "other",
// whose token is otherTenantToken.
func withOtherTenant(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.WriteFile(path, []byte("tenants:\n  other:\n    tokens: ["+otherTenantToken+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return "SANDBOXD_CONFIG=" + path
}

// terminal is one WebSocket session of GET .../sandbox/terminal, as a test drives it.
type terminal struct {
	t    *testing.T
	conn *websocket.Conn
	out  syncbuf.Buffer
	end  chan map[string]any // the final text message (nil: closed without one)
}

func dialTerminal(t *testing.T, base, chat, tok, query string, header bool) (*terminal, *http.Response, error) {
	t.Helper()
	opts := &websocket.DialOptions{Subprotocols: []string{client.TerminalProtocol}}
	if header {
		opts.HTTPHeader = http.Header{"Authorization": {"Bearer " + tok}}
	} else if tok != "" {
		opts.Subprotocols = append(opts.Subprotocols, "bearer."+base64.RawURLEncoding.EncodeToString([]byte(tok)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, base+"/v1/chats/"+chat+"/sandbox/terminal"+query, opts)
	if err != nil {
		return nil, resp, err
	}
	term := &terminal{t: t, conn: conn, end: make(chan map[string]any, 1)}
	t.Cleanup(func() { _ = conn.CloseNow() })
	go func() {
		for {
			typ, data, err := conn.Read(context.Background())
			if err != nil {
				term.end <- nil
				return
			}
			if typ == websocket.MessageBinary {
				_, _ = term.out.Write(data)
				continue
			}
			var m map[string]any
			_ = json.Unmarshal(data, &m)
			term.end <- m
			return
		}
	}()
	// The shell's prompt first: a line typed before it may reach a half-set-up terminal.
	term.waitFor("$ ")
	return term, resp, nil
}

func (term *terminal) send(typ websocket.MessageType, data string) {
	term.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := term.conn.Write(ctx, typ, []byte(data)); err != nil {
		term.t.Fatalf("write %q: %v", data, err)
	}
}

// waitFor waits until the output shows want.
func (term *terminal) waitFor(want string) {
	term.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(term.out.String(), want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			term.t.Fatalf("no %q within 20s; output:\n%q", want, term.out.String())
		}
	}
}

// typeUntil types line again until the output after it shows want: for what reaches the
// shell on another path than the typed input (a resize is an API call of its own, not
// ordered with the keystrokes).
func (term *terminal) typeUntil(line, want string) {
	term.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; {
		from := len(term.out.String())
		term.send(websocket.MessageBinary, line+"\r")
		time.Sleep(300 * time.Millisecond)
		if strings.Contains(term.out.String()[from:], want) {
			return
		}
		if time.Now().After(deadline) {
			term.t.Fatalf("no %q after typing %q within 20s; output:\n%q", want, line, term.out.String())
		}
	}
}

// typeLine types line and waits until the output shows want after it.
func (term *terminal) typeLine(line, want string) {
	term.t.Helper()
	from := len(term.out.String())
	term.send(websocket.MessageBinary, line+"\r")
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(term.out.String()[from:], want) {
		if time.Now().After(deadline) {
			term.t.Fatalf("no %q after typing %q within 20s; output:\n%q", want, line, term.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (term *terminal) final() map[string]any {
	term.t.Helper()
	select {
	case m := <-term.end:
		return m
	case <-time.After(30 * time.Second):
		term.t.Fatalf("no final message; output so far:\n%s", term.out.String())
		return nil
	}
}

// A shell on a pseudo-terminal over the WebSocket, against the real engine: typed input
// runs, the size given and a resize reach the terminal (stty size), the exit status is the
// final message; a browser's token offered as a subprotocol works; without a token 401,
// another tenant's token 404 (before any upgrade); the session holds an exec slot; and a
// client that leaves kills the shell and everything it started. All of it on both paths:
// through the in-sandbox agent's pseudo-terminal, and the engine's exec with a TTY
// (docker.agent none).
func TestTerminalOverWebSocket(t *testing.T) {
	for _, path := range []struct{ name, setting string }{
		{"agent", ""},
		{"engine", "SANDBOXD_DOCKER_AGENT=none"},
	} {
		t.Run(path.name, func(t *testing.T) {
			settings := []string{withOtherTenant(t), "SANDBOXD_EXEC_MAX_CONCURRENT=1"}
			if path.setting != "" {
				settings = append(settings, path.setting)
			}
			terminalOverWebSocket(t, newWorld(t, settings...), path.setting == "")
		})
	}
}

func terminalOverWebSocket(t *testing.T, w *world, viaAgent bool) {
	srv := w.start()
	ctx := context.Background()
	chat := newChat()
	if _, _, err := srv.api.Create(ctx, chat, client.CreateBody{}); err != nil {
		t.Fatal(err)
	}

	if _, resp, err := dialTerminal(t, srv.base, chat, "", "", false); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %v %v, want 401", resp, err)
	}
	if _, resp, err := dialTerminal(t, srv.base, chat, otherTenantToken, "", true); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("another tenant's token: %v %v %s, want 404", resp, err, b)
	}

	term, _, err := dialTerminal(t, srv.base, chat, token, "?cols=100&rows=30", true)
	if err != nil {
		t.Fatal(err)
	}
	term.typeLine("stty size", "30 100")
	term.send(websocket.MessageText, `{"type":"resize","cols":120,"rows":40}`)
	term.typeUntil("stty size", "40 120")
	term.typeLine("echo $((6*7)) $(id -u)", "42 1000")
	// The path taken: the agent is the shell's parent, or the engine's wrapper execs it.
	from := len(term.out.String())
	term.typeLine(`echo "parent:$(tr '\0' ' ' </proc/$PPID/cmdline 2>/dev/null):"`, ":\r\n")
	if got := term.out.String()[from:]; strings.Contains(got, "parent:/.sandboxd-agent :") != viaAgent {
		t.Errorf("the shell's parent: %q; through the agent: %v", got, viaAgent)
	}
	// The session is one of the sandbox's commands (exec.max_concurrent is 1 here).
	if _, err := srv.api.Exec(ctx, chat, client.ExecBody{Cmd: []string{"true"}}); !errors.Is(err, client.ErrBusy) {
		t.Errorf("exec beside an open terminal with exec.max_concurrent 1: %v, want busy", err)
	}
	term.send(websocket.MessageBinary, "exit 3\r")
	if m := term.final(); m == nil || m["type"] != "exit" || m["exit_code"] != float64(3) {
		t.Fatalf("final message %v, want exit 3; output:\n%s", m, term.out.String())
	}

	// A browser's WebSocket cannot send a header: the token comes as a subprotocol.
	term, _, err = dialTerminal(t, srv.base, chat, token, "", false)
	if err != nil {
		t.Fatal(err)
	}
	// Processes in the background, one in a session of its own: the client leaves.
	term.typeLine("sleep 1001 & setsid sleep 1002 & echo sta''rted", "started") // quoted: the echo of the typed line is not the answer
	_ = term.conn.CloseNow()
	var ps string
	waitfor.True(t, 30*time.Second, "the shell and what it started killed", func() bool {
		res, err := srv.api.Exec(ctx, chat, client.ExecBody{Cmd: []string{"ps", "-o", "pid,args"}})
		if err != nil {
			return false
		}
		ps = res.Stdout
		return !strings.Contains(ps, "sleep 100") && !strings.Contains(ps, "/bin/sh\n")
	})
	t.Logf("left in the sandbox:\n%s", ps)

	// The session ends when the sandbox does.
	term, _, err = dialTerminal(t, srv.base, chat, token, "", true)
	if err != nil {
		t.Fatal(err)
	}
	term.typeLine("echo still-''here", "still-here")
	if _, err := srv.api.Delete(ctx, chat); err != nil {
		t.Fatal(err)
	}
	if m := term.final(); m != nil && m["type"] == "exit" && m["exit_code"] == float64(0) {
		t.Errorf("final message after the sandbox was deleted: %v, want an error, a kill's exit or none", m)
	}
}

// A graceful shutdown ends the open terminals: their shells, and what they started, are
// killed before sandboxd exits (the sandbox itself runs on).
func TestShutdownKillsOpenTerminals(t *testing.T) {
	w := newWorld(t)
	srv := w.start()
	ctx := context.Background()
	chat := newChat()
	if _, _, err := srv.api.Create(ctx, chat, client.CreateBody{}); err != nil {
		t.Fatal(err)
	}
	term, _, err := dialTerminal(t, srv.base, chat, token, "", true)
	if err != nil {
		t.Fatal(err)
	}
	term.typeLine("sleep 1003 & echo sta''rted", "started") // quoted: the echo of the typed line is not the answer
	srv.stop(syscall.SIGTERM)
	term.final() // the connection ends

	srv = w.start()
	res, err := srv.api.Exec(ctx, chat, client.ExecBody{Cmd: []string{"ps", "-o", "pid,args"}})
	if err != nil || strings.Contains(res.Stdout, "sleep 1003") || strings.Contains(res.Stdout, "/bin/sh\n") {
		t.Errorf("after the shutdown the sandbox runs:\n%s %v", res.Stdout, err)
	}
}
