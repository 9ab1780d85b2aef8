// Package httpapi provides the HTTP JSON API of sandboxd: the sandbox of a chat
// (create-or-reuse, get, delete, keepalive), commands run in it (exec, buffered or
// streamed as ndjson), the files of its workspace (streamed upload and download,
// listing), the list of sandboxes, health and readiness probes, the metrics endpoint
// and the OpenAPI 3.1 document that describes them, generated from the Go types by huma
// and served at /openapi.json.
//
// Errors are RFC 9457 problem documents that carry a stable code ("not_found",
// "expired", ...). The domain's sentinel errors become codes and status codes in one
// table, errorCodes; this is the only package that knows status codes.
package httpapi

//go:generate go test -run TestOpenAPIDocumentIsCommitted -update .

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Sandboxes is what the handlers need of the use cases; *lifecycle.Service provides it.
type Sandboxes interface {
	Create(ctx context.Context, req lifecycle.CreateRequest) (sandbox.Session, lifecycle.Outcome, error)
	Get(ctx context.Context, chatID uuid.UUID) (sandbox.Session, error)
	Delete(ctx context.Context, chatID uuid.UUID) (lifecycle.DeleteResult, error)
	DeleteWorkspace(ctx context.Context, chatID uuid.UUID) (lifecycle.WorkspaceResult, error)
	List(ctx context.Context, filter lifecycle.ListFilter) ([]sandbox.Session, error)

	Exec(ctx context.Context, req lifecycle.ExecRequest) (lifecycle.ExecResult, error)
	Terminal(ctx context.Context, req lifecycle.TerminalRequest) (int, error)
	Keepalive(ctx context.Context, chatID uuid.UUID, ttl time.Duration) (sandbox.Session, error)
	WriteFile(ctx context.Context, chatID uuid.UUID, path string, r io.Reader) (lifecycle.FileInfo, error)
	OpenFile(ctx context.Context, chatID uuid.UUID, path string) (io.ReadCloser, lifecycle.FileInfo, error)
	ListDir(ctx context.Context, chatID uuid.UUID, path string) ([]lifecycle.FileInfo, error)
}

// DefaultMaxBodyBytes is the request body limit when Config.MaxBodyBytes is not set.
const DefaultMaxBodyBytes = 64 << 10

// Config holds the dependencies of the API. Sandboxes is required; the rest are optional.
type Config struct {
	Sandboxes Sandboxes
	// Tokens are the bearer tokens of the default tenant (sandbox.DefaultTenant), each
	// plain or a "sha256:<hex>" digest of the token. With none here and no Tenants, /v1/
	// is open, to the default tenant: the caller decides whether that is acceptable
	// (sandboxd allows it on loopback only).
	Tokens []string
	// Tenants are the other tenants' tokens, in the same forms. A request carrying one
	// reaches its tenant's chats only (see TenantFrom); one token names one tenant.
	Tenants map[string][]string
	// MaxBodyBytes caps request bodies; a larger one is refused with 413 before anything
	// is read into the handlers. Default DefaultMaxBodyBytes. File uploads are exempt:
	// they stream, and the lifecycle's file size limit applies to them.
	MaxBodyBytes int64
	// Ready reports whether the service can serve (registry and engine reachable);
	// nil means always ready. GET /readyz gives it ReadyTimeout (default
	// DefaultReadyTimeout) and answers "not ready" when it has not said otherwise by
	// then; its error goes to the log, never to the unauthenticated caller.
	Ready        func(context.Context) error
	ReadyTimeout time.Duration
	// MCP serves /mcp/ (the MCP server, mcpserver), behind the same bearer tokens as
	// /v1/ and without the body limit (it applies its own); nil: 404.
	MCP http.Handler
	// UI serves /v1/ui/ (the data of the operator's page, webui), behind the same bearer
	// tokens as the rest of /v1/; nil: 404.
	UI http.Handler
	// Stop ends the open terminals when it is done (the service shutting down: each
	// shell is killed with what it started); nil: never. Terminals, when set, counts the
	// terminals under way, so that the caller can wait for them after the server's
	// Shutdown, which does not wait for hijacked connections.
	Stop      context.Context
	Terminals *sync.WaitGroup
	// Page serves the operator's page at /ui/ (webui), without a token: the page holds no
	// data, it asks /v1/ with the token its user signs in with; nil: 404.
	Page http.Handler
	// Metrics serves GET /metrics (e.g. the Prometheus exporter's handler); nil: 404.
	Metrics http.Handler
	// Logger receives one record per request; default: discard.
	Logger *slog.Logger
	// Now tells the time at which the "expired" flag of a session is judged. Default:
	// time.Now, the lifecycle's default clock too (sandboxd leaves both so); a caller that
	// gives the lifecycle another Clock gives its Now here.
	Now func() time.Time
	// ExecOutputCap is the lifecycle's cap on one command's output (default 1 MiB), and
	// MaxBufferedExecBytes the memory all buffered (non-streaming) exec answers may hold
	// at once (default DefaultMaxBufferedExecBytes). A buffered exec holds its output, then
	// its JSON (up to 6 bytes a byte once escaped) until it is sent: each one reserves
	// BufferedExecCost(ExecOutputCap) of the budget before it runs, and is refused with
	// 429 when that is not left (streaming execs hold no output and are not counted).
	ExecOutputCap        int64
	MaxBufferedExecBytes int64
	// MinUploadRate is the slowest a file upload may arrive, on average in bytes per
	// second, after a grace of UploadGrace (default DefaultUploadGrace) at its start
	// (default DefaultMinUploadRate): a slower client is cut off with 408 and its upload
	// discarded, so that one sending a byte a minute cannot hold a handler for ever.
	// Negative: no minimum (a stall of a minute still ends it).
	MinUploadRate int64
	UploadGrace   time.Duration
	// Denials lists a sandbox's refused network connections (the egress proxy's); nil:
	// GET /v1/chats/{chat_id}/sandbox/egress lists none.
	Denials Denials
}

