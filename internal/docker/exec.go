package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

var _ lifecycle.Executor = (*Runtime)(nil)

// How a command is killed (execWrapper, killScript): see the package doc.

// execWrapper checks that the shell leads its own session and group, prints its pid,
// checks that the command exists, and execs it. It reads the session with builtins only,
// and field splitting with its own IFS: the caller's PATH and IFS cannot mislead it.
const execWrapper = `IFS=' ' read -r _ _ _ _ g s _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ st _ </proc/$$/stat
if [ "$g" != "$$" ] || [ "$s" != "$$" ]; then echo "` + headerNoSession + `"; exit 126; fi
command -v "$1" >/dev/null 2>&1 || { echo "` + headerNotFound + `"; exit 127; }
echo "$$ $st"
exec "$@"`

// ExecTokenVar is the environment variable that carries a command's kill token. A
// request may not set it.
const ExecTokenVar = "SANDBOXD_EXEC"

// The wrapper's first stdout line when it does not run the command.
const (
	headerNoSession = "sandboxd-exec: not a session leader"
	headerNotFound  = "sandboxd-exec: command not found"
)

// killScript kills the command whose wrapper was pid $1, started at $2 (clock ticks
// since boot), carrying token $3: its session and group, if pid $1 is still the
// command's or gone, and every process with the token. It exits 0 once none of them is
// left alive, 1 if some resist. It forks nothing but sleep: the sandbox may be out of
// pids. A zombie is dead already: the sandbox's init reaps it.
const killScript = `IFS=' '
t=$1
start=$2
tok="` + ExecTokenVar + `=$3"
own=1
if { read -r st </proc/"$t"/stat; } 2>/dev/null; then
	st=${st##*) }
	set -- $st
	[ "${20}" = "$start" ] || own=0
fi
[ $own = 1 ] && kill -KILL -"$t" 2>/dev/null
n=0
while [ $n -lt 100 ]; do
	left=0
	for f in /proc/[0-9]*/stat; do
		{ read -r st <"$f"; } 2>/dev/null || continue
		p=${f#/proc/}
		p=${p%/stat}
		st=${st##*) }
		set -- $st
		case $1 in Z|X) continue ;; esac
		hit=0
		if [ $own = 1 ] && [ "$4" = "$t" ]; then
			hit=1
		else
			while read -r l || [ -n "$l" ]; do
				case $l in *"$tok"*) hit=1; break ;; esac
			done 2>/dev/null <"/proc/$p/environ"
		fi
		if [ $hit = 1 ]; then
			kill -KILL "$p" 2>/dev/null
			left=1
		fi
	done
	[ $left = 0 ] && exit 0
	n=$((n+1))
	sleep 0.05
done
exit 1`

// killTimeout bounds the cleanup after a command's context ended: waiting for the
// wrapper's pid, killing, and waiting for its output to end. It runs detached from the
// caller.
const killTimeout = 30 * time.Second

// Exec runs cmd in the sandbox containerID, as the sandbox's user, with its output
// streamed to cmd.Stdout and cmd.Stderr as it comes, and returns the command's exit code.
// An empty cmd.Workdir is the sandbox's workspace mount (a relative one is taken from
// there); cmd.Env adds to the sandbox's environment. With a cmd.Stdin, Exec copies it to
// the command and then closes the command's input; Exec returns only after its copy of
// Stdin has stopped (a Read that blocks holds it).
//
// When ctx ends first, or the output cannot be delivered, Exec kills the command and
// every process it started (see killScript) before it returns ctx's error (or the
// writer's), joined with any failure to kill.
//
// Errors wrap sandbox.ErrNotFound when the container is gone or not running,
// sandbox.ErrInvalid for a command that cannot start (no such program or folder, a bad
// variable name) or a container sandboxd did not make, sandbox.ErrUnavailable when the
// engine cannot be reached.
func (r *Runtime) Exec(ctx context.Context, containerID string, cmd lifecycle.ExecCommand) (int, error) {
	if len(cmd.Cmd) == 0 || cmd.Cmd[0] == "" {
		return -1, fmt.Errorf("docker: exec in %s: empty command: %w", containerID, sandbox.ErrInvalid)
	}
	env, err := execEnv(cmd.Env)
	if err != nil {
		return -1, fmt.Errorf("docker: exec in %s: %w", containerID, err)
	}
	token := rand.Text()
	env = append(env, ExecTokenVar+"="+token)
	c, err := r.ownedContainer(ctx, containerID)
	if err != nil {
		return -1, err
	}
	if c.State == nil || !c.State.Running {
		return -1, fmt.Errorf("docker: exec in %s: not running: %w", containerID, sandbox.ErrNotFound)
	}
	// The container's own user and folder, as it was made: its profile may have changed
	// since, the sandbox has not.
	user, workdir := c.Config.User, execWorkdir(c.Config.WorkingDir, cmd.Workdir)

	created, err := r.cli.ExecCreate(ctx, containerID, client.ExecCreateOptions{
		User:         user,
		WorkingDir:   workdir,
		Env:          env,
		AttachStdin:  cmd.Stdin != nil,
		AttachStdout: true,
		AttachStderr: true,
		Cmd:          append([]string{"/bin/sh", "-c", execWrapper, "sandboxd-exec"}, cmd.Cmd...),
	})
	if err != nil {
		return -1, execError(containerID, err)
	}
	att, err := r.cli.ExecAttach(ctx, created.ID, client.ExecAttachOptions{})
	if err != nil {
		return -1, execError(containerID, err)
	}
	var stdin sync.WaitGroup
	defer func() {
		att.Close() // a copy blocked on the connection ends with it
		stdin.Wait()
	}()
	if cmd.Stdin != nil {
		stdin.Go(func() {
			_, _ = io.Copy(att.Conn, cmd.Stdin)
			_ = att.CloseWrite()
		})
	}

	header := newHeaderWriter(orDiscard(cmd.Stdout))
	copied := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(header, orDiscard(cmd.Stderr), att.Reader)
		copied <- err
	}()

	select {
	case err := <-copied:
		switch {
		case err != nil:
			err = fmt.Errorf("docker: exec in %s: output: %w", containerID, err)
		case ctx.Err() != nil:
			err = ctx.Err()
		default:
			return r.finished(ctx, containerID, user, token, created.ID, header)
		}
		// Its output is lost or its caller gone: what is left of it must not run on.
		return -1, errors.Join(err, r.kill(containerID, user, token, header, nil))
	case <-ctx.Done():
		return -1, errors.Join(ctx.Err(), r.kill(containerID, user, token, header, copied))
	}
}

