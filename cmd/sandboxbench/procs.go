package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/internal/testing/sandboxdproc"
)

// benchToken is the bearer token of every sandboxd the bench starts: the auth path is
// part of what is measured.
const benchToken = "sandboxbench-token"

// child is a process the bench started: sandboxd or the trivial server. It keeps the
// first and last warnings and errors it logged, for the error that may follow.
type child struct {
	proc *sandboxdproc.Proc
	name string
	base string // http://addr

	mu         sync.Mutex
	head, tail []string
}

// startChild runs cmd and waits until it logs the address it listens on (see
// sandboxdproc.Start).
func startChild(ctx context.Context, cmd *exec.Cmd) (*child, error) {
	c := &child{name: filepath.Base(cmd.Path)}
	p, err := sandboxdproc.Start(ctx, cmd, c)
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, c.logTail())
	}
	c.proc, c.base = p, p.Base
	return c, nil
}

// Write keeps the lines of p that are not INFO or DEBUG records.
func (c *child) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if strings.Contains(line, `"level":"INFO"`) || strings.Contains(line, `"level":"DEBUG"`) {
			continue
		}
		if len(c.head) < 20 {
			c.head = append(c.head, line)
			continue
		}
		c.tail = append(c.tail, line)
	}
	if n := len(c.tail); n > 20 {
		c.tail = c.tail[n-20:]
	}
	return len(p), nil
}

func (c *child) logTail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(append(append(c.head[:len(c.head):len(c.head)], "..."), c.tail...), "\n")
}

// stop ends the process with SIGTERM (SIGKILL after sandboxdproc.Timeout) and waits for it.
func (c *child) stop() error {
	err := c.proc.Stop(syscall.SIGTERM)
	if err != nil && !errors.Is(err, sandboxdproc.ErrNoStop) {
		return fmt.Errorf("%s exited with %v\n%s", c.name, err, c.logTail())
	}
	return err
}

func (c *child) kill() { c.proc.Kill() }

// rss reads the resident set size and its peak (VmRSS, VmHWM) of the process, in bytes.
func (c *child) rss() (rss, peak int64, err error) {
	return readRSS(fmt.Sprintf("/proc/%d", c.proc.Pid()))
}

// readRSS reads VmRSS and VmHWM, in bytes, of the process whose /proc folder is dir.
func readRSS(dir string) (rss, peak int64, err error) {
	data, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n << 10
		case "VmHWM":
			peak = n << 10
		}
	}
	if rss == 0 {
		return 0, 0, errors.New("no VmRSS in /proc status")
	}
	return rss, peak, nil
}

// startSandboxd runs the real sandboxd binary on a free loopback port, its periodic
// reconciliation out of the way of the measurements.
func startSandboxd(ctx context.Context, cfg sandboxdproc.Config) (*child, error) {
	cfg.Token, cfg.LogLevel = benchToken, "info"
	cfg.Settings = append([]string{"SANDBOXD_RECONCILE_INTERVAL=1h"}, cfg.Settings...)
	return startChild(ctx, cfg.Command())
}

// roleEnv makes the bench's own binary the trivial server when it names "trivial".
const roleEnv = "SANDBOXBENCH_ROLE"

// startTrivial runs this binary again as the trivial server (see serveTrivial).
func startTrivial(ctx context.Context) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), roleEnv+"=trivial")
	return startChild(ctx, cmd)
}

// trivialAnswer is what the trivial handler answers every request with: a reused
// session shaped like sandboxd's, so that the client does the same decoding work.
const trivialAnswer = `{"session_id":"6f1b2c3d-0000-4000-8000-000000000001",` +
	`"chat_id":"6f1b2c3d-0000-4000-8000-000000000002","container_id":` +
	`"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","status":"RUNNING",` +
	`"created_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T01:00:00Z","agent_id":"",` +
	`"volume_host_path":"/var/lib/sandboxd/volumes/6f1b2c3d-0000-4000-8000-000000000002",` +
	`"expired":false,"result":"reused"}`

// serveTrivial is the ceiling of the reuse benchmark: the same net/http server settings
// as sandboxd's serve() (cmd/sandboxd/main.go; keep the two in step) around a handler
// that reads the body and answers a constant. It serves until SIGTERM.
func serveTrivial() error {
	ctx, stop := signalContext()
	defer stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, trivialAnswer)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      5 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	log.Info("listening", slog.String("addr", ln.Addr().String()))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
