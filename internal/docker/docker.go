package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/client"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/workspace"
	"github.com/sandboxd/sandboxd/internal/wsimage"
)

// Labels every sandbox container carries. The reconciler sees only containers with
// LabelManagedBy=ManagedBy and LabelInstance equal to the runtime's instance, and removes
// only those whose LabelRegistry is its registry's (or one it adopted). The others say
// enough of the session to rebuild its record when a registry adopts the sandbox.
const (
	LabelManagedBy = "sandboxd.managed-by"
	LabelInstance  = "sandboxd.instance"
	LabelRegistry  = "sandboxd.registry" // the id of the registry that recorded it
	LabelChatID    = "sandboxd.chat-id"
	LabelSessionID = "sandboxd.session-id"
	LabelAgentID   = "sandboxd.agent-id"
	LabelTenant    = "sandboxd.tenant"     // the tenant whose caller made it (absent: the default)
	LabelWorkspace = "sandboxd.workspace"  // the workspace folder on the host
	LabelCreatedAt = "sandboxd.created-at" // the session's creation, RFC 3339 (ns)
	LabelExpiresAt = "sandboxd.expires-at" // its expiry when made (a keepalive is not seen here)
	ManagedBy      = "sandboxd"
)

// DefaultStopTimeout is how long a stop lets a sandbox end gracefully by default.
const DefaultStopTimeout = 3 * time.Second

// DefaultMinFreeBytes is the free-space floor of the volume root sandboxd runs with unless
// configured (docker.min_free_bytes); Config.MinFreeBytes itself is 0, no floor, when
// unset.
const DefaultMinFreeBytes = 1 << 30

// Config configures a Runtime. Instance, VolumeRoot and Profiles are required.
type Config struct {
	// Host is the engine's address (e.g. unix:///var/run/docker.sock); empty means the
	// environment's DOCKER_HOST or the platform default.
	Host string
	// Instance names this sandboxd in the labels of its containers, so that two services
	// sharing an engine never reconcile each other's sandboxes.
	Instance string
	// VolumeRoot is the folder every workspace must lie in.
	VolumeRoot string
	// Registry is the id of the registry that records this runtime's sandboxes
	// (lifecycle.Binding), carried by each as LabelRegistry; empty: no such label.
	Registry string
	// MinFreeBytes is the free space the volume root's file system must keep: below it,
	// creates are refused (sandbox.ErrFull) before anything is made. 0: no floor.
	MinFreeBytes int64
	// Profiles are the agents' profiles, which the runtime translates into containers.
	Profiles *profile.Set
	// StopTimeout is how long Stop lets a sandbox end gracefully before it is killed
	// (default DefaultStopTimeout; rounded up to whole seconds).
	StopTimeout time.Duration
	// CallTimeout bounds each engine call that reads or changes records (inspect, list,
	// ...; default DefaultCallTimeout), CreateTimeout each that makes or tears down a
	// container (create, start, remove; a stop gets its StopTimeout more; default
	// DefaultCreateTimeout). Past it the call fails with sandbox.ErrUnavailable.
	CallTimeout   time.Duration
	CreateTimeout time.Duration
	// NoStopGrace makes Stop remove a sandbox at once, as Delete does, without a
	// graceful stop: its processes get no SIGTERM and no time to flush files.
	NoStopGrace bool
	// PoolCheckInterval is how often the warm pool checks its containers (default
	// DefaultPoolCheckInterval).
	PoolCheckInterval time.Duration
	// Images makes and mounts the file system images of bounded workspaces (profiles
	// with workspace_max_bytes); zero: mkfs.ext4 and mount from PATH.
	Images wsimage.Tools
	// AgentPath is the in-sandbox agent's binary (cmd/sandboxd-agent, static), on the
	// engine's host: every sandbox made runs it as its main process (mounted read-only at
	// AgentTarget) and commands run through it, the engine's exec being the fallback for
	// sandboxes without a live agent. Empty: no agent, every command through the
	// engine's exec.
	AgentPath string
	// SharedSandboxes says other processes (replicas on one PostgreSQL registry) run
	// commands in the same sandboxes. The container's attached stdin is then no channel
	// for any of them (the engine fans the attaches' input into one pipe in chunks that
	// may split a frame, so their frames would interleave): each process talks to an
	// agent of its own per sandbox, started through the engine's exec (agent.go).
	SharedSandboxes bool
	// MeterProvider receives the pool's and the exec's metrics; Logger its warnings. Both
	// optional.
	MeterProvider metric.MeterProvider
	Logger        *slog.Logger
}

