package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/execwrap"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
)

var _ lifecycle.Terminals = (*Runtime)(nil)

// Terminal runs execwrap.Shell as the sandbox's user in its workspace on a pseudo-terminal until it
// exits, and returns its exit code. What t.Stdin gives is typed into it once the shell has
// started; t.Resize resizes it. When ctx ends first, or the output cannot be delivered,
// the shell and everything it started are killed before Terminal returns. A container
// that stops ends the session.
//
// As Exec, it goes through the sandbox's agent, which runs the shell on a terminal of its
// own (agentproto.OpenPTY) and kills it as it kills a command; a sandbox without one, or
// whose agent is down, gets the engine's exec with a TTY instead (counted as a fallback).
// That runs through the wrapper of package execwrap and its kill; what is typed waits
// for the wrapper's first line (typed earlier, the terminal's echo would mix with it).
//
// Terminal does not wait for a Read of t.Stdin that blocks: the caller ends it (closes
// its pipe, say) after Terminal returns.
func (r *Runtime) Terminal(ctx context.Context, containerID string, t lifecycle.TerminalIO) (int, error) {
	size := t.Size
	if size.Cols == 0 || size.Rows == 0 {
		size = lifecycle.DefaultTermSize
	}
	termEnv := map[string]string{"TERM": execwrap.TermEnv}
	if r.agents != nil {
		env, err := execwrap.Env(termEnv)
		if err != nil {
			return -1, fmt.Errorf("docker: terminal in %s: %w", containerID, err)
		}
		conn, reason, err := r.agents.get(ctx, containerID)
		if err != nil {
			return -1, err
		}
		if conn != nil {
			code, err := conn.terminal(ctx, t, size, env)
			if !errors.Is(err, errAgentNotStarted) {
				return code, err
			}
			reason = agentDown
		}
		r.agents.countFallback(ctx, reason)
	}
	c, env, token, err := r.execTarget(ctx, containerID, termEnv)
	if err != nil {
		return -1, err
	}
	console := client.ConsoleSize{Height: uint(size.Rows), Width: uint(size.Cols)}
	user := c.Config.User
	created, err := r.cli.ExecCreate(ctx, containerID, client.ExecCreateOptions{
		User:         user,
		WorkingDir:   c.Config.WorkingDir,
		Env:          env,
		TTY:          true,
		ConsoleSize:  console,
		AttachStdin:  true,
		AttachStdout: true,
		AttachStderr: true,
		Cmd:          []string{"/bin/sh", "-c", execwrap.Wrapper, "sandboxd-exec", execwrap.Shell},
	})
	if err != nil {
		return -1, execError(containerID, err)
	}
	att, err := r.cli.ExecAttach(ctx, created.ID, client.ExecAttachOptions{TTY: true, ConsoleSize: console})
	if err != nil {
		return -1, execError(containerID, err)
	}
	done := make(chan struct{})
	var resizing sync.WaitGroup
	defer func() {
		close(done)
		att.Close()
		resizing.Wait()
	}()
	// A terminal's output is one raw stream (no stdout/stderr frames).
	header := execwrap.NewHeaderWriter(execwrap.OrDiscard(t.Stdout))
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(header, att.Reader)
		copied <- err
	}()
	// Once the wrapper has reported (the exec runs, on its terminal), the terminal gets its
	// size (the engine does not reliably apply the size asked at the start, as docker's
	// CLI knows), then what is typed, then later sizes.
	sized := make(chan struct{})
	resizing.Go(func() {
		defer close(sized)
		select {
		case <-header.Came():
		case <-done:
			return
		}
		for wait := 10 * time.Millisecond; wait < 5*time.Second; wait *= 2 {
			if _, err := r.cli.ExecResize(ctx, created.ID, client.ExecResizeOptions(console)); err == nil {
				return
			}
			select {
			case <-done:
				return
			case <-time.After(wait):
			}
		}
	})
	go func() { // not waited for: a Read of t.Stdin may block (see above)
		select {
		case <-sized:
		case <-done:
			return
		}
		if t.Stdin != nil {
			_, _ = io.Copy(att.Conn, t.Stdin)
		}
	}()
	if t.Resize != nil {
		resizing.Go(func() {
			select {
			case <-sized:
			case <-done:
				return
			}
			for {
				select {
				case <-done:
					return
				case sz := <-t.Resize:
					if sz.Cols == 0 || sz.Rows == 0 {
						continue
					}
					// A failed resize leaves the old size; the session goes on.
					_, _ = r.cli.ExecResize(ctx, created.ID, client.ExecResizeOptions{Height: uint(sz.Rows), Width: uint(sz.Cols)})
				}
			}
		})
	}
	return r.await(ctx, containerID, user, token, created.ID, header, copied)
}
