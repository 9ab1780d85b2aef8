package mcpserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// tools are the tools of one chat. Their inputs and outputs are Go types, from which
// the SDK generates the JSON schemas the client sees.
type tools struct {
	s     *server
	chat  uuid.UUID
	agent string
}

// Session is the chat's sandbox as the tools describe it.
type Session struct {
	SessionID string    `json:"session_id"`
	Status    string    `json:"status" jsonschema:"RUNNING while the sandbox lives"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at" jsonschema:"when the sandbox is removed unless kept alive"`
	AgentID   string    `json:"agent_id,omitempty"`
	Expired   bool      `json:"expired"`
}

// StatusOutput is sandbox_status's answer.
type StatusOutput struct {
	Exists  bool     `json:"exists" jsonschema:"whether the chat has a sandbox"`
	Sandbox *Session `json:"sandbox,omitempty"`
}

// CreateOutput is sandbox_create's answer.
type CreateOutput struct {
	Result  string  `json:"result" jsonschema:"created, reused or replaced (an expired one)"`
	Sandbox Session `json:"sandbox"`
}

// DeleteOutput is sandbox_delete's answer.
type DeleteOutput struct {
	Result string `json:"result" jsonschema:"deleted, or not_found when there was none"`
}

// ExecInput is a command for exec: cmd (an argv) or shell (a string run by sh -c).
type ExecInput struct {
	Cmd      []string          `json:"cmd,omitempty" jsonschema:"the command as an argv, e.g. [\"python3\", \"main.py\"]; give cmd or shell"`
	Shell    string            `json:"shell,omitempty" jsonschema:"a shell command line run by sh -c, e.g. \"ls -la | head\"; give cmd or shell"`
	Workdir  string            `json:"workdir,omitempty" jsonschema:"working folder; default the workspace /workspace"`
	Env      map[string]string `json:"env,omitempty" jsonschema:"environment variables to add"`
	Stdin    string            `json:"stdin,omitempty" jsonschema:"text sent to the command's standard input"`
	TimeoutS int64             `json:"timeout_s,omitempty" jsonschema:"seconds before the command is killed; 0: the server's default"`
}

// ExecOutput is how a command ended.
type ExecOutput struct {
	ExitCode   int    `json:"exit_code" jsonschema:"the exit code; -1 when killed for its timeout"`
	Stdout     string `json:"stdout"`
	Stderr     string `json:"stderr"`
	Truncated  bool   `json:"truncated" jsonschema:"output past the server's cap was dropped"`
	TimedOut   bool   `json:"timed_out" jsonschema:"the command ran past its timeout and was killed"`
	DurationMS int64  `json:"duration_ms"`
}

// PathInput names a file or folder of the workspace.
type PathInput struct {
	Path string `json:"path" jsonschema:"relative to the workspace (a leading /workspace/ is accepted)"`
}

// ListInput names a folder of the workspace.
type ListInput struct {
	Path string `json:"path,omitempty" jsonschema:"the folder, relative to the workspace; empty: the workspace"`
}

// ReadOutput is a file's content.
type ReadOutput struct {
	Path      string `json:"path"`
	Size      int64  `json:"size" jsonschema:"the file's whole size in bytes"`
	Encoding  string `json:"encoding" jsonschema:"utf-8, or base64 for a file that is not text"`
	Content   string `json:"content"`
	Truncated bool   `json:"truncated" jsonschema:"only the file's beginning is in content"`
}

// WriteInput is a file to write, replacing any there.
type WriteInput struct {
	Path     string `json:"path" jsonschema:"relative to the workspace; missing folders are made"`
	Content  string `json:"content"`
	Encoding string `json:"encoding,omitempty" jsonschema:"utf-8 (default) or base64"`
}

// FileInfo is one entry of the workspace.
type FileInfo struct {
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	Mode    string    `json:"mode" jsonschema:"as ls -l shows it"`
	ModTime time.Time `json:"mod_time"`
	IsDir   bool      `json:"is_dir"`
}

// ListOutput is a folder's entries.
type ListOutput struct {
	Items []FileInfo `json:"items"`
}

// KeepaliveInput is how long the sandbox should live on.
type KeepaliveInput struct {
	TTLS int64 `json:"ttl_s" jsonschema:"seconds from now; capped by the server's maximum lifetime"`
}

