package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// An interactive terminal: GET /v1/chats/{chat_id}/sandbox/terminal upgrades to a
// WebSocket that carries a shell on a pseudo-terminal in the chat's sandbox.
//
// Client to server: binary messages are typed input; text messages are JSON control
// messages, {"type":"resize","cols":C,"rows":R}. Server to client: binary messages are the
// terminal's output; one final text message, {"type":"exit","exit_code":N} or
// {"type":"error","status":S,"code":C,"detail":D}, then a normal close. Everything a
// request is refused for before the upgrade (no token, another tenant's chat, no
// sandbox, an expired one) is answered as by every route, with a problem document.

// TerminalProtocol is the WebSocket subprotocol of the terminal. A browser, which cannot
// set an Authorization header on a WebSocket, offers its bearer token as a second
// subprotocol, TokenProtocolPrefix followed by the token in unpadded base64url.
const (
	TerminalProtocol    = "sandboxd.terminal.v1"
	TokenProtocolPrefix = "bearer."
)

// maxTerminalMessage bounds one message a client sends (typed input or a control).
const maxTerminalMessage = 64 << 10

type terminalInput struct {
	ChatID string `path:"chat_id" maxLength:"64" doc:"The chat's UUID, in any spelling (hyphens or not, any case, braces, urn)." example:"0b6f1f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a"`
	Cols   int    `query:"cols" minimum:"0" maximum:"10000" doc:"The terminal's width in columns to start with (0 or absent: 80)."`
	Rows   int    `query:"rows" minimum:"0" maximum:"10000" doc:"The terminal's height in rows to start with (0 or absent: 24)."`
}

// terminalMessage is a JSON text message of the terminal's WebSocket, either way.
type terminalMessage struct {
	Type     string `json:"type" enum:"resize,exit,error" doc:"resize (client): new size; exit (server): the shell ended; error (server): the session failed."`
	Cols     int    `json:"cols,omitempty" doc:"resize: columns."`
	Rows     int    `json:"rows,omitempty" doc:"resize: rows."`
	ExitCode *int   `json:"exit_code,omitempty" doc:"exit: the shell's exit code."`
	Status   int    `json:"status,omitempty" doc:"error: the HTTP status the failure would have had."`
	Code     string `json:"code,omitempty" doc:"error: the error's code, as in problem documents."`
	Detail   string `json:"detail,omitempty" doc:"error: what went wrong."`
}

func (s *server) registerTerminal(api huma.API) {
	msgSchema := api.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[terminalMessage](), true, "terminalMessage")
	huma.Register(api, s.v1(huma.Operation{
		OperationID: "terminal-sandbox",
		Method:      http.MethodGet,
		Path:        "/chats/{chat_id}/sandbox/terminal",
		Summary:     "An interactive shell in the chat's sandbox (WebSocket)",
		Description: "Upgrades to a WebSocket (subprotocol " + TerminalProtocol + ") carrying a shell, as the sandbox's user, " +
			"on a pseudo-terminal in the chat's live sandbox. Client to server: binary messages are typed input, " +
			"text messages JSON controls ({\"type\":\"resize\",\"cols\":C,\"rows\":R}). Server to client: binary messages are " +
			"the terminal's output, then one JSON text message, {\"type\":\"exit\",\"exit_code\":N} or " +
			"{\"type\":\"error\",\"status\":S,\"code\":C,\"detail\":D}, and a normal close. " +
			"The session counts as one of the sandbox's concurrent commands (exec.max_concurrent) and its tenant's; " +
			"it ends when the shell exits or the sandbox ends, and a client that leaves kills the shell and everything it started. " +
			"Browsers, which cannot send an Authorization header on a WebSocket, may offer the token as a second subprotocol, " +
			TokenProtocolPrefix + "<the token in unpadded base64url>. Refusals before the upgrade are problem documents; " +
			"a refusal after it (busy, limit_exceeded) is an error message.",
		Tags: []string{"sandbox"},
		Extensions: map[string]any{
			// Not part of the plain HTTP SDKs (a WebSocket); the Go client's Terminal speaks it.
			"x-websocket": true,
		},
		Responses: map[string]*huma.Response{
			"101": {
				Description: "Switching Protocols: the WebSocket of the terminal; its text messages are terminalMessage documents.",
				Content:     map[string]*huma.MediaType{"application/json": {Schema: msgSchema}},
			},
		},
		Errors: []int{http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity,
			http.StatusServiceUnavailable},
	}), s.terminal)
}

