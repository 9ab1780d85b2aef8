package docker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/sandboxd/sandboxd/internal/agentproto"
	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
)

// The in-sandbox agent inside real sandboxes, under runc and gVisor: it is the sandbox's
// main process, commands run as its children, its kill takes a fork bomb that holds the
// sandbox's pids, and the engine's exec takes over when it is missing or silent.

// metered adds a manual metric reader to a runtime's config.
func metered(reader *sdkmetric.ManualReader, more func(*docker.Config)) func(*docker.Config) {
	return func(c *docker.Config) {
		c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		if more != nil {
			more(c)
		}
	}
}

// parentOf runs a command in the sandbox through the runtime and returns the command
// line of its parent process.
func parentOf(t *testing.T, e env, id string) string {
	t.Helper()
	code, out := run(t, e, id, "sh", "-c", `[ $PPID = 0 ] || tr '\0' ' ' </proc/$PPID/cmdline`)
	if code != 0 {
		t.Fatalf("parent: exit %d: %s", code, out)
	}
	return strings.TrimSpace(out)
}

// runThroughAgent runs argv through the runtime and fails the test unless the agent ran
// it (no fallback to the engine's exec); it returns the exit code and the output.
func runThroughAgent(t *testing.T, e env, id string, argv ...string) (int, string) {
	t.Helper()
	if got := parentOf(t, e, id); got != docker.AgentTarget {
		t.Fatalf("commands run under %q, not the agent", got)
	}
	return run(t, e, id, argv...)
}

// agentPID is the agent's pid in the sandbox, found through the engine's exec.
const agentPID = `for p in /proc/[0-9]*; do case "$(tr '\0' ' ' <$p/cmdline 2>/dev/null)" in "` + docker.AgentTarget + ` ") echo ${p#/proc/};; esac; done`

func TestTheAgentRunsTheSandboxesCommands(t *testing.T) {
	for _, tc := range []struct {
		name, runtime string
		pids          int64
	}{
		{"runc", "", 64},
		// gVisor's own threads on the host count against the sandbox's pids limit, and
		// the sandbox's kernel dies when it cannot make one: the default limit, then.
		{"runsc", gVisor, 0},
	} {
		rt := tc.runtime
		t.Run(tc.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			e := newEnv(t, metered(reader, func(c *docker.Config) {
				c.Profiles = testProfiles(t, profile.Agents{Default: profile.Spec{Runtime: rt, PIDs: tc.pids}})
			}))
			if rt != "" {
				requireRuntime(t, e.cli, rt)
			}
			s := e.create(t, newSpec(""))
			c := e.inspect(t, s.ContainerID)
			if !slices.Equal(c.Config.Entrypoint, []string{docker.AgentTarget}) || !c.Config.OpenStdin || c.Config.Tty {
				t.Errorf("entrypoint %q, open stdin %v, tty %v: want the agent on an open stdin", c.Config.Entrypoint, c.Config.OpenStdin, c.Config.Tty)
			}
			if c.HostConfig.LogConfig.Type != "none" {
				t.Errorf("log driver %q, want none: the agent's frames would fill the log", c.HostConfig.LogConfig.Type)
			}
			mounted := false
			for _, m := range c.Mounts {
				if m.Destination == docker.AgentTarget {
					mounted = !m.RW
				}
			}
			if !mounted {
				t.Errorf("the agent is not mounted read-only: %+v", c.Mounts)
			}

			if got := parentOf(t, e, s.ContainerID); got != docker.AgentTarget {
				t.Errorf("the command's parent is %q, want the agent", got)
			}
			code, out := run(t, e, s.ContainerID, "sh", "-c", `grep -E '^(Uid|NoNewPrivs|CapEff):' /proc/$PPID/status | tr -s '\t ' ' '; echo x > `+docker.AgentTarget+` || echo read-only`)
			// gVisor's /proc says nothing of no_new_privs.
			if code != 0 || !strings.Contains(out, "Uid: 1000 1000 1000 1000") || rt == "" && !strings.Contains(out, "NoNewPrivs: 1") ||
				!strings.Contains(out, "CapEff: 0000000000000000") || !strings.Contains(out, "read-only") {
				t.Errorf("the agent's status: exit %d\n%s\nwant the sandbox's user, no privileges, a read-only binary", code, out)
			}

			// A fork bomb holds every pid of the sandbox; the kill forks nothing. Under
			// gVisor a bomb that reaches the limit takes the sandbox's kernel with it
			// (it cannot make the host threads it needs): processes that left the
			// command's group and session, then.
			script := "b() { b | b & }; b; sleep 99"
			if rt != "" {
				script = "(setsid sh -c 'sleep 99 & sleep 99' &); set -m; sleep 99 & sleep 99"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := e.rt.Exec(ctx, s.ContainerID, lifecycle.ExecCommand{Cmd: []string{"sh", "-c", script}})
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("fork bomb past its deadline: %v, want DeadlineExceeded", err)
			}
			if code, ps := run(t, e, s.ContainerID, "ps", "-o", "pid,stat,args"); code != 0 || (hasLiveProcess(ps, "b | b") || hasLiveProcess(ps, "sleep 99")) {
				t.Errorf("after the kill (exit %d):\n%s", code, ps)
			}
			if n := metricValue(t, reader, "sandbox.exec.fallback.total"); n != 0 {
				t.Errorf("%v commands fell back to the engine's exec, want none", n)
			}
		})
	}
}

