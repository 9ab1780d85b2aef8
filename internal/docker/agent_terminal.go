package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/agentproto"
	"github.com/sandboxd/sandboxd/internal/execwrap"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// terminal runs Shell on a pseudo-terminal through the agent (agentproto.OpenPTY), with
// the semantics of Runtime.Terminal: what t.Stdin gives is typed into it once it has
// started, t.Resize resizes it, its output goes to t.Stdout, and when ctx ends first, or
// the output cannot be delivered, the agent kills it and everything it started. Its
// error is errAgentNotStarted when nothing was sent.
//
// The agent's frames for it are checked as a command's are (agentConn.readFrames); a
// second Started changes nothing, and output after its Exit is dropped.
func (c *agentConn) terminal(ctx context.Context, t lifecycle.TerminalIO, size lifecycle.TermSize, env []string) (int, error) {
	id, st := c.open(0)
	defer c.closeStream(id, st)
	p, err := json.Marshal(agentproto.PTYMsg{Argv: []string{execwrap.Shell}, Env: env, Dir: c.workdir,
		Cols: min(size.Cols, agentproto.MaxTermSide), Rows: min(size.Rows, agentproto.MaxTermSide)})
	if err != nil {
		return -1, fmt.Errorf("docker: terminal in %s: %w", c.containerID, err)
	}
	if err := c.write(agentproto.OpenPTY, id, p); err != nil {
		return -1, errAgentNotStarted
	}
	// Input is not waited for: a Read of t.Stdin may block (the caller ends it after
	// Terminal returns); stop ends it at its next turn.
	stop := make(chan struct{})
	var resizing sync.WaitGroup
	defer func() {
		close(stop)
		resizing.Wait()
	}()
	if t.Resize != nil {
		resizing.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-c.closed:
					return
				case sz := <-t.Resize:
					if sz.Cols == 0 || sz.Rows == 0 {
						continue
					}
					// Frames are ordered: the agent has the terminal before its first resize.
					payload := agentproto.ResizePayload(min(sz.Cols, agentproto.MaxTermSide), min(sz.Rows, agentproto.MaxTermSide))
					if c.write(agentproto.Resize, id, payload) != nil {
						return
					}
				}
			}
		})
	}

	var (
		outErr   error
		started  bool
		canceled bool
		killBy   <-chan time.Time
		done     = ctx.Done()
	)
	cancel := func() {
		if !canceled {
			canceled = true
			// Sent aside: the reader may be waiting for this loop to take a frame.
			go func() { _ = c.write(agentproto.Cancel, id, nil) }()
			killBy = time.After(killTimeout)
		}
	}
	for {
		select {
		case ev := <-st.events:
			switch ev.t {
			case agentproto.Started:
				if !started && t.Stdin != nil {
					go c.feed(id, st, t.Stdin, stop)
				}
				started = true
			case agentproto.Stdout, agentproto.Stderr: // a terminal has one output
				if outErr == nil {
					if _, err := orDiscard(t.Stdout).Write(ev.data); err != nil {
						outErr = fmt.Errorf("docker: terminal in %s: output: %w", c.containerID, err)
						cancel()
					}
				}
			case agentproto.Failed:
				return -1, agentFailure(c.containerID, ev.reason, ev.msg)
			case agentproto.Exit:
				switch {
				case outErr != nil:
					return -1, outErr
				case ctx.Err() != nil:
					return -1, ctx.Err()
				case ev.exit.Canceled:
					return -1, fmt.Errorf("docker: terminal in %s: the agent killed the shell (it lost its host): %w", c.containerID, sandbox.ErrUnavailable)
				}
				return int(ev.exit.Code), nil
			}
		case <-done:
			done = nil
			cancel()
		case <-killBy:
			err := fmt.Errorf("docker: terminal in %s: the agent did not report the shell killed after %s: %w", c.containerID, killTimeout, sandbox.ErrUnavailable)
			return -1, errors.Join(ctx.Err(), outErr, err)
		case <-c.closed:
			err := fmt.Errorf("docker: terminal in %s: the agent's channel closed: %w: %w", c.containerID, sandbox.ErrUnavailable, c.err)
			if !c.a.r.running(c.containerID) {
				err = fmt.Errorf("docker: terminal in %s: the sandbox stopped: %w", c.containerID, sandbox.ErrNotFound)
			}
			return -1, errors.Join(ctx.Err(), outErr, err)
		}
	}
}
