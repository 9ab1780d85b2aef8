// Package webui is the operator's page: the files of /ui/ (embedded in the binary: plain
// HTML, CSS and JavaScript, and xterm.js when Debian's libjs-xterm is found at run time
// in a browser build), and the data the page reads from /v1/ui/ (served behind the API's
// bearer tokens, so every answer is the caller's tenant's): the list of sandboxes with
// their CPU and memory (engine stats, cached), a chat's recent events, an overview of
// the last hour, and live events as server-sent events.
//
// The page itself uses the API (/v1/) for everything else: files, keepalive, delete,
// the terminal.
package webui

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/eventlog"
	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

//go:embed static
var static embed.FS

// DefaultXtermDir is where Debian's libjs-xterm puts xterm.js.
const DefaultXtermDir = "/usr/share/javascript/xterm"

// Sandboxes is what the page's data needs of the use cases; *lifecycle.Service has it.
type Sandboxes interface {
	List(ctx context.Context, filter lifecycle.ListFilter) ([]sandbox.Session, error)
}

// Events is the record of recent events; *eventlog.Log has it.
type Events interface {
	Chat(tenant string, chatID uuid.UUID) []lifecycle.Event
	LastHour(tenant string) []eventlog.Minute
	Subscribe(tenant string) (<-chan lifecycle.Event, func())
}

// Sample is one reading of a sandbox's resource use.
type Sample struct {
	At         time.Time
	CPUNanos   uint64 // CPU time used since the sandbox started
	SystemCPU  uint64 // the host's CPU time at the same moment
	OnlineCPUs uint32
	Memory     uint64
	MemLimit   uint64
}

// PoolFill is one profile's warm pool.
type PoolFill struct {
	Profile string `json:"profile"`
	Ready   int    `json:"ready"`
	Target  int    `json:"target"`
	Max     int    `json:"max"`
}

// Config holds the page's dependencies. Sandboxes and Events are required.
type Config struct {
	Sandboxes Sandboxes
	Events    Events
	// Usage reads one sandbox's resource use (the engine's stats); nil: none shown.
	// Readings are cached for UsageEvery (default DefaultUsageEvery), whoever asks.
	Usage      func(ctx context.Context, containerID string) (Sample, error)
	UsageEvery time.Duration
	// Pools reports the warm pools; nil: none.
	Pools func() []PoolFill
	// ProfileOf names the profile an agent's sandboxes get; nil: the agent id.
	ProfileOf func(agentID string) string
	// XtermDir is searched for xterm.js and xterm.css (default DefaultXtermDir; "-":
	// never). The page uses them only when xterm.js is a browser build.
	XtermDir string
	Now      func() time.Time
	Logger   *slog.Logger
}

// DefaultUsageEvery is how long a sandbox's usage reading is served before the engine is
// asked again.
const DefaultUsageEvery = 5 * time.Second

// UI is the page.
type UI struct {
	cfg   Config
	usage *usageCache
	xterm string // the folder of a usable xterm.js, or ""
}

// New checks cfg and returns the page.
func New(cfg Config) (*UI, error) {
	if cfg.Sandboxes == nil || cfg.Events == nil {
		return nil, errors.New("webui: missing Sandboxes or Events")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ProfileOf == nil {
		cfg.ProfileOf = func(agentID string) string { return agentID }
	}
	if cfg.UsageEvery <= 0 {
		cfg.UsageEvery = DefaultUsageEvery
	}
	if cfg.XtermDir == "" {
		cfg.XtermDir = DefaultXtermDir
	}
	u := &UI{cfg: cfg, xterm: browserXterm(cfg.XtermDir)}
	if cfg.Usage != nil {
		u.usage = newUsageCache(cfg.Usage, cfg.UsageEvery, cfg.Now)
	}
	return u, nil
}

// browserXterm returns dir if it holds an xterm.js the browser can load as a script (it
// defines the global Terminal); Debian 12's is a CommonJS module, which it cannot.
func browserXterm(dir string) string {
	if dir == "-" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(dir, "xterm.js"))
	if err != nil || strings.Contains(string(b[:min(len(b), 4096)]), "require(") {
		return ""
	}
	if _, err := os.Stat(filepath.Join(dir, "xterm.css")); err != nil {
		return ""
	}
	return dir
}

