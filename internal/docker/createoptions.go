package docker

import (
	"fmt"

	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
)

// CreateOptions returns what Create asks the engine for when it makes the sandbox of spec
// with volume as its workspace folder: the container's name, config and host config, built
// by the same functions Create uses. It touches neither the engine nor the folder (Create
// also checks and creates the folder), so a tool can make the very same container through
// the Engine API directly: cmd/sandboxbench measures sandboxd against that baseline. The
// error wraps sandbox.ErrInvalid for an agent without a profile.
func (r *Runtime) CreateOptions(spec lifecycle.CreateSpec, volume string) (client.ContainerCreateOptions, error) {
	prof, err := r.profiles.Lookup(spec.AgentID)
	if err != nil {
		return client.ContainerCreateOptions{}, fmt.Errorf("docker: create options: %w", err)
	}
	return client.ContainerCreateOptions{
		Name:       ContainerName(spec.ChatID, spec.SessionID),
		Config:     r.containerConfig(spec, prof),
		HostConfig: hostConfig(prof, volume),
	}, nil
}