// execWorkdir is where a command runs: the container's working folder (its workspace
// mount), or dir, taken from there when relative.
func execWorkdir(base, dir string) string {
	switch {
	case dir == "":
		return base
	case path.IsAbs(dir):
		return path.Clean(dir)
	case base == "":
		base = "/"
	}
	return path.Join(base, dir)
}

// finished returns the exit code of the exec execID, whose output has ended, or the
// reason its command did not start.
func (r *Runtime) finished(ctx context.Context, containerID, user, token, execID string, header *headerWriter) (int, error) {
	code, err := r.exitCode(ctx, execID)
	if err != nil {
		if ctx.Err() != nil {
			return -1, errors.Join(ctx.Err(), r.kill(containerID, user, token, header, nil))
		}
		return -1, execError(containerID, err)
	}
	line, ok := header.first()
	switch {
	case ok && line == headerNotFound:
		return -1, fmt.Errorf("docker: exec in %s: command not found: %w", containerID, sandbox.ErrInvalid)
	case ok && line == headerNoSession:
		return -1, fmt.Errorf("docker: exec in %s: the engine did not start the command in a session of its own, so it could not be killed: %w", containerID, sandbox.ErrUnavailable)
	case !ok || !isStarted(line):
		// The wrapper never ran: the engine could not start it (a missing working
		// folder, say), and said why on its output.
		return -1, fmt.Errorf("docker: exec in %s: cannot start (exit %d): %s: %w",
			containerID, code, strings.TrimSpace(line), sandbox.ErrInvalid)
	}
	return code, nil
}

// exitCode waits for the engine to see the exec's process end and returns its exit code.
func (r *Runtime) exitCode(ctx context.Context, execID string) (int, error) {
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		res, err := r.cli.ExecInspect(ctx, execID, client.ExecInspectOptions{})
		if err != nil {
			return -1, err
		}
		if !res.Running {
			return res.ExitCode, nil
		}
		if !sleepCtx(ctx, wait) {
			return -1, ctx.Err()
		}
	}
}

// kill kills the command whose wrapper reports to header, and all it started (what
// carries token). Given the command's output (copied), it waits for the pid on it and,
// after the kill, for the output to end; without, the output has ended already. It runs
// detached from the caller's context and returns nil when there was nothing (left) to
// kill.
func (r *Runtime) kill(containerID, user, token string, header *headerWriter, copied <-chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), killTimeout)
	defer cancel()
	var line string
	if copied == nil {
		line, _ = header.first()
	} else {
		select {
		case line = <-header.line:
		case <-copied:
			line, _ = header.first()
			copied = nil
		case <-ctx.Done():
			return fmt.Errorf("docker: exec in %s: no pid to kill after %s: %w", containerID, killTimeout, sandbox.ErrUnavailable)
		}
	}
	if !isStarted(line) {
		return nil // it never started, or the wrapper refused to run it
	}
	pid, start, _ := strings.Cut(line, " ")
	var (
		code int
		out  string
		err  error
	)
	// Exit 126 is the engine failing to start the kill (the script never exits so): a
	// command that holds all of the sandbox's pids leaves none for it. Try again until
	// one frees.
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		code, out, err = r.run(ctx, containerID, user, []string{"/bin/sh", "-c", killScript, "sandboxd-kill", pid, start, token})
		if err != nil || code != 126 || !sleepCtx(ctx, wait) {
			break
		}
	}
	if err != nil {
		return gone(fmt.Errorf("docker: exec in %s: kill %s: %w", containerID, pid, err))
	}
	if code != 0 {
		return fmt.Errorf("docker: exec in %s: kill %s: exit %d: %s: %w", containerID, pid, code, out, sandbox.ErrUnavailable)
	}
	if copied != nil {
		select {
		case <-copied:
		case <-ctx.Done():
			return fmt.Errorf("docker: exec in %s: output still open after the kill: %w", containerID, sandbox.ErrUnavailable)
		}
	}
	return nil
}

