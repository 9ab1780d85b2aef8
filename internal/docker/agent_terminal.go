package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/sandboxd/sandboxd/internal/agentproto"
	"github.com/sandboxd/sandboxd/internal/execwrap"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
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

	return c.await(ctx, id, st, agentRun{
		op: "terminal", what: "shell", stdout: t.Stdout, stderr: t.Stdout, // a terminal has one output
		started: func() {
			if t.Stdin != nil {
				go c.feedStdin(id, st, t.Stdin, stop)
			}
		},
	})
}
