package lifecycletest

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// The fakes every test of a lifecycle.Service shares: a Clock, a Runtime and an Executor.
// Each is safe for concurrent use.

// Clock is a lifecycle.Clock that moves only when a test moves it.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock that reads now.
func NewClock(now time.Time) *Clock { return &Clock{now: now} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Runtime is a lifecycle.Runtime that makes pretend RUNNING sandboxes and records every
// call, a failed one too. The zero value is ready; the hooks, set before the first call,
// let a test name containers, fail calls or hold them.
type Runtime struct {
	// ContainerID names the container of the nth Create (n counts from 1, failed ones
	// included); nil names it "container-<session id>".
	ContainerID func(n int, spec lifecycle.CreateSpec) string
	// BeforeCreate runs in every Create once the call is recorded; an error it returns is
	// the Create's. A test holds a create here.
	BeforeCreate func(ctx context.Context, spec lifecycle.CreateSpec) error
	// BeforeStop runs in every Stop once the call is recorded, before a failure set by
	// FailStop; an error it returns is the Stop's. A test holds a stop here.
	BeforeStop func(ctx context.Context, containerID string) error

	mu        sync.Mutex
	createErr error
	stopErr   map[string]error
	creates   []lifecycle.CreateSpec
	stops     []string
	deletes   []string
}

// FailCreates makes every later Create return err; nil makes them succeed again.
func (r *Runtime) FailCreates(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.createErr = err
}

// FailStop makes every later Stop of containerID return err; nil makes it succeed again.
func (r *Runtime) FailStop(containerID string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopErr == nil {
		r.stopErr = map[string]error{}
	}
	r.stopErr[containerID] = err
}

// Create records spec and returns the session it describes.
func (r *Runtime) Create(ctx context.Context, spec lifecycle.CreateSpec) (sandbox.Session, error) {
	r.mu.Lock()
	r.creates = append(r.creates, spec)
	n, err := len(r.creates), r.createErr
	r.mu.Unlock()
	if r.BeforeCreate != nil {
		if err := r.BeforeCreate(ctx, spec); err != nil {
			return sandbox.Session{}, err
		}
	}
	if err != nil {
		return sandbox.Session{}, err
	}
	container := "container-" + spec.SessionID.String()
	if r.ContainerID != nil {
		container = r.ContainerID(n, spec)
	}
	return sandbox.Session{
		ID: spec.SessionID, ChatID: spec.ChatID, ContainerID: container, Status: sandbox.StatusRunning,
		CreatedAt: spec.CreatedAt, ExpiresAt: spec.ExpiresAt,
		AgentID: spec.AgentID, VolumeHostPath: spec.VolumeHostPath,
	}, nil
}

// Stop records the call and fails as BeforeStop or FailStop say.
func (r *Runtime) Stop(ctx context.Context, containerID string) error {
	r.mu.Lock()
	r.stops = append(r.stops, containerID)
	err := r.stopErr[containerID]
	r.mu.Unlock()
	if r.BeforeStop != nil {
		if err := r.BeforeStop(ctx, containerID); err != nil {
			return err
		}
	}
	return err
}

// Delete records the call and succeeds.
func (r *Runtime) Delete(_ context.Context, containerID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deletes = append(r.deletes, containerID)
	return nil
}

// Calls returns every call so far, in order: the specs of the creates and the containers
// of the stops and of the deletes.
func (r *Runtime) Calls() (creates []lifecycle.CreateSpec, stops, deletes []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.creates), slices.Clone(r.stops), slices.Clone(r.deletes)
}

// Stopped reports whether containerID was stopped or deleted (successfully or not).
func (r *Runtime) Stopped(containerID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.stops, containerID) || slices.Contains(r.deletes, containerID)
}

// Executor is a lifecycle.Executor that runs a few scripted commands:
//
//	echo ARGS...         prints ARGS to stdout, exits 0
//	exit CODE OUT ERR    prints OUT to stdout and ERR to stderr (each when not empty), exits CODE
//	cat                  copies stdin to stdout
//	env                  prints "workdir=" and the workdir, then the env as K=V, sorted, one a line
//	flood N              prints N bytes of 'x'
//	gate                 prints "before\n", waits for Release, prints "after\n"
//	hang                 prints "started\n", signals Started, then waits for its ctx to end
//	vanish               prints "started\n", then fails as if the container were gone
//	split                prints "hé!" in two writes that cut the é in half
//
// Any other command cannot start (sandbox.ErrInvalid, exit 127). A command whose ctx ends
// returns ctx's error, as a real executor does once it has killed the process; WaitEnded
// returns that error. When Clock is set, every command first advances it by Took, so that
// durations show.
type Executor struct {
	Clock *Clock
	Took  time.Duration

	init    sync.Once
	release sync.Once
	gate    chan struct{}
	started chan struct{}
	ended   chan error
}