// run runs argv in the container as user and returns its exit code and output.
func (r *Runtime) run(ctx context.Context, containerID, user string, argv []string) (int, string, error) {
	created, err := r.cli.ExecCreate(ctx, containerID, client.ExecCreateOptions{
		User: user, AttachStdout: true, AttachStderr: true, Cmd: argv,
	})
	if err != nil {
		return -1, "", execError(containerID, err)
	}
	att, err := r.cli.ExecAttach(ctx, created.ID, client.ExecAttachOptions{})
	if err != nil {
		return -1, "", execError(containerID, err)
	}
	defer att.Close()
	var out bytes.Buffer
	w := &limitedBuffer{b: &out, left: 4 << 10}
	stop := context.AfterFunc(ctx, att.Close) // the read below does not watch ctx
	defer stop()
	if _, err := stdcopy.StdCopy(w, w, att.Reader); err != nil {
		return -1, "", errors.Join(ctx.Err(), err)
	}
	code, err := r.exitCode(ctx, created.ID)
	if err != nil {
		return -1, "", execError(containerID, err)
	}
	return code, strings.TrimSpace(out.String()), nil
}

// execError translates an engine error about an exec: a container that stopped is as
// gone as one that was removed.
func execError(containerID string, err error) error {
	if cerrdefs.IsConflict(err) {
		return fmt.Errorf("docker: exec in %s: %w: %w", containerID, sandbox.ErrNotFound, err)
	}
	return engineError("exec in "+containerID, err)
}

// execEnv turns env into the engine's NAME=value list, in name order.
func execEnv(env map[string]string) ([]string, error) {
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.Contains(env[k], "\x00") {
			return nil, fmt.Errorf("bad environment variable %q: %w", k, sandbox.ErrInvalid)
		}
		if k == ExecTokenVar {
			return nil, fmt.Errorf("environment variable %s is sandboxd's own: %w", k, sandbox.ErrInvalid)
		}
		out = append(out, k+"="+env[k])
	}
	return out, nil
}

// sleepCtx waits d and reports true, or false when ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// isStarted reports whether line is the wrapper's "<pid> <start time>": the command ran.
func isStarted(line string) bool {
	pid, start, ok := strings.Cut(line, " ")
	n, err := strconv.Atoi(pid)
	_, serr := strconv.ParseUint(start, 10, 64)
	return ok && err == nil && n > 1 && serr == nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// headerWriter takes the wrapper's first stdout line off the stream, hands it to line,
// and passes the rest on. It is written by one goroutine (stdcopy).
type headerWriter struct {
	w    io.Writer
	buf  []byte
	done bool
	line chan string // receives the first line, once

	mu   sync.Mutex
	seen *string
}

func newHeaderWriter(w io.Writer) *headerWriter {
	return &headerWriter{w: w, line: make(chan string, 1)}
}

// maxHeader is longer than any first line the wrapper prints; an engine's error message
// may be longer, and is cut there.
const maxHeader = 512

func (h *headerWriter) Write(p []byte) (int, error) {
	n := len(p)
	if !h.done {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			h.buf = append(h.buf, p[:min(len(p), maxHeader-len(h.buf))]...)
			return n, nil
		}
		h.buf = append(h.buf, p[:min(i, maxHeader-len(h.buf))]...)
		h.publish()
		p = p[i+1:]
	}
	if len(p) == 0 {
		return n, nil
	}
	if _, err := h.w.Write(p); err != nil {
		return 0, err
	}
	return n, nil
}

func (h *headerWriter) publish() {
	h.done = true
	s := string(h.buf)
	h.mu.Lock()
	h.seen = &s
	h.mu.Unlock()
	h.line <- s
}

// first returns the first line once the stream has ended: whatever came when it had no
// newline, and false when nothing came at all.
func (h *headerWriter) first() (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen != nil {
		return *h.seen, true
	}
	return string(h.buf), len(h.buf) > 0
}

// limitedBuffer keeps the first left bytes written to it.
type limitedBuffer struct {
	b    *bytes.Buffer
	left int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	k := min(len(p), l.left)
	l.b.Write(p[:k])
	l.left -= k
	return len(p), nil
}