func (t *tools) register(srv *mcp.Server) {
	mcp.AddTool(srv, &mcp.Tool{Name: "sandbox_status",
		Description: "Tell whether this chat has a sandbox and until when it lives. Creates nothing."}, t.status)
	mcp.AddTool(srv, &mcp.Tool{Name: "sandbox_create",
		Description: "Make sure this chat has a live sandbox (the other tools do this by themselves); says whether it was created or reused."}, t.create)
	mcp.AddTool(srv, &mcp.Tool{Name: "sandbox_delete",
		Description: "Delete this chat's sandbox and stop everything running in it. The workspace folder is kept."}, t.delete)
	mcp.AddTool(srv, &mcp.Tool{Name: "exec",
		Description: "Run a command in the sandbox (Linux, user sandbox, working folder /workspace) and return its exit code and output. " +
			"Give cmd (an argv) or shell (a line for sh -c). Output is streamed as progress notifications while it runs."}, t.exec)
	mcp.AddTool(srv, &mcp.Tool{Name: "read_file",
		Description: "Read a file of the workspace. Text comes back as is, other files as base64; a large file is cut (truncated)."}, t.readFile)
	mcp.AddTool(srv, &mcp.Tool{Name: "write_file",
		Description: "Write a file of the workspace, replacing it whole; missing folders are made."}, t.writeFile)
	mcp.AddTool(srv, &mcp.Tool{Name: "list_files",
		Description: "List a folder of the workspace: names, sizes, modes, whether each is a folder."}, t.listFiles)
	mcp.AddTool(srv, &mcp.Tool{Name: "keepalive",
		Description: "Keep the sandbox alive ttl_s seconds from now (it is removed when it expires)."}, t.keepalive)
}

func (t *tools) session(s sandbox.Session) Session {
	return Session{
		SessionID: s.ID.String(), Status: string(s.Status), CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt,
		AgentID: s.AgentID, Expired: s.Expired(t.s.now()),
	}
}

// ensure makes sure the chat has a live sandbox, as the PUT route does (get or create).
func (t *tools) ensure(ctx context.Context) (sandbox.Session, lifecycle.Outcome, error) {
	return t.s.sandboxes.Create(ctx, lifecycle.CreateRequest{ChatID: t.chat, AgentID: t.agent})
}

func (t *tools) status(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, StatusOutput, error) {
	s, err := t.s.sandboxes.Get(ctx, t.chat)
	if errors.Is(err, sandbox.ErrNotFound) {
		return nil, StatusOutput{Exists: false}, nil
	}
	if err != nil {
		return nil, StatusOutput{}, t.s.fail(ctx, "sandbox_status", err)
	}
	out := t.session(s)
	return nil, StatusOutput{Exists: true, Sandbox: &out}, nil
}

func (t *tools) create(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, CreateOutput, error) {
	// The caller's tenant is in ctx (httpapi's authentication put it there): the use
	// cases keep to it, so another tenant's chat is one without a sandbox, as on the API.
	s, outcome, err := t.ensure(ctx)
	if err != nil {
		return nil, CreateOutput{}, t.s.fail(ctx, "sandbox_create", err)
	}
	return nil, CreateOutput{Result: string(outcome), Sandbox: t.session(s)}, nil
}

func (t *tools) delete(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, DeleteOutput, error) {
	res, err := t.s.sandboxes.Delete(ctx, t.chat)
	if err != nil {
		return nil, DeleteOutput{}, t.s.fail(ctx, "sandbox_delete", err)
	}
	return nil, DeleteOutput{Result: string(res.Result)}, nil
}

func (t *tools) exec(ctx context.Context, req *mcp.CallToolRequest, in ExecInput) (*mcp.CallToolResult, ExecOutput, error) {
	cmd := in.Cmd
	switch {
	case len(cmd) > 0 && in.Shell != "":
		return nil, ExecOutput{}, &toolError{code: httpapi.CodeInvalid, detail: "give cmd or shell, not both"}
	case in.Shell != "":
		cmd = []string{"sh", "-c", in.Shell}
	case len(cmd) == 0:
		return nil, ExecOutput{}, &toolError{code: httpapi.CodeInvalid, detail: "give cmd (an argv) or shell (a command line)"}
	}
	if in.TimeoutS < 0 || in.TimeoutS > math.MaxInt64/int64(time.Second) {
		return nil, ExecOutput{}, &toolError{code: httpapi.CodeInvalid, detail: fmt.Sprintf("timeout_s %d is out of range", in.TimeoutS)}
	}
	if _, _, err := t.ensure(ctx); err != nil {
		return nil, ExecOutput{}, t.s.fail(ctx, "exec", err)
	}
	var stdout, stderr bytes.Buffer
	progress := &progress{ctx: ctx, req: req}
	lreq := lifecycle.ExecRequest{
		ChatID: t.chat, Cmd: cmd, Env: in.Env, Workdir: in.Workdir, Timeout: time.Duration(in.TimeoutS) * time.Second,
		Stdout: io.MultiWriter(&stdout, progress.stream("stdout")),
		Stderr: io.MultiWriter(&stderr, progress.stream("stderr")),
	}
	if in.Stdin != "" {
		lreq.Stdin = strings.NewReader(in.Stdin)
	}
	res, err := t.s.sandboxes.Exec(ctx, lreq)
	if err != nil {
		return nil, ExecOutput{}, t.s.fail(ctx, "exec", err)
	}
	return nil, ExecOutput{
		ExitCode: res.ExitCode, Stdout: cut(stdout.Bytes()), Stderr: cut(stderr.Bytes()),
		Truncated: res.Truncated, TimedOut: res.TimedOut, DurationMS: res.Duration.Milliseconds(),
	}, nil
}

// progress sends a command's output as progress notifications, when the client asked
// for them (a progress token); progress counts the bytes so far.
type progress struct {
	ctx context.Context
	req *mcp.CallToolRequest

	mu   sync.Mutex
	sent int64
}