// executorBacklog bounds the Started and WaitEnded signals a test may leave unread.
const executorBacklog = 64

func (e *Executor) chans() {
	e.init.Do(func() {
		e.gate = make(chan struct{})
		e.started = make(chan struct{}, executorBacklog)
		e.ended = make(chan error, executorBacklog)
	})
}

// Release lets every gate command, waiting or to come, finish. Calling it again does nothing.
func (e *Executor) Release() {
	e.chans()
	e.release.Do(func() { close(e.gate) })
}

// Started receives once for every hang command that has printed.
func (e *Executor) Started() <-chan struct{} {
	e.chans()
	return e.started
}

// WaitEnded returns the ctx error of the next command whose ctx ended, failing t when
// none does within 10 seconds.
func (e *Executor) WaitEnded(t testing.TB) error {
	t.Helper()
	e.chans()
	select {
	case err := <-e.ended:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the command's ctx did not end")
		return nil
	}
}

// Exec runs cmd as the table above says.
func (e *Executor) Exec(ctx context.Context, _ string, cmd lifecycle.ExecCommand) (int, error) {
	e.chans()
	if e.Clock != nil {
		e.Clock.Advance(e.Took)
	}
	args := cmd.Cmd[1:]
	arg := func(i int) string { // "" for an argument not given
		if i < len(args) {
			return args[i]
		}
		return ""
	}
	switch cmd.Cmd[0] {
	case "echo":
		_, err := fmt.Fprintln(cmd.Stdout, strings.Join(args, " "))
		return 0, err
	case "exit":
		code, _ := strconv.Atoi(arg(0))
		if out := arg(1); out != "" {
			if _, err := io.WriteString(cmd.Stdout, out); err != nil {
				return 0, err
			}
		}
		if errOut := arg(2); errOut != "" {
			if _, err := io.WriteString(cmd.Stderr, errOut); err != nil {
				return 0, err
			}
		}
		return code, nil
	case "cat":
		if cmd.Stdin == nil {
			return 0, nil
		}
		_, err := io.Copy(cmd.Stdout, cmd.Stdin)
		return 0, err
	case "env":
		lines := []string{"workdir=" + cmd.Workdir}
		for k, v := range cmd.Env {
			lines = append(lines, k+"="+v)
		}
		slices.Sort(lines[1:])
		_, err := fmt.Fprintln(cmd.Stdout, strings.Join(lines, "\n"))
		return 0, err
	case "flood":
		n, _ := strconv.Atoi(arg(0))
		_, err := io.WriteString(cmd.Stdout, strings.Repeat("x", n))
		return 0, err
	case "gate":
		if _, err := io.WriteString(cmd.Stdout, "before\n"); err != nil {
			return 0, err
		}
		select {
		case <-e.gate:
		case <-ctx.Done():
			e.ended <- ctx.Err()
			return -1, ctx.Err()
		}
		_, err := io.WriteString(cmd.Stdout, "after\n")
		return 0, err
	case "hang":
		if _, err := io.WriteString(cmd.Stdout, "started\n"); err != nil {
			return 0, err
		}
		e.started <- struct{}{}
		<-ctx.Done()
		e.ended <- ctx.Err()
		return -1, ctx.Err()
	case "split":
		if _, err := cmd.Stdout.Write([]byte("h\xc3")); err != nil {
			return 0, err
		}
		_, err := cmd.Stdout.Write([]byte("\xa9!"))
		return 0, err
	case "vanish":
		if _, err := io.WriteString(cmd.Stdout, "started\n"); err != nil {
			return 0, err
		}
		return -1, fmt.Errorf("fake: container is gone: %w", sandbox.ErrNotFound)
	}
	return 127, fmt.Errorf("fake: %q cannot start: %w", cmd.Cmd[0], sandbox.ErrInvalid)
}
