package execwrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// KillTimeout bounds the cleanup after a command's context ended: waiting for the
// wrapper's pid, killing, and waiting for its output to end. It runs detached from the
// caller.
const KillTimeout = 30 * time.Second

// Command is a command a runtime runs through Wrapper, as its kill and its outcome need
// it; the runtime's part is how to run a second command beside it (Run).
type Command struct {
	// Where names the command in errors: "docker: exec in <container>".
	Where string
	// Starter names what starts commands in errors: "engine", "runtime".
	Starter string
	// Header takes the wrapper's first line off the command's output.
	Header *HeaderWriter
	// Token is the command's kill token (the value of TokenVar in its environment).
	Token string
	// Run runs argv in the command's sandbox as the command's user and returns its exit
	// code and (the start of) its output. Its errors wrap sandbox.ErrNotFound when the
	// sandbox is gone or stopped.
	Run func(ctx context.Context, argv []string) (code int, out string, err error)
}

// Result returns code, the exit code of the command once its output has ended, or the
// reason it did not run: sandbox.ErrInvalid when its program is not found or the runtime
// could not start the wrapper (and said why on the output: a missing working folder,
// say), sandbox.ErrUnavailable when the wrapper did not lead a session of its own (it
// then refused to run a command that could not have been killed).
func (c Command) Result(code int) (int, error) {
	line, ok := c.Header.First()
	switch {
	case ok && line == HeaderNotFound:
		return -1, fmt.Errorf("%s: command not found: %w", c.Where, sandbox.ErrInvalid)
	case ok && line == HeaderNoSession:
		return -1, fmt.Errorf("%s: the %s did not start the command in a session of its own, so it could not be killed: %w", c.Where, c.Starter, sandbox.ErrUnavailable)
	case !ok || !Started(line):
		// The wrapper never ran: the runtime could not start it, and said why on its
		// output.
		return -1, fmt.Errorf("%s: cannot start (exit %d): %s: %w", c.Where, code, strings.TrimSpace(line), sandbox.ErrInvalid)
	}
	return code, nil
}

// Kill kills the command, and all it started (what carries its token), with KillScript
// through Run. Given the command's output (ended receives when it ends), it waits for the
// pid on it and, after the kill, for the output to end; with a nil ended, the output has
// ended already. It runs detached from the caller's context, for at most KillTimeout,
// and returns nil when there was nothing (left) to kill, the sandbox gone included. Its
// errors wrap sandbox.ErrUnavailable, or Run's.
func (c Command) Kill(ended <-chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), KillTimeout)
	defer cancel()
	var line string
	if ended == nil {
		line, _ = c.Header.First()
	} else {
		select {
		case line = <-c.Header.Line():
		case <-ended:
			line, _ = c.Header.First()
			ended = nil
		case <-ctx.Done():
			return fmt.Errorf("%s: no pid to kill after %s: %w", c.Where, KillTimeout, sandbox.ErrUnavailable)
		}
	}
	if !Started(line) {
		return nil // it never started, or the wrapper refused to run it
	}
	pid, start, _ := strings.Cut(line, " ")
	var (
		code int
		out  string
		err  error
	)
	// Exit 126 is the runtime failing to start the kill (the script never exits so): a
	// command that holds all of the sandbox's pids leaves none for it. Try again until
	// one frees.
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		code, out, err = c.Run(ctx, []string{"/bin/sh", "-c", KillScript, "sandboxd-kill", pid, start, c.Token})
		if err != nil || code != 126 || !Sleep(ctx, wait) {
			break
		}
	}
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		return nil // gone, with all it started
	case err != nil:
		return fmt.Errorf("%s: kill %s: %w", c.Where, pid, err)
	case code != 0:
		return fmt.Errorf("%s: kill %s: exit %d: %s: %w", c.Where, pid, code, out, sandbox.ErrUnavailable)
	}
	if ended != nil {
		select {
		case <-ended:
		case <-ctx.Done():
			return fmt.Errorf("%s: output still open after the kill: %w", c.Where, sandbox.ErrUnavailable)
		}
	}
	return nil
}

// Workdir is where a command runs: the sandbox's working folder base (its workspace
// mount), or dir, taken from base when relative (from / when base is empty).
func Workdir(base, dir string) string {
	switch {
	case dir == "":
		return base
	case path.IsAbs(dir):
		return path.Clean(dir)
	case base == "":
		base = "/"
	}
	return path.Join(base, dir)
}

// Sleep waits d and reports true, or false when ctx ends first.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// OrDiscard is w, or io.Discard when w is nil: where a command's output goes.
func OrDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