// DefaultMaxBufferedExecBytes and DefaultMinUploadRate are the defaults of the Config
// fields of the same names.
const (
	DefaultMaxBufferedExecBytes = 1 << 30
	DefaultMinUploadRate        = 16 << 10
	DefaultUploadGrace          = 10 * time.Second
)

// Title and Version name the API in its OpenAPI document.
const (
	Title   = "sandboxd"
	Version = "1.0.0"
)

const bearerScheme = "bearer"

// mcpPattern is where Config.MCP is served, UIPattern where Config.UI is.
const (
	mcpPattern = "/mcp/"
	UIPattern  = "/v1/ui/"
)

// server holds what the handlers share.
type server struct {
	sandboxes Sandboxes
	ready     func(context.Context) error
	// readyTimeout bounds a readiness check.
	readyTimeout time.Duration
	metrics      http.Handler
	log          *slog.Logger
	now          func() time.Time
	maxBody      int64

	execBuffers   budget // bytes buffered exec answers may hold
	execCost      int64  // what one buffered exec reserves of execBuffers
	minUploadRate int64
	uploadGrace   time.Duration
	denials       Denials

	stop      context.Context // ends the terminals (nil: never)
	terminals *sync.WaitGroup // counts them (nil: nobody waits)
}

// v1 completes an operation of /v1/: bearer auth (enforced by authenticate) and the
// body limit (enforced by readBody before huma reads the body; huma's own limit, which
// refuses a body of exactly its size, is set above it).
//
// Huma's body read timeout is turned off: readBody has read the body already (bounded
// by the server's ReadTimeout), so huma's deadline (5 s by default) would fall on the
// connection's background read that net/http runs once the body is consumed. When it
// fired, net/http took the connection for dead and cancelled its context: the request
// under way (a create slower than 5 s) and every later one on that keep-alive
// connection were answered 499 though their client was still there.
func (s *server) v1(op huma.Operation) huma.Operation {
	op.Security = []map[string][]string{{bearerScheme: {}}}
	op.Errors = append([]int{http.StatusUnauthorized}, op.Errors...)
	op.MaxBodyBytes = s.maxBody + 1
	op.BodyReadTimeout = -1
	return op
}

