package docker

// A profile's translation into the engine's objects: the container config and host config
// every sandbox of the profile is made with, cold or pooled. Every sandbox gets the
// hardened settings whatever its profile says: all capabilities dropped,
// no-new-privileges, a read-only root, private IPC and cgroup namespaces, an init
// process, no restart, and its workspace folder as its only host mount.

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
)

// ContainerName is the name of the container of a chat's session:
// sandboxd-<chat id>-<session id>. It names chat and session unambiguously: a claimed
// pool container, whose labels name neither, is known by it (see Managed).
func ContainerName(chatID, sessionID uuid.UUID) string {
	return "sandboxd-" + chatID.String() + "-" + sessionID.String()
}

func (r *Runtime) containerConfig(spec lifecycle.CreateSpec, p profile.Profile) *container.Config {
	env := make([]string, 0, len(p.Env))
	for _, k := range slices.Sorted(maps.Keys(p.Env)) {
		env = append(env, k+"="+p.Env[k])
	}
	labels := map[string]string{
		LabelChatID:    spec.ChatID.String(),
		LabelSessionID: spec.SessionID.String(),
		LabelAgentID:   spec.AgentID,
		LabelWorkspace: spec.VolumeHostPath,
		LabelCreatedAt: spec.CreatedAt.UTC().Format(time.RFC3339Nano),
		LabelExpiresAt: spec.ExpiresAt.UTC().Format(time.RFC3339Nano),
	}
	if spec.Tenant != "" { // the default tenant's sandboxes carry none
		labels[LabelTenant] = spec.Tenant
	}
	return &container.Config{
		Image:           p.Image,
		User:            p.User,
		Env:             env,
		WorkingDir:      p.Workspace,
		Hostname:        "sandbox",
		NetworkDisabled: p.Network == "none",
		Labels:          r.labels(labels),
	}
}

// labels adds to more the labels every container of this runtime carries: sandboxd's,
// the instance's and the registry's.
func (r *Runtime) labels(more map[string]string) map[string]string {
	more[LabelManagedBy] = ManagedBy
	more[LabelInstance] = r.instance
	if r.registry != "" {
		more[LabelRegistry] = r.registry
	}
	return more
}

func hostConfig(p profile.Profile, volume string) *container.HostConfig {
	yes := true
	pids := p.PIDs
	return &container.HostConfig{
		Runtime:        p.Runtime, // empty: the engine's default
		NetworkMode:    container.NetworkMode(p.Network),
		RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled},
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: true,
		Privileged:     false,
		IpcMode:        container.IPCModePrivate,
		CgroupnsMode:   container.CgroupnsModePrivate,
		Init:           &yes,
		Tmpfs:          map[string]string{"/tmp": fmt.Sprintf("rw,nosuid,nodev,size=%d,mode=1777", p.TmpfsBytes)},
		LogConfig:      logConfig(p),
		Resources: container.Resources{
			Memory:     p.MemoryBytes,
			MemorySwap: p.MemoryBytes, // swap equal to memory: no swap at all
			NanoCPUs:   p.NanoCPUs,
			PidsLimit:  &pids,
		},
		// Mounts, never Binds: a bind mount of a missing folder fails instead of
		// creating it as root on the host.
		Mounts: []mount.Mount{{
			Type:        mount.TypeBind,
			Source:      volume,
			Target:      p.Workspace,
			BindOptions: &mount.BindOptions{Propagation: mount.PropagationPrivate, NonRecursive: true},
		}},
	}
}

// logConfig is the profile's log: what the engine keeps of the sandbox's init's output,
// bounded (never the engine's default, which may keep everything).
func logConfig(p profile.Profile) container.LogConfig {
	if p.LogDriver == profile.LogNone {
		return container.LogConfig{Type: profile.LogNone}
	}
	return container.LogConfig{Type: p.LogDriver, Config: map[string]string{
		"max-size": strconv.FormatInt(p.LogMaxBytes, 10),
		"max-file": strconv.Itoa(p.LogMaxFiles),
	}}
}

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