// Files serves the page at /ui/ (and xterm.js at /ui/vendor/xterm/ when there is a
// usable one). It needs no token: the page holds no data; it asks /v1/ for it.
func (u *UI) Files() http.Handler {
	sub, _ := fs.Sub(static, "static")
	files := http.StripPrefix("/ui/", http.FileServerFS(sub))
	var xterm http.Handler
	if u.xterm != "" {
		xterm = http.StripPrefix("/ui/vendor/xterm/", http.FileServer(http.Dir(u.xterm)))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'")
		w.Header().Set("Cache-Control", "no-cache")
		switch {
		case r.URL.Path == "/ui":
			http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
		case strings.HasPrefix(r.URL.Path, "/ui/vendor/xterm/"):
			if xterm == nil || !(strings.HasSuffix(r.URL.Path, "/xterm.js") || strings.HasSuffix(r.URL.Path, "/xterm.css")) {
				http.NotFound(w, r)
				return
			}
			xterm.ServeHTTP(w, r)
		default:
			files.ServeHTTP(w, r)
		}
	})
}

// API serves the page's data under /v1/ui/ (mounted behind the API's authentication, as
// httpapi.Config.UI).
func (u *UI) API() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ui/info", u.info)
	mux.HandleFunc("GET /v1/ui/sandboxes", u.sandboxes)
	mux.HandleFunc("GET /v1/ui/chats/{chat_id}/events", u.chatEvents)
	mux.HandleFunc("GET /v1/ui/overview", u.overview)
	mux.HandleFunc("GET /v1/ui/events", u.stream)
	mux.HandleFunc("/v1/ui/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, fmt.Errorf("no such route: %s %s: %w", r.Method, r.URL.Path, sandbox.ErrNotFound))
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

func (u *UI) info(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, map[string]any{
		"tenant": sandbox.TenantFrom(r.Context()),
		"xterm":  u.xterm != "",
		"now":    u.cfg.Now().UTC(),
	})
}