// New checks cfg and returns the API's handler. A missing Sandboxes, an empty token or
// a negative MaxBodyBytes is an error.
func New(cfg Config) (http.Handler, error) {
	if cfg.Sandboxes == nil {
		return nil, errors.New("httpapi: missing Sandboxes")
	}
	keys, err := tokenKeys(cfg.Tokens, cfg.Tenants)
	if err != nil {
		return nil, fmt.Errorf("httpapi: %w", err)
	}
	if cfg.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("httpapi: MaxBodyBytes %d is negative", cfg.MaxBodyBytes)
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.ExecOutputCap <= 0 {
		cfg.ExecOutputCap = 1 << 20
	}
	if cfg.MaxBufferedExecBytes <= 0 {
		cfg.MaxBufferedExecBytes = DefaultMaxBufferedExecBytes
	}
	if cfg.MinUploadRate == 0 {
		cfg.MinUploadRate = DefaultMinUploadRate
	}
	if cfg.UploadGrace <= 0 {
		cfg.UploadGrace = DefaultUploadGrace
	}
	if cost := BufferedExecCost(cfg.ExecOutputCap); cfg.MaxBufferedExecBytes < cost {
		return nil, fmt.Errorf("httpapi: MaxBufferedExecBytes %d is less than one buffered exec answer may hold (%d for an output cap of %d)",
			cfg.MaxBufferedExecBytes, cost, cfg.ExecOutputCap)
	}
	s := &server{
		sandboxes: cfg.Sandboxes, ready: cfg.Ready, readyTimeout: cfg.ReadyTimeout, metrics: cfg.Metrics,
		log: cfg.Logger, now: cfg.Now, maxBody: cfg.MaxBodyBytes,
		execBuffers:   budget{left: cfg.MaxBufferedExecBytes},
		execCost:      BufferedExecCost(cfg.ExecOutputCap),
		minUploadRate: cfg.MinUploadRate,
		uploadGrace:   cfg.UploadGrace,
		stop:          cfg.Stop,
		terminals:     cfg.Terminals,
		denials:       cfg.Denials,
	}

	mux := http.NewServeMux()
	api := newAPI(mux)
	v1 := huma.NewGroup(api, "/v1")
	v1.UseMiddleware(requireContentType(api))
	s.registerSandbox(v1)
	s.registerSandboxes(v1)
	s.registerExec(v1)
	s.registerTerminal(v1)
	s.registerFiles(v1)
	s.registerKeepalive(v1)
	s.registerWorkspace(v1)
	s.registerEgress(v1)
	s.registerHealth(api)
	s.registerMetrics(api, mux)
	documentCode(api)
	if cfg.MCP != nil {
		mux.Handle(mcpPattern, cfg.MCP)
	}
	if cfg.UI != nil {
		mux.Handle(UIPattern, cfg.UI)
	}
	if cfg.Page != nil {
		mux.Handle("/ui/", cfg.Page)
		mux.Handle("/ui", cfg.Page)
	}
	mux.Handle("/", noRoute(mux))

	var h http.Handler = mux
	h = readBody(h, mux, cfg.MaxBodyBytes, uploadPattern, mcpPattern)
	h = authenticate(h, keys)
	h = logRequests(h, cfg.Logger)
	return h, nil
}

// newAPI makes the huma API on mux: JSON only, no docs UI, no schema links, unknown
// body fields refused, validation details folded into the problem's detail.
func newAPI(mux *http.ServeMux) huma.API {
	config := huma.DefaultConfig(Title, Version)
	config.Info.Description = "Every AI-agent chat gets its own hardened sandbox container."
	config.OpenAPIPath = "/openapi"
	config.DocsPath = ""
	config.SchemasPath = ""
	config.CreateHooks = nil
	config.Formats = map[string]huma.Format{"application/json": huma.DefaultJSONFormat, "json": huma.DefaultJSONFormat}
	config.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		bearerScheme: {
			Type:        "http",
			Scheme:      "bearer",
			Description: "One of the tokens configured for sandboxd.",
		},
	}
	config.Transformers = append(config.Transformers, detailTransformer, withCode)
	return humago.New(mux, config)
}

// detailTransformer appends the individual validation errors to a problem's detail, so
// that the detail alone says what was wrong ("validation failed: unexpected property
// (body.colour)").
func detailTransformer(_ huma.Context, _ string, v any) (any, error) {
	m, ok := v.(*huma.ErrorModel)
	if !ok || len(m.Errors) == 0 {
		return v, nil
	}
	parts := make([]string, 0, len(m.Errors))
	for _, e := range m.Errors {
		if e == nil {
			continue
		}
		if e.Location != "" {
			parts = append(parts, fmt.Sprintf("%s (%s)", e.Message, e.Location))
		} else {
			parts = append(parts, e.Message)
		}
	}
	if len(parts) > 0 && !strings.Contains(m.Detail, parts[0]) {
		m.Detail = m.Detail + ": " + strings.Join(parts, "; ")
	}
	return m, nil
}

