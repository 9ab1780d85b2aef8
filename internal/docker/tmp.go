package docker

import (
	"context"
	"fmt"
	"os"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// OpenTmp opens the /tmp of the sandbox of s, as the sandbox itself sees it, for the file
// API (hostfiles.Config.OpenTmp): through /proc/<pid>/root of the container's first
// process, so sandboxd must run on the engine's host, as root. Refused (sandbox.ErrInvalid)
// unless the agent's profile sets files_tmp; sandbox.ErrNotFound when the sandbox does
// not run. Within the returned Root no link leads out of /tmp, into the rest of the
// sandbox or the host.
func (r *Runtime) OpenTmp(ctx context.Context, s sandbox.Session) (*os.Root, error) {
	if !r.profiles.Of(s.AgentID).FilesTmp {
		return nil, fmt.Errorf("docker: the profile of agent %q gives the file API no access to /tmp: %w", s.AgentID, sandbox.ErrInvalid)
	}
	pid, err := r.runningPid(ctx, s.ContainerID)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(fmt.Sprintf("/proc/%d/root/tmp", pid))
	if err != nil {
		return nil, fmt.Errorf("docker: open /tmp of %s: %w", s.ContainerID, err)
	}
	// The pid was the container's when inspected; it still is if the container still runs
	// with it (a dead container's pid could have gone to another process meanwhile).
	if again, err := r.runningPid(ctx, s.ContainerID); err != nil || again != pid {
		_ = root.Close()
		return nil, fmt.Errorf("docker: sandbox %s stopped while its /tmp was opened: %w", s.ContainerID, sandbox.ErrNotFound)
	}
	return root, nil
}

// runningPid returns the host pid of the container's first process; sandbox.ErrNotFound
// when it does not run.
func (r *Runtime) runningPid(ctx context.Context, containerID string) (int, error) {
	c, err := r.ownedContainer(ctx, containerID)
	if err != nil {
		return 0, err
	}
	if c.State == nil || !c.State.Running || c.State.Pid <= 0 {
		return 0, fmt.Errorf("docker: sandbox %s does not run: %w", containerID, sandbox.ErrNotFound)
	}
	return c.State.Pid, nil
}
