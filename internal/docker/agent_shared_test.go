package docker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/sandboxd/sandboxd/internal/agentproto"
	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
)

// channelAgent is the command line of an agent started as one host's channel.
const channelAgent = docker.AgentTarget + " " + agentproto.ChannelArg

// startLong runs argv through rt in the background, and waits until it printed
// "started"; the returned channel gets its exit code and error, out its output.
func startLong(t *testing.T, e env, id string, argv ...string) (*syncbuf.Buffer, <-chan error) {
	t.Helper()
	out := &syncbuf.Buffer{}
	done := make(chan error, 1)
	go func() {
		code, err := e.rt.Exec(context.Background(), id, lifecycle.ExecCommand{Cmd: argv, Stdout: out})
		if err == nil && code != 0 {
			err = fmt.Errorf("exit %d", code)
		}
		done <- err
	}()
	for deadline := time.Now().Add(20 * time.Second); !strings.HasPrefix(out.String(), "started\n"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%q did not start: %q", argv, out.String())
		}
	}
	return out, done
}

// Replicas (SharedSandboxes) each reach a sandbox through an agent of their own,
// started through the engine's exec: their commands run at once in one sandbox with
// input and output of many frames each, and each gets exactly its own; a replica's
// first command kills nothing another runs; a replica that goes takes its channel's
// agent and its commands with it, and nothing of the others'.
func TestReplicasEachHaveAChannelOfTheirOwn(t *testing.T) {
	shared := func(c *docker.Config) { c.SharedSandboxes = true }
	readerA, readerB := sdkmetric.NewManualReader(), sdkmetric.NewManualReader()
	a := newEnv(t, metered(readerA, shared))
	s := a.create(t, newSpec(""))
	b := newEnv(t, metered(readerB, func(c *docker.Config) { shared(c); c.Instance = a.inst; c.VolumeRoot = a.root }))

	out, long := startLong(t, a, s.ContainerID, "sh", "-c", "echo started; sleep 2; echo done")
	for _, e := range []env{a, b} {
		if got := parentOf(t, e, s.ContainerID); got != channelAgent {
			t.Fatalf("the command's parent is %q, want %q", got, channelAgent)
		}
	}

	// Input of about five frames each, echoed back: a frame of one replica's split
	// by another's would corrupt both.
	const perReplica = 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*perReplica)
	for i := range 2 * perReplica {
		e := a
		if i%2 == 1 {
			e = b
		}
		wg.Go(func() {
			in := make([]byte, 150<<10)
			_, _ = rand.Read(in)
			want := hex.EncodeToString(in)
			var stdout, stderr bytes.Buffer
			code, err := e.rt.Exec(context.Background(), s.ContainerID, lifecycle.ExecCommand{
				Cmd: []string{"cat"}, Stdin: strings.NewReader(want), Stdout: &stdout, Stderr: &stderr})
			if err != nil || code != 0 || stdout.String() != want || stderr.Len() != 0 {
				errs <- fmt.Errorf("command %d: exit %d, %v, %d bytes out (want %d, same: %v), stderr %q",
					i, code, err, stdout.Len(), len(want), stdout.String() == want, stderr.String())
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := <-long; err != nil || out.String() != "started\ndone\n" {
		t.Errorf("the first replica's command, across the other's first: %v, %q", err, out.String())
	}
	for name, r := range map[string]*sdkmetric.ManualReader{"a": readerA, "b": readerB} {
		if n := metricValue(t, r, "sandbox.exec.fallback.total"); n != 0 {
			t.Errorf("replica %s: %v commands fell back to the engine's exec, want none", name, n)
		}
	}

	// Replica a goes: its channel ends, and with it its agent and its command.
	_, gone := startLong(t, a, s.ContainerID, "sh", "-c", "echo started; sleep 97")
	_ = a.rt.Close()
	if err := <-gone; !errors.Is(err, sandbox.ErrUnavailable) {
		t.Errorf("the command of a closed replica: %v, want ErrUnavailable", err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, ps := run(t, b, s.ContainerID, "ps", "-o", "pid,stat,args")
		if !hasLiveProcess(ps, "sleep 97") && strings.Count(ps, channelAgent) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after replica a closed, want its command and its agent gone, b's agent alone:\n%s", ps)
		}
	}
}

// Why replicas do not share the attach: a second process attaching to a sandbox's main
// agent is a new host to it, and what the first runs is killed (and never reported to
// the first, whose channel the agent has muted).
func TestASecondAttachIsANewHost(t *testing.T) {
	a := newEnv(t, nil)
	s := a.create(t, newSpec(""))
	b := newEnv(t, func(c *docker.Config) { c.Instance = a.inst; c.VolumeRoot = a.root })
	_, long := startLong(t, a, s.ContainerID, "sh", "-c", "echo started; sleep 96")
	if got := parentOf(t, b, s.ContainerID); got != docker.AgentTarget {
		t.Fatalf("the second runtime's command ran under %q, want the main agent", got)
	}
	if code, ps := run(t, b, s.ContainerID, "ps", "-o", "pid,stat,args"); code != 0 || hasLiveProcess(ps, "sleep 96") {
		t.Errorf("the first runtime's command after the second attached (exit %d):\n%s", code, ps)
	}
	_ = a.rt.Close()
	if err := <-long; err == nil {
		t.Error("the first runtime's command ended well")
	}
}
