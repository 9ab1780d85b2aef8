package main

import (
	"bufio"
	"context"
	"encoding/json"
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
)

// benchToken is the bearer token of every sandboxd the bench starts: the auth path is
// part of what is measured.
const benchToken = "sandboxbench-token"

// buildSandboxd builds cmd/sandboxd of the module the working directory is in into dir.
func buildSandboxd(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		return "", fmt.Errorf("build sandboxd: run from inside the sandboxd module or pass -sandboxd (go env GOMOD: %v)", err)
	}
	bin := filepath.Join(dir, "sandboxd")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/sandboxd/sandboxd/cmd/sandboxd")
	build.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build sandboxd: %w\n%s", err, out)
	}
	return bin, nil
}

// child is a process the bench started: sandboxd or the trivial server.
type child struct {
	cmd    *exec.Cmd
	base   string // http://addr
	exited chan struct{}
	err    error // the exit, once exited is closed

	mu         sync.Mutex
	head, tail []string // the first and last warnings and errors it logged
}

// startChild runs cmd and waits until it logs the address it listens on: a JSON record
// {"msg":"listening","addr":...} as sandboxd writes it.
func startChild(ctx context.Context, cmd *exec.Cmd) (*child, error) {
	c := &child{cmd: cmd, exited: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = c
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			// Warnings and errors are kept, for the error that may follow.
			if !strings.Contains(string(line), `"level":"INFO"`) && !strings.Contains(string(line), `"level":"DEBUG"`) {
				_, _ = c.Write(append(line, '\n'))
			}
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "listening" {
				select {
				case listening <- rec.Addr:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		c.err = cmd.Wait()
		close(c.exited)
	}()
	select {
	case addr := <-listening:
		c.base = "http://" + addr
		return c, nil
	case <-c.exited:
		return nil, fmt.Errorf("%s exited before listening: %v\n%s", filepath.Base(cmd.Path), c.err, c.logTail())
	case <-time.After(60 * time.Second):
		c.kill()
		return nil, fmt.Errorf("%s did not listen within 60s\n%s", filepath.Base(cmd.Path), c.logTail())
	case <-ctx.Done():
		c.kill()
		return nil, ctx.Err()
	}
}

func (c *child) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
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

// stop ends the process with SIGTERM (SIGKILL after 60s) and waits for it.
func (c *child) stop() error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(60 * time.Second):
		c.kill()
		return fmt.Errorf("%s did not stop within 60s after SIGTERM", filepath.Base(c.cmd.Path))
	}
	if c.err != nil {
		return fmt.Errorf("%s exited with %v\n%s", filepath.Base(c.cmd.Path), c.err, c.logTail())
	}
	return nil
}

func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.exited
}

// rss reads the resident set size and its peak (VmRSS, VmHWM) of the process, in bytes.
func (c *child) rss() (rss, peak int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
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

// sandboxdSetup is one sandboxd's world: its registry, instance id, data and volumes.
type sandboxdSetup struct {
	bin        string
	registry   string // sqlite:<path> or postgres://...
	instance   string
	dataDir    string
	volumeRoot string
	image      string
	settings   []string // more SANDBOXD_... variables
}

// startSandboxd runs the real sandboxd binary on a free loopback port.
func startSandboxd(ctx context.Context, s sandboxdSetup) (*child, error) {
	cmd := exec.Command(s.bin)
	cmd.Dir = s.dataDir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SANDBOXD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env,
		"SANDBOXD_LISTEN=127.0.0.1:0",
		"SANDBOXD_TOKENS="+benchToken,
		"SANDBOXD_REGISTRY="+s.registry,
		"SANDBOXD_DOCKER_INSTANCE="+s.instance,
		"SANDBOXD_DOCKER_VOLUME_ROOT="+s.volumeRoot,
		"SANDBOXD_AGENTS_DEFAULT_IMAGE="+s.image,
		"SANDBOXD_LOG_FORMAT=json",
		"SANDBOXD_LOG_LEVEL=info",
		"SANDBOXD_RECONCILE_INTERVAL=1h",
	)
	cmd.Env = append(cmd.Env, s.settings...)
	return startChild(ctx, cmd)
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
