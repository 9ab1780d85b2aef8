package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"time"
)

// What agents do inside their sandbox: run commands, move files, keep it alive.

// ExecBody is a command to run in a chat's sandbox.
type ExecBody struct {
	Cmd     []string          `json:"cmd"`
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir,omitempty"`
	Stdin   string            `json:"stdin,omitempty"`
	// TimeoutS is the timeout in whole seconds; 0: the server's default.
	TimeoutS int64 `json:"timeout_s,omitempty"`
}

// ExecResult is how a command ended. Stdout and Stderr are filled by Exec only;
// ExecStream writes them as they come.
type ExecResult struct {
	ExitCode   int    `json:"exit_code"` // -1 when the command was killed for its timeout
	Stdout     string `json:"stdout"`
	Stderr     string `json:"stderr"`
	TimedOut   bool   `json:"timed_out"`
	Truncated  bool   `json:"truncated"` // output past the server's cap was dropped
	DurationMS int64  `json:"duration_ms"`
}

// FileInfo is one entry of a sandbox's workspace.
type FileInfo struct {
	Path    string    `json:"path"` // relative to the workspace
	Size    int64     `json:"size"`
	Mode    string    `json:"mode"` // as ls -l shows it
	ModTime time.Time `json:"mod_time"`
	IsDir   bool      `json:"is_dir"`
}

// Exec runs a command in the chat's live sandbox and returns once it ends, with its
// output. A timeout is no error: TimedOut says so. A chat with no sandbox is an *Error
// matching sandbox.ErrNotFound; an expired one matches sandbox.ErrExpired (409).
func (c *Client) Exec(ctx context.Context, chatID string, body ExecBody) (ExecResult, error) {
	var out ExecResult
	if err := c.do(ctx, http.MethodPost, sandboxPath(chatID)+"/exec", nil, body, &out); err != nil {
		return ExecResult{}, err
	}
	return out, nil
}

// execEvent is one line of the streamed answer.
type execEvent struct {
	Type       string `json:"type"`
	Data       string `json:"data"`
	ExitCode   int    `json:"exit_code"`
	TimedOut   bool   `json:"timed_out"`
	Truncated  bool   `json:"truncated"`
	DurationMS int64  `json:"duration_ms"`
	Status     int    `json:"status"`
	Code       string `json:"code"`
	Detail     string `json:"detail"`
}

// ExecStream runs a command like Exec but writes its output to stdout and stderr (nil:
// discarded) as it comes. Cancelling ctx kills the command. A run that fails after the
// output began is an *Error carrying the status the failure would have had.
func (c *Client) ExecStream(ctx context.Context, chatID string, body ExecBody, stdout, stderr io.Writer) (ExecResult, error) {
	const op = "client: exec"
	b, err := json.Marshal(body)
	if err != nil {
		return ExecResult{}, fmt.Errorf("%s: encode body: %w", op, err)
	}
	resp, err := c.send(ctx, http.MethodPost, sandboxPath(chatID)+"/exec", nil, bytes.NewReader(b),
		"application/json", "application/x-ndjson")
	if err != nil {
		return ExecResult{}, err
	}
	defer resp.Body.Close()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/x-ndjson" {
		return ExecResult{}, fmt.Errorf("%s: the server answered %q, not a stream of events", op, mt)
	}
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev execEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return ExecResult{}, fmt.Errorf("%s: the stream ended before the command did: %w", op, err)
		}
		switch ev.Type {
		case "stdout", "stderr":
			w := stdout
			if ev.Type == "stderr" {
				w = stderr
			}
			if _, err := io.WriteString(w, ev.Data); err != nil {
				return ExecResult{}, fmt.Errorf("%s: write %s: %w", op, ev.Type, err)
			}
		case "exit":
			return ExecResult{ExitCode: ev.ExitCode, TimedOut: ev.TimedOut, Truncated: ev.Truncated, DurationMS: ev.DurationMS}, nil
		case "error":
			status := ev.Status
			if status == 0 {
				status = http.StatusInternalServerError
			}
			return ExecResult{}, &Error{Status: status, Title: http.StatusText(status), Code: ev.Code, Detail: ev.Detail}
		}
		// Unknown event types are for newer clients.
	}
}

// Upload writes r to path in the chat's workspace, replacing the file whole. r is
// streamed, not held in memory. A file over the server's limit is an *Error matching
// sandbox.ErrTooLarge; a path outside the workspace one matching sandbox.ErrInvalid.
func (c *Client) Upload(ctx context.Context, chatID, path string, r io.Reader) (FileInfo, error) {
	resp, err := c.send(ctx, http.MethodPut, filesPath(chatID), url.Values{"path": {path}}, r,
		"application/octet-stream", "application/json")
	if err != nil {
		return FileInfo{}, err
	}
	defer resp.Body.Close()
	var out FileInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return FileInfo{}, fmt.Errorf("client: upload %s: decode answer: %w", path, err)
	}
	return out, nil
}

// Download writes the file path of the chat's workspace to w and returns how many
// bytes it wrote. An answer cut short is an error wrapping io.ErrUnexpectedEOF.
func (c *Client) Download(ctx context.Context, chatID, path string, w io.Writer) (int64, error) {
	resp, err := c.send(ctx, http.MethodGet, filesPath(chatID), url.Values{"path": {path}}, nil, "", "application/octet-stream")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("client: download %s: %w", path, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("client: download %s: got %d of %d bytes: %w", path, n, resp.ContentLength, io.ErrUnexpectedEOF)
	}
	return n, nil
}

// ListFiles lists the folder path of the chat's workspace ("" for the workspace).
func (c *Client) ListFiles(ctx context.Context, chatID, path string) ([]FileInfo, error) {
	var q url.Values
	if path != "" {
		q = url.Values{"path": {path}}
	}
	var out struct {
		Items []FileInfo `json:"items"`
	}
	if err := c.do(ctx, http.MethodGet, filesPath(chatID)+"/list", q, nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// Keepalive sets the chat's live sandbox to expire ttl from now (rounded up to whole
// seconds), within the server's maximum lifetime, and returns it. An expired sandbox is
// an *Error matching sandbox.ErrExpired: it is not revived.
func (c *Client) Keepalive(ctx context.Context, chatID string, ttl time.Duration) (Session, error) {
	body := struct {
		TTLS int64 `json:"ttl_s"`
	}{TTLS: int64((ttl + time.Second - 1) / time.Second)}
	var out Session
	if err := c.do(ctx, http.MethodPost, sandboxPath(chatID)+"/keepalive", nil, body, &out); err != nil {
		return Session{}, err
	}
	return out, nil
}

func filesPath(chatID string) string { return sandboxPath(chatID) + "/files" }