// noRoute answers what no route matches: 405 with Allow when the path exists under
// other methods, else 404; both as problem documents.
func noRoute(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var allowed []string
		for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "/" {
				allowed = append(allowed, m)
			}
		}
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			writeProblem(w, http.StatusMethodNotAllowed,
				fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allowed, ", ")))
			return
		}
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("no such route: %s %s", r.Method, r.URL.Path))
	})
}

// tokenKey is an accepted token, as its SHA-256 digest, and the tenant it names.
type tokenKey struct {
	digest [sha256.Size]byte
	tenant string
}

// tokenKeys reads the default tenant's tokens and those of tenants: each plain or
// "sha256:<64 hex digits>". An empty or malformed token, a tenant without tokens, or one
// token given twice is an error.
func tokenKeys(defaults []string, tenants map[string][]string) ([]tokenKey, error) {
	var keys []tokenKey
	seen := map[[sha256.Size]byte]string{}
	add := func(tenant string, tokens []string) error {
		for i, t := range tokens {
			d, err := TokenDigest(t)
			if err != nil {
				return fmt.Errorf("tenant %s: token %d: %w", tenant, i, err)
			}
			if other, dup := seen[d]; dup {
				return fmt.Errorf("tenant %s: token %d is also a token of tenant %s: one token names one tenant", tenant, i, other)
			}
			seen[d] = tenant
			keys = append(keys, tokenKey{digest: d, tenant: tenant})
		}
		return nil
	}
	if err := add(sandbox.DefaultTenant, defaults); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(tenants))
	for name := range tenants {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if len(tenants[name]) == 0 {
			return nil, fmt.Errorf("tenant %s has no tokens", name)
		}
		if err := add(name, tenants[name]); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// TokenDigest returns the SHA-256 digest of a configured token: a plain token's digest,
// or the digest a "sha256:<64 hex digits>" token spells (so that a configuration file
// need not hold the secret itself). An empty or malformed token is an error.
func TokenDigest(token string) ([sha256.Size]byte, error) {
	var d [sha256.Size]byte
	token = strings.TrimSpace(token)
	if token == "" {
		return d, errors.New("is empty")
	}
	hexDigest, ok := strings.CutPrefix(token, "sha256:")
	if !ok {
		return sha256.Sum256([]byte(token)), nil
	}
	b, err := hex.DecodeString(hexDigest)
	if err != nil || len(b) != sha256.Size {
		return d, errors.New(`is "sha256:" followed by something other than 64 hex digits`)
	}
	copy(d[:], b)
	return d, nil
}

// TenantFrom returns the tenant of the caller whose request ctx belongs to: the tenant
// its bearer token names, or sandbox.DefaultTenant when sandboxd has no tokens. Every
// handler serving a request authenticated here (the MCP server's too) passes this ctx
// on to the use cases, which reach only that tenant's chats.
func TenantFrom(ctx context.Context) string { return sandbox.TenantFrom(ctx) }

// authenticate refuses requests to /v1/ and /mcp/ that do not carry one of the keys' tokens as a
// bearer token, and passes on the others with the tenant the token names in their
// context (sandbox.WithTenant). With no keys, everything passes, as the default tenant's.
func authenticate(next http.Handler, keys []tokenKey) http.Handler {
	if len(keys) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") && !strings.HasPrefix(r.URL.Path, mcpPattern) && r.URL.Path != "/mcp" {
			next.ServeHTTP(w, r)
			return
		}
		scheme, token, found := strings.Cut(r.Header.Get("Authorization"), " ")
		if !found && r.Header.Get("Authorization") == "" {
			// A browser's WebSocket offers its token as a subprotocol (terminal.go).
			token, found = tokenFromProtocols(r)
			scheme = "Bearer"
		}
		if !found || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sandboxd"`)
			writeProblem(w, http.StatusUnauthorized, "missing bearer token: send Authorization: Bearer <token>")
			return
		}
		// Comparing digests keeps the comparison constant-time in the token's length too;
		// every key is compared, whichever matches.
		got := sha256.Sum256([]byte(strings.TrimSpace(token)))
		matched := -1
		for i := range keys {
			if subtle.ConstantTimeCompare(got[:], keys[i].digest[:]) == 1 {
				matched = i
			}
		}
		if matched < 0 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sandboxd", error="invalid_token"`)
			writeProblem(w, http.StatusUnauthorized, "invalid bearer token")
			return
		}
		tenant := keys[matched].tenant
		if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
			info.tenant = tenant
		}
		next.ServeHTTP(w, r.WithContext(sandbox.WithTenant(r.Context(), tenant)))
	})
}

