package agent

// The image's own command. With the agent as a sandbox's main process, the engine runs
// neither the image's entrypoint nor its command; sandboxd reads them from the image and
// hands them over in agentproto.CommandVar, and the agent runs them beside the commands
// it is asked for, as Docker would have: as the sandbox's user, in the sandbox's
// environment and working folder, with no input. Its output goes to the agent's standard
// error (the container's stderr, which the channel never reads; kept by the sandbox's log
// driver, if any). It runs in a session of its own, so no command's kill reaches it. When
// it ends, the agent says so on its standard error and serves on: the sandbox's life is
// the agent's. When the sandbox stops, the engine's SIGTERM is passed on to its process
// group and the agent waits for it to end (until the engine's stop timeout kills both).

import (
	"errors"
	"fmt"
	"io"
	"os/exec"
	"syscall"
)

// Child is the image's command, started by StartChild.
type Child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it ended and was reaped
}

// StartChild starts argv, its program looked up in env's PATH, with env and no input, its
// output on out, where its end is reported too.
func StartChild(argv, env []string, out io.Writer) (*Child, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("agent: the image's command is empty")
	}
	path, err := lookPath(argv[0], envValue(env, "PATH"), "")
	if err != nil {
		return nil, fmt.Errorf("agent: the image's command: %w", err)
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: env, Stdout: out, Stderr: out,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true}}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("agent: the image's command: %w", err)
	}
	c := &Child{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(out, "sandboxd-agent: the image's command %q ended: %v\n", argv, exitText(err))
		close(c.done)
	}()
	return c, nil
}

// Done is closed once the command ended.
func (c *Child) Done() <-chan struct{} { return c.done }

// Stop sends SIGTERM to the command's process group and waits for the command to end.
func (c *Child) Stop() {
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	<-c.done
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