// Runtime runs sandboxes on a Docker engine. It is safe for concurrent use.
type Runtime struct {
	cli         engine
	instance    string
	registry    string
	root        *workspace.Root
	profiles    *profile.Set
	stopTimeout int   // seconds
	noStopGrace bool  // Stop removes at once
	minFree     int64 // free-space floor of the volume root
	images      wsimage.Tools
	log         *slog.Logger

	egress    egressState // the egress network, once started (egress.go)
	agentPath string      // Config.AgentPath
	agentExec bool        // Config.SharedSandboxes: a channel is an exec of the agent
	agents    *agents     // the agents' channels (agent.go); nil without AgentPath
	pool      *pool       // the warm pool (pool.go)

	// beforeStart is a test hook: it runs between a container's create and its start,
	// with the context of the work that makes it.
	beforeStart func(ctx context.Context, containerID string)
}

var (
	_ lifecycle.Runtime   = (*Runtime)(nil)
	_ lifecycle.Admitter  = (*Runtime)(nil)
	_ lifecycle.Inventory = (*Runtime)(nil)
)

// New checks cfg and returns a Runtime. It does not contact
// the engine (see Ping); the API version is negotiated on the first call. A missing or
// unsafe setting is an error.
func New(cfg Config) (*Runtime, error) {
	var problems []error
	if strings.TrimSpace(cfg.Instance) == "" {
		problems = append(problems, errors.New("an instance id is required"))
	}
	root, err := workspace.NewRoot(cfg.VolumeRoot)
	if err != nil {
		problems = append(problems, err)
	}
	if cfg.AgentPath != "" {
		if err := CheckAgent(cfg.AgentPath); err != nil {
			problems = append(problems, err)
		}
	}
	if cfg.Profiles == nil {
		problems = append(problems, errors.New("the agent profiles are required"))
	} else {
		groups, _ := os.Getgroups()
		if err := canHandOver(os.Geteuid(), append(groups, os.Getegid()), cfg.Profiles); err != nil {
			problems = append(problems, err)
		}
	}
	if len(problems) == 0 && cfg.Profiles.BoundsWorkspaces() {
		// A bound the host cannot enforce would be a pretence: refuse to start instead.
		if err := checkImages(root, cfg.Images); err != nil {
			problems = append(problems, err)
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("docker: config: %w", errors.Join(problems...))
	}

	opts := []client.Opt{client.FromEnv}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker: client: %w", err)
	}
	stop := cfg.StopTimeout
	if stop <= 0 {
		stop = DefaultStopTimeout
	}
	call, create := cfg.CallTimeout, cfg.CreateTimeout
	if call <= 0 {
		call = DefaultCallTimeout
	}
	if create <= 0 {
		create = DefaultCreateTimeout
	}
	r := &Runtime{
		cli:         deadlines{engine: cli, call: call, create: create},
		instance:    cfg.Instance,
		registry:    cfg.Registry,
		root:        root,
		profiles:    cfg.Profiles,
		minFree:     cfg.MinFreeBytes,
		images:      cfg.Images,
		stopTimeout: int((stop + time.Second - 1) / time.Second),
		agentPath:   cfg.AgentPath,
		agentExec:   cfg.SharedSandboxes,
		noStopGrace: cfg.NoStopGrace,
	}
	mp, log := cfg.MeterProvider, cfg.Logger
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r.log = log
	if cfg.AgentPath != "" {
		if r.agents, err = newAgents(r, mp); err != nil {
			_ = cli.Close()
			return nil, fmt.Errorf("docker: %w", err)
		}
	}
	if r.pool, err = newPool(r, cfg, mp, log); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("docker: %w", err)
	}
	return r, nil
}

// Close closes the channels to the sandboxes' agents (the agents kill what they run for
// this process after a while without it, or when the next one attaches) and releases
// the client's idle connections.
func (r *Runtime) Close() error {
	if r.agents != nil {
		r.agents.close()
	}
	return r.cli.Close()
}

