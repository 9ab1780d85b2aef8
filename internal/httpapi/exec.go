package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Running a command in the chat's sandbox: POST /v1/chats/{chat_id}/sandbox/exec.
//
// The answer is one JSON document once the command ends, or, with Accept:
// application/x-ndjson, a stream of JSON lines written as the output comes. The stream's
// headers go out with its first line, so a request refused before the command starts
// (no sandbox, expired, bad body) still gets its status and a problem document.

const ndjson = "application/x-ndjson"

// streamIdle is how long one write to (or read from) a streaming client may stall. The
// server's own timeouts are lifted on streaming routes, whose length the command or the
// file decides; this rolling deadline still frees the handler from a client that stopped
// reading.
const streamIdle = time.Minute

// execBody is the body of POST .../exec.
type execBody struct {
	Cmd      []string          `json:"cmd" minItems:"1" maxItems:"4096" doc:"The argv; cmd[0] is looked up in the sandbox's PATH." example:"[\"sh\",\"-c\",\"echo hi\"]"`
	Env      map[string]string `json:"env,omitempty" doc:"Environment variables added to the sandbox's. SANDBOXD_EXEC is sandboxd's own (the command's kill token) and refused."`
	Workdir  string            `json:"workdir,omitempty" maxLength:"4096" doc:"Working folder; default the workspace."`
	Stdin    string            `json:"stdin,omitempty" doc:"Sent to the command's standard input, which is then closed."`
	TimeoutS int64             `json:"timeout_s,omitempty" minimum:"0" doc:"Seconds before the command is killed; 0 or absent: the configured default. Over the configured maximum: 422."`
}

// execResult is the buffered answer of exec.
type execResult struct {
	ExitCode   int    `json:"exit_code" doc:"The command's exit code; -1 when it was killed for its timeout."`
	Stdout     string `json:"stdout" doc:"Standard output (bytes that are not UTF-8 are replaced)."`
	Stderr     string `json:"stderr"`
	TimedOut   bool   `json:"timed_out" doc:"The command ran past its timeout and was killed."`
	Truncated  bool   `json:"truncated" doc:"Output past the configured cap was dropped."`
	DurationMS int64  `json:"duration_ms"`
}

// execEvent is one line of the ndjson answer: stdout and stderr chunks as they come,
// then one exit (or, when the run fails after the stream began, one error).
type execEvent struct {
	Type       string `json:"type" enum:"stdout,stderr,exit,error"`
	Data       string `json:"data,omitempty" doc:"stdout, stderr: a chunk of output."`
	ExitCode   *int   `json:"exit_code,omitempty" doc:"exit: the exit code (-1 when killed for its timeout)."`
	TimedOut   *bool  `json:"timed_out,omitempty" doc:"exit: the command was killed for its timeout."`
	Truncated  *bool  `json:"truncated,omitempty" doc:"exit: output past the cap was dropped."`
	DurationMS *int64 `json:"duration_ms,omitempty" doc:"exit: how long the command ran."`
	Status     int    `json:"status,omitempty" doc:"error: the HTTP status the failure would have had."`
	Code       string `json:"code,omitempty" doc:"error: the error's code, as in problem documents."`
	Detail     string `json:"detail,omitempty" doc:"error: what went wrong."`
}

type execInput struct {
	ChatID string `path:"chat_id" maxLength:"64" doc:"The chat's UUID, in any spelling (hyphens or not, any case, braces, urn)." example:"0b6f1f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a"`
	Accept string `header:"Accept" doc:"application/x-ndjson for a stream of events; anything else for one JSON answer."`
	Body   execBody
}

func (s *server) registerExec(api huma.API) {
	registry := api.OpenAPI().Components.Schemas
	resultSchema := registry.Schema(reflect.TypeFor[execResult](), true, "execResult")
	eventSchema := registry.Schema(reflect.TypeFor[execEvent](), true, "execEvent")
	huma.Register(api, s.v1(huma.Operation{
		OperationID: "exec-sandbox",
		Method:      http.MethodPost,
		Path:        "/chats/{chat_id}/sandbox/exec",
		Summary:     "Run a command in the chat's sandbox",
		Description: "Runs cmd in the chat's live sandbox and answers once it ends: exit code, output " +
			"(cut past the configured cap, and then flagged truncated), whether it was killed for its timeout. " +
			"With Accept: application/x-ndjson the answer is a stream of JSON lines instead: " +
			"stdout and stderr events as the output comes, then one exit event " +
			"(or one error event when the run fails after the stream began). " +
			"A client that goes away kills its command. Concurrent commands in one sandbox are independent.",
		Tags: []string{"sandbox"},
		Responses: map[string]*huma.Response{
			"200": {
				Description: "The command ended (or, streaming, started).",
				Content: map[string]*huma.MediaType{
					"application/json": {Schema: resultSchema},
					ndjson:             {Schema: eventSchema},
				},
			},
		},
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusRequestEntityTooLarge,
			http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity, http.StatusTooManyRequests,
			http.StatusServiceUnavailable},
	}), s.exec)
}

