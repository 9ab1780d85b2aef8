package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/execwrap"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

var _ lifecycle.Executor = (*Runtime)(nil)

// ExecTokenVar is the environment variable that carries a command's kill token (see
// package execwrap, which says how a command is killed). A request may not set it.
const ExecTokenVar = execwrap.TokenVar

// Exec runs cmd in the sandbox containerID, as the sandbox's user, with its output
// streamed to cmd.Stdout and cmd.Stderr as it comes, and returns the command's exit code.
// An empty cmd.Workdir is the sandbox's workspace mount (a relative one is taken from
// there); cmd.Env adds to the sandbox's environment. With a cmd.Stdin, Exec copies it to
// the command and then closes the command's input; Exec returns only after its copy of
// Stdin has stopped (a Read that blocks holds it).
//
// When ctx ends first, or the output cannot be delivered, Exec kills the command and
// every process it started (see execwrap.KillScript) before it returns ctx's error (or the
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
	if r.agents != nil {
		env, err := execwrap.Env(cmd.Env)
		if err != nil {
			return -1, fmt.Errorf("docker: exec in %s: %w", containerID, err)
		}
		conn, reason, err := r.agents.get(ctx, containerID)
		if err != nil {
			return -1, err
		}
		if conn != nil {
			code, err := conn.exec(ctx, cmd, env)
			if !errors.Is(err, errAgentNotStarted) {
				return code, err
			}
			reason = agentDown
		}
		r.agents.countFallback(ctx, reason)
	}
	c, env, token, err := r.execTarget(ctx, containerID, cmd.Env)
	if err != nil {
		return -1, err
	}
	// The container's own user and folder, as it was made: its profile may have changed
	// since, the sandbox has not.
	user, workdir := c.Config.User, execwrap.Workdir(c.Config.WorkingDir, cmd.Workdir)

	created, err := r.cli.ExecCreate(ctx, containerID, client.ExecCreateOptions{
		User:         user,
		WorkingDir:   workdir,
		Env:          env,
		AttachStdin:  cmd.Stdin != nil,
		AttachStdout: true,
		AttachStderr: true,
		Cmd:          append([]string{"/bin/sh", "-c", execwrap.Wrapper, "sandboxd-exec"}, cmd.Cmd...),
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

	header := execwrap.NewHeaderWriter(execwrap.OrDiscard(cmd.Stdout))
	copied := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(header, execwrap.OrDiscard(cmd.Stderr), att.Reader)
		copied <- err
	}()

	return r.await(ctx, containerID, user, token, created.ID, header, copied)
}

// await waits for the end of the exec execID, whose output is being copied through header
// (copied receives the copy's end), and returns its exit code; when ctx ends first, or
// the output cannot be delivered, it kills the command and all it started.
func (r *Runtime) await(ctx context.Context, containerID, user, token, execID string, header *execwrap.HeaderWriter, copied chan error) (int, error) {
	cmd := execwrap.Command{
		Where: "docker: exec in " + containerID, Starter: "engine", Header: header, Token: token,
		Run: func(ctx context.Context, argv []string) (int, string, error) {
			return r.run(ctx, containerID, user, argv)
		},
	}
	select {
	case err := <-copied:
		switch {
		case err != nil && ctx.Err() == nil:
			err = fmt.Errorf("docker: exec in %s: output: %w", containerID, err)
		case ctx.Err() != nil:
			err = ctx.Err()
		default:
			return r.finished(ctx, containerID, execID, cmd)
		}
		// Its output is lost or its caller gone: what is left of it must not run on.
		return -1, errors.Join(err, cmd.Kill(nil))
	case <-ctx.Done():
		return -1, errors.Join(ctx.Err(), cmd.Kill(copied))
	}
}

// execTarget checks that containerID is a running sandbox of this service and returns it
// with the environment of a command to run in it: env, and a fresh kill token (the
// token's value is returned too).
func (r *Runtime) execTarget(ctx context.Context, containerID string, env map[string]string) (container.InspectResponse, []string, string, error) {
	list, err := execwrap.Env(env)
	if err != nil {
		return container.InspectResponse{}, nil, "", fmt.Errorf("docker: exec in %s: %w", containerID, err)
	}
	token := rand.Text()
	list = append(list, execwrap.TokenVar+"="+token)
	c, err := r.ownedContainer(ctx, containerID)
	if err != nil {
		return container.InspectResponse{}, nil, "", err
	}
	if c.State == nil || !c.State.Running {
		return container.InspectResponse{}, nil, "", fmt.Errorf("docker: exec in %s: not running: %w", containerID, sandbox.ErrNotFound)
	}
	return c, list, token, nil
}

// finished returns the exit code of the exec execID, whose output has ended, or the
// reason its command did not start.
func (r *Runtime) finished(ctx context.Context, containerID, execID string, cmd execwrap.Command) (int, error) {
	code, err := r.exitCode(ctx, execID)
	if err != nil {
		if ctx.Err() != nil {
			return -1, errors.Join(ctx.Err(), cmd.Kill(nil))
		}
		return -1, execError(containerID, err)
	}
	return cmd.Result(code)
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
		if !execwrap.Sleep(ctx, wait) {
			return -1, ctx.Err()
		}
	}
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
	w := &execwrap.LimitedBuffer{B: &out, Left: 4 << 10}
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