type progressStream struct {
	p    *progress
	name string
}

func (p *progress) stream(name string) io.Writer { return &progressStream{p: p, name: name} }

func (w *progressStream) Write(b []byte) (int, error) {
	p := w.p
	token := p.req.Params.GetProgressToken()
	if token == nil || p.req.Session == nil {
		return len(b), nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent += int64(len(b))
	// A failed notification (the client left) does not stop the command here: the
	// context does.
	_ = p.req.Session.NotifyProgress(p.ctx, &mcp.ProgressNotificationParams{
		ProgressToken: token, Progress: float64(p.sent), Message: cut(b),
		Meta: mcp.Meta{"stream": w.name},
	})
	return len(b), nil
}

func (t *tools) readFile(ctx context.Context, _ *mcp.CallToolRequest, in PathInput) (*mcp.CallToolResult, ReadOutput, error) {
	if _, _, err := t.ensure(ctx); err != nil {
		return nil, ReadOutput{}, t.s.fail(ctx, "read_file", err)
	}
	rc, info, err := t.s.sandboxes.OpenFile(ctx, t.chat, in.Path)
	if err != nil {
		return nil, ReadOutput{}, t.s.fail(ctx, "read_file", err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, t.s.maxRead))
	if err != nil {
		return nil, ReadOutput{}, t.s.fail(ctx, "read_file", err)
	}
	out := ReadOutput{Path: info.Path, Size: info.Size, Truncated: int64(len(data)) < info.Size}
	if text := data[:len(data)-incompleteTail(data, out.Truncated)]; utf8.Valid(text) {
		out.Encoding, out.Content = "utf-8", string(text)
	} else {
		out.Encoding, out.Content = "base64", base64.StdEncoding.EncodeToString(data)
	}
	return nil, out, nil
}

// incompleteTail is how many bytes at the end of a cut b begin a character it does not
// finish (0 when b was not cut).
func incompleteTail(b []byte, cutShort bool) int {
	if !cutShort {
		return 0
	}
	for i := 1; i < utf8.UTFMax && i <= len(b); i++ {
		if utf8.RuneStart(b[len(b)-i]) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return i
			}
			return 0
		}
	}
	return 0
}

func (t *tools) writeFile(ctx context.Context, _ *mcp.CallToolRequest, in WriteInput) (*mcp.CallToolResult, FileInfo, error) {
	var data []byte
	switch in.Encoding {
	case "", "utf-8":
		data = []byte(in.Content)
	case "base64":
		var err error
		if data, err = base64.StdEncoding.DecodeString(in.Content); err != nil {
			return nil, FileInfo{}, &toolError{code: httpapi.CodeInvalid, detail: "content is not base64: " + err.Error()}
		}
	default:
		return nil, FileInfo{}, &toolError{code: httpapi.CodeInvalid, detail: fmt.Sprintf("encoding %q is neither utf-8 nor base64", in.Encoding)}
	}
	if _, _, err := t.ensure(ctx); err != nil {
		return nil, FileInfo{}, t.s.fail(ctx, "write_file", err)
	}
	info, err := t.s.sandboxes.WriteFile(ctx, t.chat, in.Path, bytes.NewReader(data))
	if err != nil {
		return nil, FileInfo{}, t.s.fail(ctx, "write_file", err)
	}
	return nil, fileInfo(info), nil
}

func (t *tools) listFiles(ctx context.Context, _ *mcp.CallToolRequest, in ListInput) (*mcp.CallToolResult, ListOutput, error) {
	if _, _, err := t.ensure(ctx); err != nil {
		return nil, ListOutput{}, t.s.fail(ctx, "list_files", err)
	}
	infos, err := t.s.sandboxes.ListDir(ctx, t.chat, in.Path)
	if err != nil {
		return nil, ListOutput{}, t.s.fail(ctx, "list_files", err)
	}
	out := ListOutput{Items: make([]FileInfo, 0, len(infos))}
	for _, i := range infos {
		out.Items = append(out.Items, fileInfo(i))
	}
	return nil, out, nil
}

func fileInfo(i lifecycle.FileInfo) FileInfo {
	return FileInfo{Path: i.Path, Size: i.Size, Mode: i.Mode.String(), ModTime: i.ModTime, IsDir: i.Mode.IsDir()}
}

func (t *tools) keepalive(ctx context.Context, _ *mcp.CallToolRequest, in KeepaliveInput) (*mcp.CallToolResult, Session, error) {
	if in.TTLS <= 0 || in.TTLS > math.MaxInt64/int64(time.Second) {
		return nil, Session{}, &toolError{code: httpapi.CodeInvalid, detail: fmt.Sprintf("ttl_s %d is out of range", in.TTLS)}
	}
	if _, _, err := t.ensure(ctx); err != nil {
		return nil, Session{}, t.s.fail(ctx, "keepalive", err)
	}
	s, err := t.s.sandboxes.Keepalive(ctx, t.chat, time.Duration(in.TTLS)*time.Second)
	if err != nil {
		return nil, Session{}, t.s.fail(ctx, "keepalive", err)
	}
	return nil, t.session(s), nil
}