// readBody reads a request's body before any handler runs, so that a body wrong as a
// whole is refused at once: over limit bytes, 413 (a body of unknown length is read up to
// the limit); JSON in which an object names a key twice, 422 (a decoder would keep the
// last and the caller may have meant the first; a body that is not JSON, or not sent as
// JSON, is left to the operation). The body is then replayed. Requests without a body,
// and those mux routes to one of the streaming patterns (whose bodies are files), pass
// untouched.
func readBody(next http.Handler, mux *http.ServeMux, limit int64, streaming ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		if _, pattern := mux.Handler(r); slices.Contains(streaming, pattern) {
			next.ServeHTTP(w, r)
			return
		}
		if r.ContentLength > limit {
			writeProblem(w, http.StatusRequestEntityTooLarge,
				fmt.Sprintf("request body is %d bytes, over the limit of %d bytes", r.ContentLength, limit))
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
		_ = r.Body.Close()
		if err != nil {
			writeProblem(w, http.StatusBadRequest, "cannot read request body")
			return
		}
		if int64(len(body)) > limit {
			writeProblem(w, http.StatusRequestEntityTooLarge,
				fmt.Sprintf("request body is over the limit of %d bytes", limit))
			return
		}
		mediaType, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
		mediaType = strings.ToLower(strings.TrimSpace(mediaType))
		if mediaType == "" || mediaType == "application/json" || strings.HasSuffix(mediaType, "+json") {
			if key, at, dup := duplicateKey(body); dup {
				writeProblem(w, http.StatusUnprocessableEntity,
					fmt.Sprintf("duplicate key %q in the request body (%s)", key, at))
				return
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

// duplicateKey finds the first key that an object of the JSON document body names twice,
// and where ("body.env.A"). A malformed document has none: its error is the decoder's to
// report.
func duplicateKey(body []byte) (key, at string, found bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var walk func(path string) bool
	walk = func(path string) bool {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return false
				}
				k, _ := kt.(string)
				if seen[k] {
					key, at, found = k, path+"."+k, true
					return true
				}
				seen[k] = true
				if walk(path + "." + k) {
					return true
				}
			}
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if walk(path + "[" + strconv.Itoa(i) + "]") {
					return true
				}
			}
		default:
			return false // a scalar
		}
		_, _ = dec.Token() // the closing delimiter
		return false
	}
	walk("body")
	return key, at, found
}

// requireContentType refuses, with 415, a request body whose media type the operation
// does not declare. A body without Content-Type is taken as JSON.
func requireContentType(api huma.API) func(huma.Context, func(huma.Context)) {
	return func(ctx huma.Context, next func(huma.Context)) {
		op := ctx.Operation()
		ct := ctx.Header("Content-Type")
		if op.RequestBody == nil || ct == "" {
			next(ctx)
			return
		}
		mediaType, _, _ := strings.Cut(ct, ";")
		mediaType = strings.ToLower(strings.TrimSpace(mediaType))
		_, anyType := op.RequestBody.Content["*/*"]
		if _, ok := op.RequestBody.Content[mediaType]; !ok && !anyType {
			allowed := make([]string, 0, len(op.RequestBody.Content))
			for k := range op.RequestBody.Content {
				allowed = append(allowed, k)
			}
			_ = huma.WriteErr(api, ctx, http.StatusUnsupportedMediaType,
				fmt.Sprintf("Content-Type %q is not supported; send %s", ct, strings.Join(allowed, " or ")))
			return
		}
		next(ctx)
	}
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (flush, deadlines).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// requestInfo is what the handlers inside logRequests tell it of a request: the tenant
// authenticate found.
type requestInfo struct{ tenant string }

type requestInfoKey struct{}

// logRequests logs one record per request: method, path, status, duration, and the
// caller's tenant when its token named one.
func logRequests(next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		info := &requestInfo{}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info)))
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		attrs := []slog.Attr{
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", rec.status),
			slog.Duration("duration", time.Since(start)),
		}
		if info.tenant != "" {
			attrs = append(attrs, slog.String("tenant", info.tenant))
		}
		log.LogAttrs(r.Context(), slog.LevelInfo, "http_request", attrs...)
	})
}
