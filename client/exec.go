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
)

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

// Exec runs a command in the chat's live sandbox and returns once it ends, with its
// output. A timeout is no error: TimedOut says so. A chat with no sandbox is an *Error
// matching ErrNotFound; an expired one matches ErrExpired.
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
// discarded) as it comes, and returns once the command ends (ExecResult's Stdout and
// Stderr stay empty). Cancelling ctx kills the command. A run that fails after the
// output began is an *Error carrying the status and code the failure would have had.
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