func (s *server) terminal(ctx context.Context, in *terminalInput) (*huma.StreamResponse, error) {
	chatID, err := sandbox.ParseChatID(in.ChatID)
	if err != nil {
		return nil, s.fail(ctx, "terminal-sandbox", err)
	}
	// Refused before the upgrade, as any route refuses: another tenant's chat is none.
	session, err := s.sandboxes.Get(ctx, chatID)
	if err != nil {
		return nil, s.fail(ctx, "terminal-sandbox", err)
	}
	if session.Expired(s.now()) {
		return nil, s.fail(ctx, "terminal-sandbox", fmt.Errorf("chat %s: sandbox %s expired at %s: %w",
			chatID, session.ID, session.ExpiresAt.Format(time.RFC3339), sandbox.ErrExpired))
	}
	return &huma.StreamResponse{Body: func(hctx huma.Context) {
		r, w := humago.Unwrap(hctx)
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			writeProblemDoc(w, newProblem(http.StatusBadRequest, CodeBadRequest,
				"this route upgrades to a WebSocket (subprotocol "+TerminalProtocol+"); send a WebSocket handshake"))
			return
		}
		// The session lasts as long as the shell: lift the server's timeouts, which the
		// hijacked connection would otherwise keep.
		if s.terminals != nil {
			// Before the hijack, which takes the connection out of the server's
			// Shutdown: the caller's wait then sees it.
			s.terminals.Add(1)
			defer s.terminals.Done()
		}
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Time{})
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{TerminalProtocol}})
		if err != nil {
			return // Accept answered the client
		}
		s.serveTerminal(hctx.Context(), conn, lifecycle.TerminalRequest{ChatID: chatID, TerminalIO: lifecycle.TerminalIO{
			Size: lifecycle.TermSize{Cols: uint16(in.Cols), Rows: uint16(in.Rows)},
		}})
	}}, nil
}

// serveTerminal runs the terminal's session on conn until the shell ends or the client
// leaves, then sends the final message and closes conn.
func (s *server) serveTerminal(ctx context.Context, conn *websocket.Conn, req lifecycle.TerminalRequest) {
	defer conn.CloseNow()
	conn.SetReadLimit(maxTerminalMessage)
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	if s.stop != nil {
		defer context.AfterFunc(s.stop, cancel)() // the service stops: the shell is killed
	}
	stdin, typed := io.Pipe()
	resize := make(chan lifecycle.TermSize, 1)
	req.Stdin, req.Resize = stdin, resize
	req.Stdout = &wsWriter{ctx: ctx, conn: conn}

	var reading sync.WaitGroup
	reading.Go(func() {
		// The client is gone when its side of the connection ends: the session's context
		// ends with it, which kills the shell.
		defer cancel()
		for {
			typ, data, err := conn.Read(ctx)
			if err != nil {
				_ = typed.CloseWithError(err)
				return
			}
			if typ == websocket.MessageBinary {
				if _, err := typed.Write(data); err != nil {
					return
				}
				continue
			}
			var m terminalMessage
			if json.Unmarshal(data, &m) != nil || m.Type != "resize" || m.Cols <= 0 || m.Rows <= 0 || m.Cols > 10000 || m.Rows > 10000 {
				continue // an unknown or malformed control changes nothing
			}
			select { // only the latest size matters
			case <-resize:
			default:
			}
			resize <- lifecycle.TermSize{Cols: uint16(m.Cols), Rows: uint16(m.Rows)}
		}
	})
	code, err := s.sandboxes.Terminal(ctx, req)
	_ = stdin.Close() // ends a write of the reader above that nobody reads any more
	final := terminalMessage{Type: "exit", ExitCode: &code}
	if err != nil {
		p := asProblem(s.fail(ctx, "terminal-sandbox", err))
		final = terminalMessage{Type: "error", Status: p.Status, Code: p.Code, Detail: p.Detail}
	}
	if ctx.Err() == nil {
		b, _ := json.Marshal(final)
		wctx, stop := context.WithTimeout(ctx, streamIdle)
		if conn.Write(wctx, websocket.MessageText, b) == nil {
			_ = conn.Close(websocket.StatusNormalClosure, final.Type)
		}
		stop()
	}
	_ = conn.CloseNow()
	reading.Wait()
}

// wsWriter sends each write as one binary message; a client that stops reading for
// streamIdle fails it (and so ends the session).
type wsWriter struct {
	ctx  context.Context
	conn *websocket.Conn
}

func (w *wsWriter) Write(p []byte) (int, error) {
	ctx, cancel := context.WithTimeout(w.ctx, streamIdle)
	defer cancel()
	if err := w.conn.Write(ctx, websocket.MessageBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// tokenFromProtocols returns the bearer token a WebSocket handshake offers as a
// subprotocol (TokenProtocolPrefix + unpadded base64url), if any.
func tokenFromProtocols(r *http.Request) (string, bool) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return "", false
	}
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			enc, ok := strings.CutPrefix(strings.TrimSpace(p), TokenProtocolPrefix)
			if !ok {
				continue
			}
			b, err := base64.RawURLEncoding.DecodeString(enc)
			if err != nil || len(b) == 0 {
				return "", false
			}
			return string(b), true
		}
	}
	return "", false
}
