package docker

// A profile's translation into the engine's objects: the container config and host config
// every sandbox of the profile is made with, cold or pooled. Every sandbox gets the
// hardened settings whatever its profile says: all capabilities dropped,
// no-new-privileges, a read-only root, private IPC and cgroup namespaces, an init
// process, no restart, and its workspace folder as its only host mount.

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// ContainerName is the name of the container of a chat's session:
// sandboxd-<chat id>-<session id>. It names chat and session unambiguously: a claimed
// pool container, whose labels name neither, is known by it (see Managed).
func ContainerName(chatID, sessionID uuid.UUID) string {
	return "sandboxd-" + chatID.String() + "-" + sessionID.String()
}

func (r *Runtime) containerConfig(spec lifecycle.CreateSpec, p profile.Profile) *container.Config {
	vars := p.Env
	if p.Network == profile.NetworkEgress {
		if n := r.egress.Load(); n != nil {
			// The proxy's variables win over the profile's: they are the only way out.
			vars = maps.Clone(p.Env)
			if vars == nil {
				vars = map[string]string{}
			}
			maps.Copy(vars, egressEnv(n))
		}
	}
	env := make([]string, 0, len(vars))
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		env = append(env, k+"="+vars[k])
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
	return r.withAgent(&container.Config{
		Image:           p.Image,
		User:            p.User,
		Env:             env,
		WorkingDir:      p.Workspace,
		Hostname:        "sandbox",
		NetworkDisabled: p.Network == "none",
		Labels:          r.labels(labels),
	})
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

// hostConfig is the host config of a sandbox of p on volume. A profile of network egress
// joins the instance's egress network, which StartEgress must have made (else an error
// wrapping sandbox.ErrUnavailable).
func (r *Runtime) hostConfig(p profile.Profile, volume string) (*container.HostConfig, error) {
	yes := true
	pids := p.PIDs
	mode := container.NetworkMode(p.Network)
	var dns []netip.Addr
	if p.Network == profile.NetworkEgress {
		n := r.egress.Load()
		if n == nil {
			return nil, fmt.Errorf("docker: %w: %w", sandbox.ErrUnavailable, errNoEgress)
		}
		mode = container.NetworkMode(n.Name)
		// Names are the proxy's to resolve: the engine's resolver in the sandbox forwards
		// nowhere (a loopback server no one runs), so no DNS query leaves through it.
		dns = []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1})}
	}
	hc := &container.HostConfig{
		Runtime:        p.Runtime, // empty: the engine's default
		NetworkMode:    mode,
		DNS:            dns,
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
	if r.agentPath != "" {
		if !r.agentExec {
			// The agent is the sandbox's main process and its stdout, attached, carries
			// the frames: every command's input and output, which no log driver should
			// keep, whatever the profile's log says. (Each replica's agent has a
			// channel of its own: the main one's stdout stays silent, and the profile's
			// log keeps the image's own command's output.)
			hc.LogConfig = container.LogConfig{Type: profile.LogNone}
		}
		hc.Mounts = append(hc.Mounts, agentMount(r.agentPath))
	}
	return hc, nil
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
	hc, err := r.hostConfig(prof, volume)
	if err != nil {
		return client.ContainerCreateOptions{}, err
	}
	return client.ContainerCreateOptions{
		Name:       ContainerName(spec.ChatID, spec.SessionID),
		Config:     r.containerConfig(spec, prof),
		HostConfig: hc,
	}, nil
}
