package docker_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/execwrap"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
)

// Terminals on both paths, through the agent's pseudo-terminal and the engine's exec
// with a TTY, driven as the terminal's WebSocket drives them.

// term is one Runtime.Terminal session as a test drives it.
type term struct {
	t      *testing.T
	typed  *io.PipeWriter
	out    syncbuf.Buffer
	resize chan lifecycle.TermSize
	cancel context.CancelFunc
	ended  chan termEnd
}

type termEnd struct {
	code int
	err  error
}

func openTerm(t *testing.T, e env, containerID string, size lifecycle.TermSize) *term {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdin, typed := io.Pipe()
	s := &term{t: t, typed: typed, resize: make(chan lifecycle.TermSize, 1), cancel: cancel, ended: make(chan termEnd, 1)}
	go func() {
		code, err := e.rt.Terminal(ctx, containerID, lifecycle.TerminalIO{Stdin: stdin, Stdout: &s.out, Size: size, Resize: s.resize})
		_ = stdin.Close() // as the WebSocket's handler does: ends a Read of it
		s.ended <- termEnd{code, err}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case end := <-s.ended:
			s.ended <- end
		case <-time.After(30 * time.Second):
			t.Error("the terminal did not end after its context")
		}
	})
	s.waitFor("$ ") // the prompt
	return s
}

func (s *term) waitFor(want string) {
	s.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(s.out.String(), want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.t.Fatalf("no %q within 20s; output:\n%q", want, s.out.String())
		}
	}
}

// typeLine types line and waits until the output after it shows want.
func (s *term) typeLine(line, want string) {
	s.t.Helper()
	from := len(s.out.String())
	if _, err := s.typed.Write([]byte(line + "\r")); err != nil {
		s.t.Fatalf("type %q: %v; output:\n%q", line, err, s.out.String())
	}
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(s.out.String()[from:], want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.t.Fatalf("no %q after typing %q within 20s; output:\n%q", want, line, s.out.String())
		}
	}
}

// typeUntil types line again until the output after it shows want: for what reaches the
// shell on another path than the typed input (the engine's resize is a call of its own).
func (s *term) typeUntil(line, want string) {
	s.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; {
		from := len(s.out.String())
		if _, err := s.typed.Write([]byte(line + "\r")); err != nil {
			s.t.Fatalf("type %q: %v", line, err)
		}
		time.Sleep(300 * time.Millisecond)
		if strings.Contains(s.out.String()[from:], want) {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no %q after typing %q within 20s; output:\n%q", want, line, s.out.String())
		}
	}
}

func (s *term) end() termEnd {
	s.t.Helper()
	select {
	case end := <-s.ended:
		s.ended <- end
		return end
	case <-time.After(30 * time.Second):
		s.t.Fatalf("the terminal did not end; output:\n%q", s.out.String())
		return termEnd{}
	}
}

// hasLiveShell says whether ps (pid, stat, args) shows a live terminal's shell.
func hasLiveShell(ps string) bool {
	for _, line := range strings.Split(ps, "\n") {
		if f := strings.Fields(line); len(f) == 3 && !strings.HasPrefix(f[1], "Z") && f[2] == execwrap.Shell {
			return true
		}
	}
	return false
}

// The shell's parent's command line, typed into the terminal: the agent, or the
// engine's wrapper, which execs the shell (no parent in the sandbox).
const typeParent = `echo "parent:$(tr '\0' ' ' </proc/$PPID/cmdline 2>/dev/null):"`

func TestTerminalOnBothPaths(t *testing.T) {
	for _, tc := range []struct {
		name, runtime string
		agent         bool
		replica       bool // the agent started as the runtime's own channel (SharedSandboxes)
	}{
		{"agent", "", true, false},
		{"agent-replica", "", true, true},
		{"engine", "", false, false},
		{"agent-runsc", gVisor, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *docker.Config) {
				if !tc.agent {
					noAgent(c)
				}
				c.SharedSandboxes = tc.replica
				c.Profiles = testProfiles(t, profile.Agents{Default: profile.Spec{Runtime: tc.runtime}})
			})
			if tc.runtime != "" {
				requireRuntime(t, e.cli, tc.runtime)
			}
			s := e.create(t, newSpec(""))

			term := openTerm(t, e, s.ContainerID, lifecycle.TermSize{Cols: 100, Rows: 30})
			term.typeLine("stty size", "30 100")
			term.resize <- lifecycle.TermSize{Cols: 120, Rows: 40}
			term.typeUntil("stty size", "40 120")
			term.typeLine(`echo $((6*7)) $(id -u) $TERM "$(pwd)"`, "42 1000 xterm-256color "+e.profiles.WorkspaceMount(""))
			from := len(term.out.String())
			term.typeLine(typeParent, ":\r\n")
			agent := docker.AgentTarget + " "
			if tc.replica {
				agent = channelAgent + " "
			}
			if got := term.out.String()[from:]; strings.Contains(got, "parent:"+agent+":") != tc.agent {
				t.Errorf("the shell's parent: %q; through the agent: %v", got, tc.agent)
			}
			term.typeLine("exit 3", "exit 3")
			if end := term.end(); end.err != nil || end.code != 3 {
				t.Errorf("after exit 3: %+v, want exit code 3", end)
			}

			// The client leaves: the shell is killed with everything it started, whatever
			// group or session it moved to.
			term = openTerm(t, e, s.ContainerID, lifecycle.TermSize{})
			term.typeLine("stty size", "24 80")                                                                              // the default size
			term.typeLine("sleep 1001 & setsid sleep 1002 & (sleep 1003 &); set -m; sleep 1004 & echo sta''rted", "started") // quoted: the echo of the typed line is not the answer
			if _, ps := run(t, e, s.ContainerID, "ps", "-o", "pid,stat,args"); !hasLiveShell(ps) || !hasLiveProcess(ps, "sleep 1002") {
				t.Errorf("before the client left, no shell or no sleep 1002 seen:\n%s", ps)
			}
			term.cancel()
			if end := term.end(); !errors.Is(end.err, context.Canceled) {
				t.Errorf("after the client left: %+v, want context.Canceled", end)
			}
			if code, ps := run(t, e, s.ContainerID, "ps", "-o", "pid,stat,args"); code != 0 || hasLiveProcess(ps, "sleep 100") || hasLiveShell(ps) {
				t.Errorf("after the client left (exit %d):\n%s", code, ps)
			}

			// The sandbox ends: so does the terminal.
			term = openTerm(t, e, s.ContainerID, lifecycle.TermSize{})
			term.typeLine("echo still-''here", "still-here")
			if err := e.rt.Delete(context.Background(), s.ContainerID); err != nil {
				t.Fatal(err)
			}
			if end := term.end(); end.err == nil && end.code == 0 {
				t.Errorf("after the sandbox was removed: %+v, want an error or a kill's exit", end)
			}
		})
	}
}