// row is one sandbox of the list.
type row struct {
	ChatID      string    `json:"chat_id"`
	AgentID     string    `json:"agent_id"`
	Profile     string    `json:"profile"`
	Status      string    `json:"status"`
	CreatedAt   time.Time `json:"created_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	Expired     bool      `json:"expired"`
	CPUPercent  *float64  `json:"cpu_percent"`  // null until two readings exist
	MemoryBytes *uint64   `json:"memory_bytes"` // null when unknown
	MemoryLimit uint64    `json:"memory_limit,omitempty"`
}

// listFilter reads the query of GET /v1/sandboxes: agent_id, expired, after, limit.
func listFilter(r *http.Request) (lifecycle.ListFilter, error) {
	q := r.URL.Query()
	f := lifecycle.ListFilter{AgentID: q.Get("agent_id"), Limit: 50}
	if v := q.Get("expired"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return f, fmt.Errorf("expired %q is not true or false: %w", v, sandbox.ErrInvalid)
		}
		f.Expired = &b
	}
	if v := q.Get("after"); v != "" {
		id, err := sandbox.ParseChatID(v)
		if err != nil {
			return f, err
		}
		f.After = id
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return f, fmt.Errorf("limit %q is not a number from 1 to 1000: %w", v, sandbox.ErrInvalid)
		}
		f.Limit = n
	}
	if len(f.AgentID) > 256 {
		return f, fmt.Errorf("agent_id is longer than 256 bytes: %w", sandbox.ErrInvalid)
	}
	return f, nil
}

func (u *UI) sandboxes(w http.ResponseWriter, r *http.Request) {
	f, err := listFilter(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	now := u.cfg.Now()
	f.Now = now
	sessions, err := u.cfg.Sandboxes.List(r.Context(), f)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var usage map[string]reading
	if u.usage != nil {
		ids := make([]string, 0, len(sessions))
		for _, s := range sessions {
			if !s.Expired(now) {
				ids = append(ids, s.ContainerID)
			}
		}
		usage = u.usage.get(r.Context(), ids)
	}
	rows := make([]row, 0, len(sessions))
	for _, s := range sessions {
		rw := row{
			ChatID: s.ChatID.String(), AgentID: s.AgentID, Profile: u.cfg.ProfileOf(s.AgentID),
			Status: string(s.Status), CreatedAt: s.CreatedAt.UTC(), ExpiresAt: s.ExpiresAt.UTC(), Expired: s.Expired(now),
		}
		if rd, ok := usage[s.ContainerID]; ok {
			rw.CPUPercent, rw.MemoryBytes, rw.MemoryLimit = rd.cpu, &rd.memory, rd.limit
		}
		rows = append(rows, rw)
	}
	next := ""
	if len(sessions) == f.Limit && f.Limit > 0 {
		next = sessions[len(sessions)-1].ChatID.String()
	}
	writeJSON(w, map[string]any{"items": rows, "next": next, "now": now.UTC()})
}

// event is an event as the page reads it.
type event struct {
	At     time.Time `json:"at"`
	ChatID string    `json:"chat_id"`
	Type   string    `json:"type"`
	Detail string    `json:"detail,omitempty"`
}

func toEvent(e lifecycle.Event) event {
	return event{At: e.At.UTC(), ChatID: e.ChatID.String(), Type: string(e.Type), Detail: e.Detail}
}

func (u *UI) chatEvents(w http.ResponseWriter, r *http.Request) {
	chatID, err := sandbox.ParseChatID(r.PathValue("chat_id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	// Only the caller's tenant's events: a chat another tenant used shows none of them.
	evs := u.cfg.Events.Chat(sandbox.TenantFrom(r.Context()), chatID)
	out := make([]event, 0, len(evs))
	for _, e := range evs {
		out = append(out, toEvent(e))
	}
	writeJSON(w, map[string]any{"items": out})
}

// maxActiveCount bounds the sandboxes the overview counts (pages of 1000).
const maxActiveCount = 10000

func (u *UI) overview(w http.ResponseWriter, r *http.Request) {
	live := false
	active := 0
	f := lifecycle.ListFilter{Expired: &live, Limit: 1000, Now: u.cfg.Now()}
	for active < maxActiveCount {
		page, err := u.cfg.Sandboxes.List(r.Context(), f)
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		active += len(page)
		if len(page) < f.Limit {
			break
		}
		f.After = page[len(page)-1].ChatID
	}
	type minute struct {
		Start  time.Time      `json:"start"`
		Counts map[string]int `json:"counts"`
	}
	hour := u.cfg.Events.LastHour(sandbox.TenantFrom(r.Context()))
	minutes := make([]minute, 0, len(hour))
	for _, m := range hour {
		c := make(map[string]int, len(m.Counts))
		for k, v := range m.Counts {
			c[string(k)] = v
		}
		minutes = append(minutes, minute{Start: m.Start, Counts: c})
	}
	pools := []PoolFill{}
	if u.cfg.Pools != nil {
		pools = append(pools, u.cfg.Pools()...)
	}
	writeJSON(w, map[string]any{"active": active, "active_capped": active >= maxActiveCount, "minutes": minutes, "pools": pools, "now": u.cfg.Now().UTC()})
}

// streamHeartbeat is how often a quiet event stream sends a comment, so that proxies
// and the browser keep it open.
const streamHeartbeat = 15 * time.Second

// stream sends the caller's tenant's events as server-sent events ("event: sandbox",
// data the event's JSON) until the client leaves.
func (u *UI) stream(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // as long as the page stays open
	ch, stop := u.cfg.Events.Subscribe(sandbox.TenantFrom(r.Context()))
	defer stop()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, ": sandboxd events\n\n")
	_ = rc.Flush()
	tick := time.NewTicker(streamHeartbeat)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case e := <-ch:
			b, _ := json.Marshal(toEvent(e))
			_ = rc.SetWriteDeadline(time.Now().Add(time.Minute))
			_, err = fmt.Fprintf(w, "event: sandbox\ndata: %s\n\n", b)
		case <-tick.C:
			_ = rc.SetWriteDeadline(time.Now().Add(time.Minute))
			_, err = fmt.Fprint(w, ": keepalive\n\n")
		}
		if err != nil || rc.Flush() != nil {
			return
		}
	}
}