// CheckRuntimes checks that the engine knows the OCI runtime of every profile (a profile
// may ask for gVisor's runsc, which an engine has only when its daemon.json lists it), and
// that a profile which asks for a network does not get a runtime the engine runs with
// --network=none (its sandboxes would have none). Errors wrap sandbox.ErrInvalid for such
// a profile, sandbox.ErrUnavailable when the engine cannot be asked.
func (r *Runtime) CheckRuntimes(ctx context.Context) error {
	profiles := map[string]profile.Profile{"default": r.profiles.Default()}
	for _, agent := range r.profiles.Agents() {
		profiles[fmt.Sprintf("%q", agent)] = r.profiles.Of(agent)
	}
	needed := false
	for _, p := range profiles {
		needed = needed || p.Runtime != ""
	}
	if !needed {
		return nil
	}
	res, err := r.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return engineError("info", err)
	}
	known := res.Info.Runtimes
	var problems []error
	for _, name := range slices.Sorted(maps.Keys(profiles)) {
		p := profiles[name]
		if p.Runtime == "" {
			continue
		}
		rt, ok := known[p.Runtime]
		switch {
		case !ok:
			problems = append(problems, fmt.Errorf("runtime %q of profile %s: the engine has no such runtime (it has %s; add it to the daemon's runtimes)",
				p.Runtime, name, strings.Join(slices.Sorted(maps.Keys(known)), ", ")))
		case p.Network != "none" && noNetwork(rt.Args):
			problems = append(problems, fmt.Errorf("profile %s asks for network %q, but the engine runs runtime %q with --network=none: its sandboxes would have none",
				name, p.Network, p.Runtime))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("docker: %w: %w", sandbox.ErrInvalid, errors.Join(problems...))
	}
	return nil
}

// noNetwork reports whether runtime arguments turn the runtime's network off (runsc's
// --network=none).
func noNetwork(args []string) bool {
	for i, a := range args {
		if a == "--network=none" || a == "--network" && i+1 < len(args) && args[i+1] == "none" {
			return true
		}
	}
	return false
}

// Identity names the sandboxes this Runtime manages: the engine's id (which the engine
// keeps across restarts) and the instance. Errors wrap sandbox.ErrUnavailable when the
// engine cannot be asked.
func (r *Runtime) Identity(ctx context.Context) (string, error) {
	res, err := r.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return "", engineError("info", err)
	}
	if res.Info.ID == "" {
		return "", fmt.Errorf("docker: info: the engine gave no id: %w", sandbox.ErrUnavailable)
	}
	return fmt.Sprintf("docker engine %s, instance %s", res.Info.ID, r.instance), nil
}

// Ping checks that the engine answers (and negotiates the API version). Its error wraps
// sandbox.ErrUnavailable.
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("docker: ping: %w: %w", sandbox.ErrUnavailable, err)
	}
	return nil
}

// profilesOf returns the listed profiles of s, in the order of their agent ids.
func profilesOf(s *profile.Set) []profile.Profile {
	var out []profile.Profile
	for _, a := range s.Agents() {
		out = append(out, s.Of(a))
	}
	return out
}

// canHandOver says whether a process of uid euid can give new workspace folders to every
// profile's sandbox user, as Create must: only root can give a folder away. Refusing at
// start beats a create that fails with "operation not permitted".
// groups are the groups such a process belongs to: it may give a folder to those only.
func canHandOver(euid int, groups []int, profiles *profile.Set) error {
	if euid == 0 {
		return nil
	}
	var errs []error
	check := func(name string, p profile.Profile) {
		uid, gid := p.UID, p.GID
		switch {
		case uid != euid:
			errs = append(errs, fmt.Errorf("%s runs its sandbox as uid %d, but sandboxd runs as uid %d without root and cannot hand it workspace folders: run sandboxd as root or as uid %d, or set the profile's user to %d:<gid>",
				name, uid, euid, uid, euid))
		case !slices.Contains(groups, gid):
			errs = append(errs, fmt.Errorf("%s runs its sandbox in group %d, which sandboxd (uid %d, without root) is not a member of, so it cannot hand that group workspace folders: run sandboxd as root or pick one of its groups %v",
				name, gid, euid, groups))
		}
	}
	check("the default profile", profiles.Default())
	for _, agent := range profiles.Agents() {
		check(fmt.Sprintf("profile %q", agent), profiles.Of(agent))
	}
	return errors.Join(errs...)
}

// OpenWorkspace opens the workspace folder path, which must lie in the volume root, as
// an os.Root without following any link on its way there (see workspace.Root.Open): the
// hostfiles.Config.Open of the sandboxes this runtime makes. Errors wrap
// sandbox.ErrInvalid, sandbox.ErrNotFound or sandbox.ErrUnavailable.
func (r *Runtime) OpenWorkspace(path string) (*os.Root, error) {
	return r.root.Open(path)
}

// DefaultEgressProxyPort is the port of the egress proxy on the gateway of the
// instance's egress network, by default.
const DefaultEgressProxyPort = 3128