func (s *server) exec(ctx context.Context, in *execInput) (*huma.StreamResponse, error) {
	req, err := execRequest(in)
	if err != nil {
		return nil, s.fail(ctx, "exec-sandbox", err)
	}
	if wantsNDJSON(in.Accept) {
		return &huma.StreamResponse{Body: func(hctx huma.Context) { s.streamExec(hctx, req) }}, nil
	}
	// The answer is held whole until it is sent: it takes its share of the budget of
	// buffered answers first, and gives it back once written.
	if !s.execBuffers.take(s.execCost) {
		return nil, s.fail(ctx, "exec-sandbox", fmt.Errorf(
			"buffered exec answers hold as much memory as sandboxd allows (exec.max_buffered_bytes); stream the output instead (Accept: %s) or try again later: %w",
			ndjson, sandbox.ErrBusy))
	}
	held := true
	defer func() {
		if held {
			s.execBuffers.give(s.execCost)
		}
	}()
	var stdout, stderr strings.Builder
	req.Stdout, req.Stderr = &stdout, &stderr
	res, err := s.sandboxes.Exec(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, clientGone()
		}
		return nil, s.fail(ctx, "exec-sandbox", err)
	}
	held = false // until the body below has been written
	body := execResult{
		ExitCode: res.ExitCode, Stdout: stdout.String(), Stderr: stderr.String(),
		TimedOut: res.TimedOut, Truncated: res.Truncated, DurationMS: res.Duration.Milliseconds(),
	}
	return &huma.StreamResponse{Body: func(hctx huma.Context) {
		defer s.execBuffers.give(s.execCost)
		_, w := humago.Unwrap(hctx)
		// The command may have outlived the server's write timeout.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(streamIdle))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_ = json.NewEncoder(w).Encode(body)
	}}, nil
}

// BufferedExecCost is what one buffered exec answer may hold at its peak, for an output
// cap of outputCap bytes (stdout and stderr together): the output itself, and its JSON
// (a byte that must be escaped, or an invalid one replaced, becomes up to 6 bytes).
func BufferedExecCost(outputCap int64) int64 {
	return 7*outputCap + 4<<10
}

// budget is a count of bytes that requests reserve and give back; it never waits.
type budget struct {
	mu   sync.Mutex
	left int64
}

// take reserves n bytes; false when fewer are left.
func (b *budget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n > b.left {
		return false
	}
	b.left -= n
	return true
}

func (b *budget) give(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.left += n
}

// execRequest checks the body and makes the use case's request (without outputs).
func execRequest(in *execInput) (lifecycle.ExecRequest, error) {
	chatID, err := sandbox.ParseChatID(in.ChatID)
	if err != nil {
		return lifecycle.ExecRequest{}, err
	}
	timeout, err := seconds("timeout_s", in.Body.TimeoutS)
	if err != nil {
		return lifecycle.ExecRequest{}, err
	}
	req := lifecycle.ExecRequest{
		ChatID: chatID, Cmd: in.Body.Cmd, Env: in.Body.Env, Workdir: in.Body.Workdir, Timeout: timeout,
	}
	if in.Body.Stdin != "" {
		req.Stdin = strings.NewReader(in.Body.Stdin)
	}
	return req, nil
}

// seconds turns a count of seconds from a body into a duration, refusing what would
// overflow one.
func seconds(field string, n int64) (time.Duration, error) {
	if n < 0 || n > math.MaxInt64/int64(time.Second) {
		return 0, fmt.Errorf("%s %d is out of range: %w", field, n, sandbox.ErrInvalid)
	}
	return time.Duration(n) * time.Second, nil
}

// wantsNDJSON reports whether the Accept header asks for the event stream.
func wantsNDJSON(accept string) bool {
	for part := range strings.SplitSeq(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && mt == ndjson {
			return true
		}
	}
	return false
}

