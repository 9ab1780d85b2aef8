// Package mcpserver serves a chat's sandbox to MCP clients (Model Context Protocol,
// Streamable HTTP transport, on the official go-sdk) at /mcp/chats/{chat_id}: tools to
// run commands (output streamed as progress notifications), read, write and list
// workspace files, keep the sandbox alive, and see, create or delete it.
//
// The chat is bound by the URL of every request, and the server is stateless (no
// Mcp-Session-Id): the tools take no chat id, so a client reaches only the chat its URL
// names. Authentication happens before this handler (httpapi's bearer check). Tool
// errors carry the same codes as the HTTP API's problem documents.
package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Sandboxes is what the tools need of the use cases; *lifecycle.Service provides it.
type Sandboxes interface {
	Create(ctx context.Context, req lifecycle.CreateRequest) (sandbox.Session, lifecycle.Outcome, error)
	Get(ctx context.Context, chatID uuid.UUID) (sandbox.Session, error)
	Delete(ctx context.Context, chatID uuid.UUID) (lifecycle.DeleteResult, error)
	Exec(ctx context.Context, req lifecycle.ExecRequest) (lifecycle.ExecResult, error)
	Keepalive(ctx context.Context, chatID uuid.UUID, ttl time.Duration) (sandbox.Session, error)
	WriteFile(ctx context.Context, chatID uuid.UUID, path string, r io.Reader) (lifecycle.FileInfo, error)
	OpenFile(ctx context.Context, chatID uuid.UUID, path string) (io.ReadCloser, lifecycle.FileInfo, error)
	ListDir(ctx context.Context, chatID uuid.UUID, path string) ([]lifecycle.FileInfo, error)
}

// Prefix is the path under which the handler serves: Prefix + "chats/{chat_id}".
const Prefix = "/mcp/"

// DefaultMaxReadBytes is how much of a file read_file returns when Config.MaxReadBytes
// is not set.
const DefaultMaxReadBytes = 1 << 20

// Config holds the dependencies of the MCP server. Sandboxes is required.
type Config struct {
	Sandboxes Sandboxes
	// Version is reported to clients in the initialize answer.
	Version        string
	Logger         *slog.Logger
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	// MaxReadBytes caps what read_file returns of a file (the rest is cut and flagged).
	MaxReadBytes int64
	// Now tells the time at which a session's "expired" flag is judged; it should be the
	// lifecycle's clock. Default: time.Now.
	Now func() time.Time
}

type server struct {
	sandboxes Sandboxes
	version   string
	log       *slog.Logger
	tracer    trace.Tracer
	calls     metric.Int64Counter
	maxRead   int64
	schemas   *mcp.SchemaCache
	now       func() time.Time
}

// New checks cfg and returns the handler of Prefix.
func New(cfg Config) (http.Handler, error) {
	if cfg.Sandboxes == nil {
		return nil, errors.New("mcpserver: missing Sandboxes")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = metricnoop.NewMeterProvider()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = tracenoop.NewTracerProvider()
	}
	if cfg.MaxReadBytes <= 0 {
		cfg.MaxReadBytes = DefaultMaxReadBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	const scope = "github.com/sandboxd/sandboxd/internal/mcpserver"
	calls, err := cfg.MeterProvider.Meter(scope).Int64Counter("sandbox.mcp.calls.total",
		metric.WithDescription("MCP tool calls, by tool and result (ok or the error code)."))
	if err != nil {
		return nil, fmt.Errorf("mcpserver: metrics: %w", err)
	}
	s := &server{
		sandboxes: cfg.Sandboxes, version: cfg.Version, log: cfg.Logger,
		tracer: cfg.TracerProvider.Tracer(scope), calls: calls, maxRead: cfg.MaxReadBytes,
		schemas: mcp.NewSchemaCache(), now: cfg.Now,
	}
	// Stateless: every request names its chat in the URL and gets a server of that chat;
	// the SDK's DNS-rebinding protection for localhost stays on.
	streamable := mcp.NewStreamableHTTPHandler(func(r *http.Request) *mcp.Server {
		chat, agent, ok := binding(r)
		if !ok {
			return nil
		}
		return s.newServer(chat, agent)
	}, &mcp.StreamableHTTPOptions{Stateless: true, Logger: cfg.Logger})

	mux := http.NewServeMux()
	mux.HandleFunc(Prefix+"chats/{chat_id}", func(w http.ResponseWriter, r *http.Request) {
		if _, err := sandbox.ParseChatID(r.PathValue("chat_id")); err != nil {
			http.Error(w, httpapi.Detail(err), http.StatusNotFound)
			return
		}
		// A command runs as long as its timeout says: the server's read and write
		// deadlines must not cut its answer (nor cancel its context) midway.
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Time{})
		streamable.ServeHTTP(w, r)
	})
	mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no MCP endpoint here: use "+Prefix+"chats/{chat_id}", http.StatusNotFound)
	})
	return mux, nil
}