// A sandbox without the agent gets the engine's terminal, counted as a fallback.
func TestATerminalWithoutTheAgentFallsBackToTheEngine(t *testing.T) {
	old := newEnv(t, noAgent)
	s := old.create(t, newSpec(""))
	reader := sdkmetric.NewManualReader()
	e := newEnv(t, metered(reader, func(c *docker.Config) { c.Instance = old.inst; c.VolumeRoot = old.root }))
	term := openTerm(t, e, s.ContainerID, lifecycle.TermSize{})
	from := len(term.out.String())
	term.typeLine(typeParent, ":\r\n")
	if got := term.out.String()[from:]; strings.Contains(got, docker.AgentTarget) {
		t.Errorf("the shell's parent: %q, in a sandbox without the agent", got)
	}
	term.typeLine("exit 4", "exit 4")
	if end := term.end(); end.err != nil || end.code != 4 {
		t.Errorf("after exit 4: %+v", end)
	}
	if n := metricValue(t, reader, "sandbox.exec.fallback.total", "reason=no_agent"); n != 1 {
		t.Errorf("fallbacks counted: %v, want 1", n)
	}
}

// Whatever runs in the terminal can write into the agent's output. A frame for a stream
// nobody opened is dropped and the terminal goes on; garbage, a frame over the maximum
// or one only sandboxd may send closes the channel: the terminal ends as unavailable, the shell is killed,
// and the next terminal gets a new channel to the same agent.
func TestForgedFramesFromATerminal(t *testing.T) {
	e := newEnv(t, nil)
	s := e.create(t, newSpec(""))
	term := openTerm(t, e, s.ContainerID, lifecycle.TermSize{})
	// Stdout (68) for stream 0xdeadbeef, 2 bytes.
	term.typeLine(`printf '\104\336\255\276\357\000\000\000\002hi' >/proc/$PPID/fd/1; echo $((40+2))`, "42")
	term.typeLine("echo $((6*7))x", "42x")
	for _, forged := range []string{
		`printf 'garbage, not a frame'`,
		`printf '\104\000\000\000\001\377\377\377\377'`,                 // Stdout of 4 GiB
		`printf '\041\000\000\000\001\000\000\000\004\000\120\000\030'`, // a Resize, which only sandboxd sends
	} {
		term.typeLine("sleep 1011 & echo sta''rted", "started") // quoted: the echo of the typed line is not the answer
		_, _ = term.typed.Write([]byte(forged + " >/proc/$PPID/fd/1\r"))
		if end := term.end(); !errors.Is(end.err, sandbox.ErrUnavailable) {
			t.Errorf("%s: %+v, want ErrUnavailable (the channel closed)", forged, end)
		}
		term = openTerm(t, e, s.ContainerID, lifecycle.TermSize{})
		from := len(term.out.String())
		term.typeLine(typeParent, ":\r\n")
		if got := term.out.String()[from:]; !strings.Contains(got, "parent:"+docker.AgentTarget+" :") {
			t.Errorf("after %s: the next terminal's shell runs under %q, want the agent", forged, got)
		}
		if code, ps := run(t, e, s.ContainerID, "ps", "-o", "pid,stat,args"); code != 0 || hasLiveProcess(ps, "sleep 1011") {
			t.Errorf("after %s (exit %d):\n%s", forged, code, ps)
		}
	}
}

// A terminal the agent refuses (it runs as many commands as it may) fails as busy, in a
// terminal's words, not a command's.
func TestATerminalTheAgentRefusesSaysTerminal(t *testing.T) {
	e := newEnv(t, nil)
	s := e.create(t, newSpec(""))
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		running.Wait()
	})
	outs := make([]*syncbuf.Buffer, agent.DefaultMaxStreams)
	for i := range outs {
		out := &syncbuf.Buffer{}
		outs[i] = out
		running.Go(func() {
			_, _ = e.rt.Exec(ctx, s.ContainerID, lifecycle.ExecCommand{Cmd: []string{"sh", "-c", "echo started; exec sleep 1021"}, Stdout: out})
		})
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		started := 0
		for _, out := range outs {
			if out.String() == "started\n" {
				started++
			}
		}
		if started == len(outs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d commands started within 30s", started, len(outs))
		}
	}
	code, err := e.rt.Terminal(context.Background(), s.ContainerID, lifecycle.TerminalIO{Stdout: io.Discard})
	if want := "docker: terminal in " + s.ContainerID + ": "; code != -1 || !errors.Is(err, sandbox.ErrBusy) || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Terminal past the agent's limit = %d, %v; want -1 and ErrBusy, worded %q...", code, err, want)
	}
}