// A sandbox made without the agent (by a runtime without one, or before it existed)
// runs commands through the engine's exec, counted.
func TestASandboxWithoutTheAgentFallsBackToTheEngine(t *testing.T) {
	old := newEnv(t, noAgent)
	s := old.create(t, newSpec(""))
	reader := sdkmetric.NewManualReader()
	e := newEnv(t, metered(reader, func(c *docker.Config) { c.Instance = old.inst; c.VolumeRoot = old.root }))
	for range 2 {
		if got := parentOf(t, e, s.ContainerID); strings.Contains(got, docker.AgentTarget) {
			t.Fatalf("the command's parent is %q in a sandbox without the agent", got)
		}
	}
	if n := metricValue(t, reader, "sandbox.exec.fallback.total", "reason=no_agent"); n != 2 {
		t.Errorf("fallbacks counted: %v, want 2", n)
	}
}

// An agent that does not answer (stopped) leaves the commands to the engine's exec; once
// it answers again, a later command reattaches. The second runtime is sandboxd after a
// restart: it attaches to sandboxes it did not make.
func TestAStoppedAgentFallsBackAndIsReattached(t *testing.T) {
	first := newEnv(t, nil)
	s := first.create(t, newSpec(""))
	if got := parentOf(t, first, s.ContainerID); got != docker.AgentTarget {
		t.Fatalf("the command's parent is %q, want the agent", got)
	}
	pid, code := dockertest.Exec(t, first.cli, s.ContainerID, "sh", "-c", agentPID)
	pid = strings.TrimSpace(pid)
	if code != 0 || pid == "" {
		t.Fatalf("agent pid: %q, exit %d", pid, code)
	}
	if out, code := dockertest.Exec(t, first.cli, s.ContainerID, "kill", "-STOP", pid); code != 0 {
		t.Fatalf("kill -STOP: %s", out)
	}
	_ = first.rt.Close()

	reader := sdkmetric.NewManualReader()
	e := newEnv(t, metered(reader, func(c *docker.Config) { c.Instance = first.inst; c.VolumeRoot = first.root }))
	if got := parentOf(t, e, s.ContainerID); strings.Contains(got, docker.AgentTarget) {
		t.Fatalf("the command ran under a stopped agent: parent %q", got)
	}
	if n := metricValue(t, reader, "sandbox.exec.fallback.total", "reason=agent_down"); n != 1 {
		t.Errorf("fallbacks counted: %v, want 1", n)
	}
	if out, code := dockertest.Exec(t, first.cli, s.ContainerID, "kill", "-CONT", pid); code != 0 {
		t.Fatalf("kill -CONT: %s", out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for parentOf(t, e, s.ContainerID) != docker.AgentTarget {
		if time.Now().After(deadline) {
			t.Fatal("the agent was not reattached after it answered again")
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// A command left running by a sandboxd that ended is killed when the next one attaches;
// the new one runs its own commands through the agent.
func TestTheNextSandboxdKillsWhatThePreviousLeftRunning(t *testing.T) {
	first := newEnv(t, nil)
	s := first.create(t, newSpec(""))
	var out syncbuf.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := first.rt.Exec(context.Background(), s.ContainerID, lifecycle.ExecCommand{
			Cmd: []string{"sh", "-c", "echo started; sleep 98"}, Stdout: &out})
		done <- err
	}()
	for deadline := time.Now().Add(20 * time.Second); out.String() != "started\n"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the command did not start")
		}
	}
	_ = first.rt.Close() // sandboxd ends: its channel closes
	if err := <-done; !errors.Is(err, sandbox.ErrUnavailable) {
		t.Errorf("the command of a closed runtime: %v, want ErrUnavailable", err)
	}
	e := newEnv(t, func(c *docker.Config) { c.Instance = first.inst; c.VolumeRoot = first.root })
	if code, ps := run(t, e, s.ContainerID, "ps", "-o", "pid,stat,args"); code != 0 || hasLiveProcess(ps, "sleep 98") {
		t.Errorf("after the next runtime attached (exit %d):\n%s", code, ps)
	}
}

// Whatever runs in the sandbox can write into the agent's output: the frames it forges
// close the channel (the command that did it fails), nothing else, and the next command
// reattaches.
func TestForgedFramesCloseTheChannelAndNothingElse(t *testing.T) {
	e := newEnv(t, nil)
	s := e.create(t, newSpec(""))
	for _, forged := range []string{
		`printf 'garbage, not a frame'`,
		`printf '\100\000\000\000\000\377\377\377\377'`,                         // a Ready of 4 GiB
		`printf '\107\000\000\000\001\000\000\000\006\000\000\001\000\000\000'`, // an exit code of 256
	} {
		_, err := e.rt.Exec(context.Background(), s.ContainerID, lifecycle.ExecCommand{
			Cmd: []string{"sh", "-c", forged + " >/proc/$PPID/fd/1; sleep 5"}})
		if !errors.Is(err, sandbox.ErrUnavailable) {
			t.Errorf("%s: %v, want ErrUnavailable (the channel closed)", forged, err)
		}
		if got := parentOf(t, e, s.ContainerID); got != docker.AgentTarget {
			t.Errorf("after %s: the next command's parent is %q, want the agent", forged, got)
		}
	}
}

// A Started that what runs in the sandbox forges for its own command (a whole frame,
// so the channel stays open) starts no second feeder of the command's input: the input
// arrives once and in order.
func TestAForgedStartedFeedsTheInputOnce(t *testing.T) {
	e := newEnv(t, nil)
	const first = 1000
	docker.SetFirstStream(e.rt, first)
	s := e.create(t, newSpec(""))
	var forged strings.Builder
	for id := uint32(first + 1); id <= first+32; id++ { // the command's stream is one of the first
		for _, b := range agentproto.AppendFrame(nil, agentproto.Started, id, nil) {
			fmt.Fprintf(&forged, `\%03o`, b)
		}
	}
	input := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB: many input frames
	sum := sha256.Sum256(input)
	var out syncbuf.Buffer
	code, err := e.rt.Exec(context.Background(), s.ContainerID, lifecycle.ExecCommand{
		Cmd:   []string{"sh", "-c", "printf '" + forged.String() + "' >/proc/$PPID/fd/1; sha256sum"},
		Stdin: bytes.NewReader(input), Stdout: &out,
	})
	if err != nil || code != 0 {
		t.Fatalf("exec: %d, %v", code, err)
	}
	if got, want := strings.Fields(out.String()), hex.EncodeToString(sum[:]); len(got) == 0 || got[0] != want {
		t.Errorf("the command read input of sha256 %v, want %s (the input, once, in order)", got, want)
	}
}

// slowWriter takes its first write only after a pause: a streaming client that reads
// slowly.
type slowWriter struct {
	syncbuf.Buffer
	pause time.Duration
	once  sync.Once
}

func (w *slowWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { time.Sleep(w.pause) })
	return w.Buffer.Write(p)
}

// A consumer slower than the channel's silence bound holds the channel's reader, so the
// agent's pongs wait unread: that is not the agent's silence, and the channel stays open
// for the sandbox's other commands.
func TestASlowConsumerDoesNotCloseTheChannel(t *testing.T) {
	e := newEnv(t, nil)
	docker.SetAgentPing(e.rt, 100*time.Millisecond, 500*time.Millisecond)
	s := e.create(t, newSpec(""))
	out := &slowWriter{pause: 3 * time.Second}
	code, err := e.rt.Exec(context.Background(), s.ContainerID, lifecycle.ExecCommand{
		// More frames than the reader may hand on before a command's Exec takes one.
		Cmd: []string{"sh", "-c", "i=0; while [ $i -lt 100 ]; do echo $i; i=$((i+1)); sleep 0.01; done"}, Stdout: out})
	if err != nil || code != 0 || !strings.HasSuffix(out.String(), "\n98\n99\n") {
		t.Fatalf("slowly read command: exit %d, %v, %q", code, err, out.String())
	}
	if got := parentOf(t, e, s.ContainerID); got != docker.AgentTarget {
		t.Errorf("after it: parent %q, want the agent on the same channel", got)
	}
}