// binding is the chat (and agent, from ?agent_id=) a request is bound to.
func binding(r *http.Request) (uuid.UUID, string, bool) {
	chat, err := sandbox.ParseChatID(r.PathValue("chat_id"))
	if err != nil {
		return uuid.Nil, "", false
	}
	return chat, r.URL.Query().Get("agent_id"), true
}

// newServer is the MCP server of one chat: its tools act on that chat only.
func (s *server) newServer(chat uuid.UUID, agent string) *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{Name: "sandboxd", Version: s.version}, &mcp.ServerOptions{
		SchemaCache: s.schemas,
		Instructions: "Tools of one sandbox: a hardened Linux container with a persistent workspace " +
			"(/workspace) for this chat. It is made on first use. Run commands with exec, move files " +
			"with read_file, write_file and list_files (paths relative to the workspace).",
	})
	t := &tools{s: s, chat: chat, agent: agent}
	t.register(srv)
	srv.AddReceivingMiddleware(s.observe(chat))
	return srv
}

// observe wraps every tool call in a span, a log record and a count by tool and result.
func (s *server) observe(chat uuid.UUID) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			call, ok := req.(*mcp.CallToolRequest)
			if !ok || method != "tools/call" {
				return next(ctx, method, req)
			}
			tool := call.Params.Name
			start := time.Now()
			ctx, span := s.tracer.Start(ctx, "mcp.tools/call "+tool, trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("mcp.tool", tool), attribute.String("chat.id", chat.String())))
			defer span.End()
			res, err := next(ctx, method, req)
			result := "ok"
			switch r, _ := res.(*mcp.CallToolResult); {
			case err != nil:
				result = "protocol_error"
			case r != nil && r.IsError:
				result = codeOf(r)
			}
			if result != "ok" {
				span.SetStatus(codes.Error, result)
			}
			span.SetAttributes(attribute.String("mcp.result", result))
			s.calls.Add(ctx, 1, metric.WithAttributes(attribute.String("tool", tool), attribute.String("result", result)))
			s.log.LogAttrs(ctx, slog.LevelInfo, "mcp_call", slog.String("tool", tool),
				slog.String("chat_id", chat.String()), slog.String("result", result),
				slog.Duration("duration", time.Since(start)))
			return res, err
		}
	}
}

// toolError is a tool's failure as the model sees it: "code: detail".
type toolError struct {
	code   string
	detail string
}

func (e *toolError) Error() string { return e.code + ": " + e.detail }

// codeOf puts the code of a tool error in its _meta ("code") and makes its text begin
// with it, as toolError's does: a tool's own code, or invalid for what the SDK refused
// (arguments that do not match the schema).
func codeOf(r *mcp.CallToolResult) string {
	var te *toolError
	code := httpapi.CodeInvalid
	if errors.As(r.GetError(), &te) {
		code = te.code
	} else if len(r.Content) > 0 {
		if text, ok := r.Content[0].(*mcp.TextContent); ok {
			text.Text = code + ": " + text.Text
		}
	}
	if r.Meta == nil {
		r.Meta = mcp.Meta{}
	}
	r.Meta["code"] = code
	return code
}

// fail turns an error of the use cases into a tool error with the HTTP API's code;
// server errors are logged and told in general words, as the HTTP API does.
func (s *server) fail(ctx context.Context, tool string, err error) error {
	code, status := httpapi.ErrorCode(err)
	if status < 500 {
		return &toolError{code: code, detail: httpapi.Detail(err)}
	}
	s.log.ErrorContext(ctx, "mcp_tool_failed", slog.String("tool", tool), slog.String("error", err.Error()),
		slog.String("error_type", sandbox.ErrorType(err)))
	if code == httpapi.CodeUnavailable {
		return &toolError{code: code, detail: "a dependency of sandboxd is unavailable; try again later"}
	}
	return &toolError{code: code, detail: "internal error"}
}

// cut returns s without its invalid UTF-8 (replaced) for a JSON string.
func cut(b []byte) string { return strings.ToValidUTF8(string(b), "\uFFFD") }
