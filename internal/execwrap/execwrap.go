// Package execwrap provides how a runtime runs a command in a sandbox so that it can be
// killed later with everything it started, whatever the engine lets it signal: a wrapper
// script that reports the command's pid on the first line of its output and then execs
// it, a per-command token in its environment, and the script that kills it; and, given
// how a runtime runs a second command in the same sandbox, the kill itself and the
// command's outcome (Command). The Docker and Kubernetes runtimes both run commands
// through it.
package execwrap

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/sandboxd/sandboxd/internal/agentproto"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// How a command is killed.
//
// Neither the Docker Engine API nor the Kubernetes pods/exec subresource can signal an
// exec process, so a runtime runs every command through a small wrapper (Wrapper) and
// kills it, when its context ends, with a second exec (KillScript) in the same sandbox,
// as the same user. That works with a remote engine or cluster too; killing the host pid
// would need sandboxd on the sandbox's host, with rights over the sandbox's processes.
//
// The engine starts each exec process as the leader of a session and process group of
// its own (runc calls setsid for it; the wrapper checks, and refuses to run the command
// if that ever stops being true, rather than kill someone else's group). So the wrapper's
// pid names the group and the session of everything the command starts. The wrapper
// reports it, with its start time, as the first line of its stdout, which Exec takes off
// before the caller sees any output: no pid file to clean up, nothing that fails when
// /tmp is full. Then it execs the command, which keeps that pid and start time.
//
// Each command also carries a token of its own in its environment (TokenVar), which
// what it starts inherits, whatever session it moves to.
//
// KillScript sends SIGKILL to the process group at once, then sweeps /proc for what is
// left of the session (processes that moved to a group of their own, as a shell with job
// control does) and for every process that carries the command's token (a daemon that
// called setsid keeps its environment), until none lives. The group and session are
// killed only if the pid still is the command's (same start time) or is gone: a pid the
// kernel gave to another command after this one ended is left alone (a session's pid is
// not reused while a process of the session lives). A process that starts a new session
// and clears its environment outlives the command; it dies with the sandbox.

// Wrapper checks that the shell leads its own session and group, prints its pid,
// checks that the command exists, and execs it. It reads the session with builtins only,
// and field splitting with its own IFS: the caller's PATH and IFS cannot mislead it.
const Wrapper = `IFS=' ' read -r _ _ _ _ g s _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ st _ </proc/$$/stat
if [ "$g" != "$$" ] || [ "$s" != "$$" ]; then echo "` + HeaderNoSession + `"; exit 126; fi
command -v "$1" >/dev/null 2>&1 || { echo "` + HeaderNotFound + `"; exit 127; }
echo "$$ $st"
exec "$@"`

// Shell is the program a terminal runs (through Wrapper), and TermEnv the terminal type
// it is told, on every runtime.
const (
	Shell   = "/bin/sh"
	TermEnv = "xterm-256color"
)

// TokenVar is the environment variable that carries a command's kill token. A
// request may not set it.
const TokenVar = agentproto.TokenVar // the in-sandbox agent's too

// The wrapper's first stdout line when it does not run the command.
const (
	HeaderNoSession = "sandboxd-exec: not a session leader"
	HeaderNotFound  = "sandboxd-exec: command not found"
)

// KillScript kills the command whose wrapper was pid $1, started at $2 (clock ticks
// since boot), carrying token $3: its session and group, if pid $1 is still the
// command's or gone, and every process with the token. It exits 0 once none of them is
// left alive, 1 if some resist. It forks nothing but sleep: the sandbox may be out of
// pids. A zombie is dead already: the sandbox's init reaps it.
const KillScript = `IFS=' '
t=$1
start=$2
tok="` + TokenVar + `=$3"
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

// Env turns env into the engine's NAME=value list, in name order.
func Env(env map[string]string) ([]string, error) {
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.Contains(env[k], "\x00") {
			return nil, fmt.Errorf("bad environment variable %q: %w", k, sandbox.ErrInvalid)
		}
		if k == TokenVar {
			return nil, fmt.Errorf("environment variable %s is sandboxd's own: %w", k, sandbox.ErrInvalid)
		}
		out = append(out, k+"="+env[k])
	}
	return out, nil
}

// Started reports whether line is the wrapper's "<pid> <start time>": the command ran.
func Started(line string) bool {
	pid, start, ok := strings.Cut(line, " ")
	n, err := strconv.Atoi(pid)
	_, serr := strconv.ParseUint(start, 10, 64)
	return ok && err == nil && n > 1 && serr == nil
}

// HeaderWriter takes the wrapper's first stdout line off the stream, hands it to Line,
// and passes the rest on. It is written by one goroutine.
type HeaderWriter struct {
	w    io.Writer
	buf  []byte
	done bool
	line chan string   // receives the first line, once
	came chan struct{} // closed once the first line has come

	mu   sync.Mutex
	seen *string
}

// NewHeaderWriter returns a HeaderWriter that passes all but the first line on to w.
func NewHeaderWriter(w io.Writer) *HeaderWriter {
	return &HeaderWriter{w: w, line: make(chan string, 1), came: make(chan struct{})}
}

// MaxHeader is longer than any first line the wrapper prints; an engine's error message
// may be longer, and is cut there.
const MaxHeader = 512

// Write passes p on, less what belongs to the first line.
func (h *HeaderWriter) Write(p []byte) (int, error) {
	n := len(p)
	if !h.done {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			h.buf = append(h.buf, p[:min(len(p), MaxHeader-len(h.buf))]...)
			return n, nil
		}
		h.buf = append(h.buf, p[:min(i, MaxHeader-len(h.buf))]...)
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

func (h *HeaderWriter) publish() {
	h.done = true
	// On a terminal the line ends in "\r\n" (the line discipline's onlcr).
	s := strings.TrimSuffix(string(h.buf), "\r")
	h.mu.Lock()
	h.seen = &s
	h.mu.Unlock()
	h.line <- s
	close(h.came)
}

// Came is closed once the first line has come whole (without taking it from Line).
func (h *HeaderWriter) Came() <-chan struct{} { return h.came }

// Line receives the first line once it has come whole.
func (h *HeaderWriter) Line() <-chan string { return h.line }

// First returns the first line once the stream has ended: whatever came when it had no
// newline, and false when nothing came at all.
func (h *HeaderWriter) First() (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen != nil {
		return *h.seen, true
	}
	return string(h.buf), len(h.buf) > 0
}

// LimitedBuffer keeps the first Left bytes written to it in B and drops the rest.
type LimitedBuffer struct {
	B    *bytes.Buffer
	Left int
}

// Write keeps what fits and reports all of p written.
func (l *LimitedBuffer) Write(p []byte) (int, error) {
	k := min(len(p), l.Left)
	l.B.Write(p[:k])
	l.Left -= k
	return len(p), nil
}