// streamExec runs the command and writes its events as they come.
func (s *server) streamExec(hctx huma.Context, req lifecycle.ExecRequest) {
	r, w := humago.Unwrap(hctx)
	ctx := r.Context()
	ev := &eventStream{w: w, rc: http.NewResponseController(w)}
	// The command's timeout, not the server's write timeout, bounds this answer.
	_ = ev.rc.SetWriteDeadline(time.Time{})
	stdout, stderr := &eventWriter{s: ev, typ: "stdout"}, &eventWriter{s: ev, typ: "stderr"}
	req.Stdout, req.Stderr = stdout, stderr

	res, err := s.sandboxes.Exec(ctx, req)
	// Output held back to keep a character whole is sent as it is.
	stdout.flush()
	stderr.flush()
	if err != nil {
		if ctx.Err() != nil {
			return // the client is gone, and its command was killed
		}
		p := asProblem(s.fail(ctx, "exec-sandbox", err))
		if !ev.started() {
			if p.Status == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", retryAfter)
			}
			writeProblemDoc(w, p)
			return
		}
		_ = ev.send(execEvent{Type: "error", Status: p.Status, Code: p.Code, Detail: p.Detail})
		return
	}
	_ = ev.send(execEvent{
		Type: "exit", ExitCode: &res.ExitCode, TimedOut: &res.TimedOut, Truncated: &res.Truncated,
		DurationMS: ptr(res.Duration.Milliseconds()),
	})
}

// clientGone is the answer, never read, to a client that left before it.
func clientGone() error {
	return huma.NewError(statusClientClosed, "client closed the request")
}

// statusClientClosed is logged for requests whose client left (nginx's 499).
const statusClientClosed = 499

func ptr[T any](v T) *T { return &v }

// eventStream writes ndjson events, one whole line at a time, flushing each. The first
// event sends the headers.
type eventStream struct {
	w  http.ResponseWriter
	rc *http.ResponseController

	mu    sync.Mutex
	begun bool
	err   error // the first failed write; later events are dropped
}

func (e *eventStream) started() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.begun
}

func (e *eventStream) send(ev execEvent) error {
	line, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return e.err
	}
	if !e.begun {
		e.begun = true
		e.w.Header().Set("Content-Type", ndjson)
		e.w.Header().Set("X-Content-Type-Options", "nosniff")
		e.w.WriteHeader(http.StatusOK)
	}
	_ = e.rc.SetWriteDeadline(time.Now().Add(streamIdle))
	if _, err := e.w.Write(line); err != nil {
		e.err = err
		return err
	}
	if err := e.rc.Flush(); err != nil {
		e.err = err
		return err
	}
	return nil
}

// eventWriter turns one output stream of the command into events. A chunk that ends
// inside a UTF-8 character keeps that character's first bytes for the next chunk, so
// that the JSON strings carry whole characters.
type eventWriter struct {
	s   *eventStream
	typ string

	mu      sync.Mutex
	pending []byte
}

func (ew *eventWriter) Write(p []byte) (int, error) {
	ew.mu.Lock()
	defer ew.mu.Unlock()
	data := append(ew.pending, p...)
	whole := len(data) - incompleteTail(data)
	ew.pending = append([]byte(nil), data[whole:]...)
	if whole == 0 {
		return len(p), nil
	}
	if err := ew.s.send(execEvent{Type: ew.typ, Data: string(data[:whole])}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// flush sends what Write held back.
func (ew *eventWriter) flush() {
	ew.mu.Lock()
	defer ew.mu.Unlock()
	if len(ew.pending) > 0 {
		_ = ew.s.send(execEvent{Type: ew.typ, Data: string(ew.pending)})
		ew.pending = nil
	}
}

// incompleteTail is how many bytes at the end of b begin a UTF-8 character that b
// does not finish.
func incompleteTail(b []byte) int {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(b); i++ {
		c := b[len(b)-i]
		if utf8.RuneStart(c) {
			if c >= utf8.RuneSelf && !utf8.FullRune(b[len(b)-i:]) {
				return i
			}
			return 0
		}
	}
	return 0
}

// idleWriter writes to a client under a rolling deadline.
type idleWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (iw idleWriter) Write(p []byte) (int, error) {
	_ = iw.rc.SetWriteDeadline(time.Now().Add(streamIdle))
	return iw.w.Write(p)
}
