package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"sync"

	"github.com/coder/websocket"
)

// TerminalProtocol is the WebSocket subprotocol of GET .../sandbox/terminal.
const TerminalProtocol = "sandboxd.terminal.v1"

// TermSize is a terminal's size in character cells.
type TermSize struct{ Cols, Rows int }

// TerminalOptions is what Terminal reads and writes.
type TerminalOptions struct {
	Stdin  io.Reader       // typed into the shell; its EOF or error does not end the session
	Stdout io.Writer       // the terminal's output, as it comes
	Size   TermSize        // the size to start with (zero: the server's default, 80x24)
	Resize <-chan TermSize // later sizes; nil: none
}

// ErrTerminalClosed is returned by Terminal when the connection ended without the
// server saying how the shell ended.
var ErrTerminalClosed = errors.New("client: terminal closed without an exit status")

// Terminal opens an interactive shell in the chat's sandbox, on a pseudo-terminal (GET
// /v1/chats/{chat_id}/sandbox/terminal, a WebSocket), copies o.Stdin to it and its
// output to o.Stdout, forwards o.Resize, and returns the shell's exit code once it ends.
// When ctx ends first the connection is closed, which kills the shell and all it started.
// A refusal (no sandbox, expired, busy) is an *Error, like every method's.
//
// Terminal does not wait for a Read of o.Stdin that blocks (os.Stdin, say) once the
// session has ended.
func (c *Client) Terminal(ctx context.Context, chatID string, o TerminalOptions) (int, error) {
	query := url.Values{}
	if o.Size.Cols > 0 && o.Size.Rows > 0 {
		query.Set("cols", strconv.Itoa(o.Size.Cols))
		query.Set("rows", strconv.Itoa(o.Size.Rows))
	}
	target := c.base.String() + sandboxPath(chatID) + "/terminal"
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	opts := &websocket.DialOptions{HTTPClient: c.hc, Subprotocols: []string{TerminalProtocol}}
	if c.token != "" {
		opts.HTTPHeader = map[string][]string{"Authorization": {"Bearer " + c.token}}
	}
	// The HTTP client's timeout would bound the whole session: the handshake alone is
	// bounded by ctx.
	hc := *c.hc
	hc.Timeout = 0
	opts.HTTPClient = &hc
	conn, resp, err := websocket.Dial(ctx, target, opts)
	if err != nil {
		if resp != nil && resp.StatusCode != 101 && resp.Body != nil {
			data, _ := io.ReadAll(resp.Body)
			return -1, problem(resp, data)
		}
		return -1, fmt.Errorf("client: terminal: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel, which ends the resize loop
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if o.Resize != nil {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case sz := <-o.Resize:
					b, _ := json.Marshal(map[string]any{"type": "resize", "cols": sz.Cols, "rows": sz.Rows})
					if conn.Write(ctx, websocket.MessageText, b) != nil {
						return
					}
				}
			}
		})
	}
	if o.Stdin != nil {
		go func() { // not waited for: its Read may block for ever
			buf := make([]byte, 32<<10)
			for {
				n, err := o.Stdin.Read(buf)
				if n > 0 && conn.Write(ctx, websocket.MessageBinary, buf[:n]) != nil {
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	out := o.Stdout
	if out == nil {
		out = io.Discard
	}
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return -1, ctx.Err()
			}
			return -1, fmt.Errorf("%w: %w", ErrTerminalClosed, err)
		}
		if typ == websocket.MessageBinary {
			if _, err := out.Write(data); err != nil {
				return -1, fmt.Errorf("client: terminal: output: %w", err)
			}
			continue
		}
		var m struct {
			Type     string `json:"type"`
			ExitCode *int   `json:"exit_code"`
			Status   int    `json:"status"`
			Code     string `json:"code"`
			Detail   string `json:"detail"`
		}
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		switch {
		case m.Type == "exit" && m.ExitCode != nil:
			_ = conn.Close(websocket.StatusNormalClosure, "")
			return *m.ExitCode, nil
		case m.Type == "error":
			_ = conn.Close(websocket.StatusNormalClosure, "")
			return -1, &Error{Status: m.Status, Code: m.Code, Detail: m.Detail}
		}
	}
}
