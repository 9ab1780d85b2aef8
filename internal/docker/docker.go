// Package docker runs sandboxes as hardened containers on a Docker engine. Its Runtime is
// the lifecycle's Runtime, Admitter and Inventory: it makes, stops and removes containers,
// checks create requests (agent profile, workspace folder) before anything happens, and
// lists the containers this instance made so the reconciler can repair crashes.
//
// Every container runs a profile chosen by configuration, never by the client: its own
// image, limits, network and user, with all capabilities dropped, no-new-privileges, a
// read-only root, an init process and the chat's workspace folder as its only host mount.
package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/workspace"
)

// Labels every sandbox container carries. The reconciler sees only containers with
// LabelManagedBy=ManagedBy and LabelInstance equal to the runtime's instance.
const (
	LabelManagedBy = "sandboxd.managed-by"
	LabelInstance  = "sandboxd.instance"
	LabelChatID    = "sandboxd.chat-id"
	LabelSessionID = "sandboxd.session-id"
	LabelAgentID   = "sandboxd.agent-id"
	LabelExpiresAt = "sandboxd.expires-at"
	ManagedBy      = "sandboxd"
)

// DefaultImage is the sandbox base image that scripts/build-image.sh builds.
const DefaultImage = "sandboxd-sandbox:latest"

// Profile is what an agent's sandbox runs: chosen by configuration, never by the client.
// Zero fields take the defaults given with them. Capabilities, privileges, namespaces and
// the root file system are not part of a profile: every sandbox gets the hardened ones.
type Profile struct {
	Image          string            // default DefaultImage
	MemoryBytes    int64             // memory limit; swap is held equal to it (default 512 MiB)
	NanoCPUs       int64             // CPU limit in 1e-9 CPUs (default 1 CPU)
	PidsLimit      int64             // process limit (default 256)
	Network        string            // Docker network mode (default "none"); host and container: are refused
	Env            map[string]string // environment of the sandbox
	WorkspaceMount string            // where the workspace folder appears (default /workspace)
	User           string            // numeric "uid:gid", never uid or gid 0 (default "1000:1000")
	TmpfsBytes     int64             // size of the tmpfs on /tmp (default 64 MiB)
	// Pool is how many sandboxes of this profile are kept started ahead of demand (see
	// StartPool); the zero value keeps none.
	Pool PoolSize
	// ExtendOnActivity makes exec and file calls extend the sandbox's TTL (default off);
	// the lifecycle asks through ExtendsOnActivity.
	ExtendOnActivity bool
	// FilesInTmp lets the file API reach the sandbox's /tmp as well as its workspace
	// (default off; see OpenTmp). Not with a Runtime other than runc.
	FilesInTmp bool
	// Runtime is the engine's OCI runtime the sandbox runs under, e.g. "runsc" for
	// gVisor's own kernel between the sandbox and the host; empty: the engine's default
	// (runc). It must be one the engine knows (CheckRuntimes).
	Runtime string

	uid, gid int
}

// Config configures a Runtime. Instance and VolumeRoot are required.
type Config struct {
	// Host is the engine's address (e.g. unix:///var/run/docker.sock); empty means the
	// environment's DOCKER_HOST or the platform default.
	Host string
	// Instance names this sandboxd in the labels of its containers, so that two services
	// sharing an engine never reconcile each other's sandboxes.
	Instance string
	// VolumeRoot is the folder every workspace must lie in.
	VolumeRoot string
	// Profiles by agent id. DefaultProfile serves an empty agent id, and unknown agent
	// ids unless RefuseUnknownAgents is set.
	Profiles            map[string]Profile
	DefaultProfile      Profile
	RefuseUnknownAgents bool
	// StopTimeout is how long Stop lets a sandbox end gracefully before it is killed
	// (default 3 seconds; rounded up to whole seconds).
	StopTimeout time.Duration
	// PoolCheckInterval is how often the warm pool checks its containers (default
	// DefaultPoolCheckInterval).
	PoolCheckInterval time.Duration
	// MeterProvider receives the pool's metrics; Logger its warnings. Both optional.
	MeterProvider metric.MeterProvider
	Logger        *slog.Logger
}

// Runtime runs sandboxes on a Docker engine. It is safe for concurrent use.
type Runtime struct {
	cli           *client.Client
	instance      string
	root          *workspace.Root
	profiles      map[string]Profile
	defaultProf   Profile
	refuseUnknown bool
	stopTimeout   int // seconds

	pool        *pool                    // the warm pool (pool.go)
	beforeStart func(containerID string) // test hook: runs between create and start
}

var (
	_ lifecycle.Runtime   = (*Runtime)(nil)
	_ lifecycle.Admitter  = (*Runtime)(nil)
	_ lifecycle.Inventory = (*Runtime)(nil)
)

// New checks cfg, fills the profiles' defaults and returns a Runtime. It does not contact
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
	def, err := cfg.DefaultProfile.withDefaults()
	if err != nil {
		problems = append(problems, fmt.Errorf("default profile: %w", err))
	}
	profiles := make(map[string]Profile, len(cfg.Profiles))
	for _, agent := range slices.Sorted(maps.Keys(cfg.Profiles)) {
		p, err := cfg.Profiles[agent].withDefaults()
		if err != nil {
			problems = append(problems, fmt.Errorf("profile %q: %w", agent, err))
		}
		profiles[agent] = p
	}
	if len(problems) == 0 {
		groups, _ := os.Getgroups()
		if err := canHandOver(os.Geteuid(), append(groups, os.Getegid()), def, profiles); err != nil {
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
		stop = 3 * time.Second
	}
	r := &Runtime{
		cli:           cli,
		instance:      cfg.Instance,
		root:          root,
		profiles:      profiles,
		defaultProf:   def,
		refuseUnknown: cfg.RefuseUnknownAgents,
		stopTimeout:   int((stop + time.Second - 1) / time.Second),
	}
	mp, log := cfg.MeterProvider, cfg.Logger
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if r.pool, err = newPool(r, cfg, mp, log); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("docker: %w", err)
	}
	return r, nil
}

// Close releases the client's idle connections.
func (r *Runtime) Close() error { return r.cli.Close() }

// CheckRuntimes checks that the engine knows the OCI runtime of every profile (a profile
// may ask for gVisor's runsc, which an engine has only when its daemon.json lists it), and
// that a profile which asks for a network does not get a runtime the engine runs with
// --network=none (its sandboxes would have none). Errors wrap sandbox.ErrInvalid for such
// a profile, sandbox.ErrUnavailable when the engine cannot be asked.
func (r *Runtime) CheckRuntimes(ctx context.Context) error {
	profiles := map[string]Profile{"default": r.defaultProf}
	for agent, p := range r.profiles {
		profiles[fmt.Sprintf("%q", agent)] = p
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

// canHandOver says whether a process of uid euid can give new workspace folders to every
// profile's sandbox user, as Create must: only root can give a folder away. Refusing at
// start beats a create that fails with "operation not permitted".
// groups are the groups such a process belongs to: it may give a folder to those only.
func canHandOver(euid int, groups []int, def Profile, profiles map[string]Profile) error {
	if euid == 0 {
		return nil
	}
	var errs []error
	check := func(name string, p Profile) {
		uid, gid, err := parseUser(p.User)
		switch {
		case err != nil:
		case uid != euid:
			errs = append(errs, fmt.Errorf("%s runs its sandbox as uid %d, but sandboxd runs as uid %d without root and cannot hand it workspace folders: run sandboxd as root or as uid %d, or set the profile's user to %d:<gid>",
				name, uid, euid, uid, euid))
		case !slices.Contains(groups, gid):
			errs = append(errs, fmt.Errorf("%s runs its sandbox in group %d, which sandboxd (uid %d, without root) is not a member of, so it cannot hand that group workspace folders: run sandboxd as root or pick one of its groups %v",
				name, gid, euid, groups))
		}
	}
	check("the default profile", def)
	for _, agent := range slices.Sorted(maps.Keys(profiles)) {
		check(fmt.Sprintf("profile %q", agent), profiles[agent])
	}
	return errors.Join(errs...)
}

// withDefaults fills p's zero fields and refuses what would weaken the sandbox.
func (p Profile) withDefaults() (Profile, error) {
	if p.Image == "" {
		p.Image = DefaultImage
	}
	if p.MemoryBytes == 0 {
		p.MemoryBytes = 512 << 20
	}
	if p.NanoCPUs == 0 {
		p.NanoCPUs = 1e9
	}
	if p.PidsLimit == 0 {
		p.PidsLimit = 256
	}
	if p.Network == "" {
		p.Network = "none"
	}
	if p.WorkspaceMount == "" {
		p.WorkspaceMount = "/workspace"
	}
	if p.User == "" {
		p.User = "1000:1000"
	}
	if p.TmpfsBytes == 0 {
		p.TmpfsBytes = 64 << 20
	}
	p.Env = maps.Clone(p.Env)

	var problems []error
	pool, err := p.Pool.withDefaults()
	if err != nil {
		problems = append(problems, err)
	}
	p.Pool = pool
	if p.MemoryBytes < 6<<20 || p.NanoCPUs < 0 || p.PidsLimit < 0 || p.TmpfsBytes < 0 {
		problems = append(problems, errors.New("limits must be positive (memory at least 6 MiB)"))
	}
	if p.Network == "host" || strings.HasPrefix(p.Network, "container:") {
		problems = append(problems, fmt.Errorf("network %q shares a namespace", p.Network))
	}
	if !path.IsAbs(p.WorkspaceMount) || path.Clean(p.WorkspaceMount) == "/" {
		problems = append(problems, fmt.Errorf("workspace mount %q must be an absolute path below /", p.WorkspaceMount))
	}
	if strings.ContainsAny(p.Runtime, " \t\n/") {
		problems = append(problems, fmt.Errorf("runtime %q is not a runtime name", p.Runtime))
	}
	if p.FilesInTmp && p.Runtime != "" && p.Runtime != "runc" {
		// OpenTmp reaches /tmp through /proc/<pid>/root; under a runtime with a kernel of
		// its own (gVisor), that is not the sandbox's /tmp.
		problems = append(problems, fmt.Errorf("files_tmp needs the runc runtime, not %q", p.Runtime))
	}
	uid, gid, err := parseUser(p.User)
	if err != nil {
		problems = append(problems, err)
	}
	p.uid, p.gid = uid, gid
	return p, errors.Join(problems...)
}

// parseUser reads a numeric "uid[:gid]" and refuses root and the root group.
func parseUser(s string) (uid, gid int, err error) {
	us, gs, hasGID := strings.Cut(s, ":")
	uid, err = strconv.Atoi(us)
	if err == nil && hasGID {
		gid, err = strconv.Atoi(gs)
	} else {
		gid = uid
	}
	switch {
	case err != nil || uid < 0 || gid < 0:
		return 0, 0, fmt.Errorf("user %q must be a numeric uid:gid", s)
	case uid == 0:
		return 0, 0, fmt.Errorf("user %q is root", s)
	case gid == 0:
		// The root group owns files in images and, through the workspace, on the host.
		return 0, 0, fmt.Errorf("user %q is in the root group", s)
	}
	return uid, gid, nil
}

// profile returns the profile for agentID. Its error wraps sandbox.ErrInvalid.
func (r *Runtime) profile(agentID string) (Profile, error) {
	if agentID == "" {
		return r.defaultProf, nil
	}
	if p, ok := r.profiles[agentID]; ok {
		return p, nil
	}
	if r.refuseUnknown {
		return Profile{}, fmt.Errorf("unknown agent %q: %w", agentID, sandbox.ErrInvalid)
	}
	return r.defaultProf, nil
}

// WorkspaceMount returns where the agent's sandboxes see their workspace folder (the
// default profile's mount for an unknown agent).
func (r *Runtime) WorkspaceMount(agentID string) string {
	return r.profileOrDefault(agentID).WorkspaceMount
}

// OpenWorkspace opens the workspace folder path, which must lie in the volume root, as
// an os.Root without following any link on its way there (see workspace.Root.Open): the
// hostfiles.Config.Open of the sandboxes this runtime makes. Errors wrap
// sandbox.ErrInvalid, sandbox.ErrNotFound or sandbox.ErrUnavailable.
func (r *Runtime) OpenWorkspace(path string) (*os.Root, error) {
	return r.root.Open(path)
}

// OpenTmp opens the /tmp of the sandbox of s, as the sandbox itself sees it, for the file
// API (hostfiles.Config.OpenTmp): through /proc/<pid>/root of the container's first
// process, so sandboxd must run on the engine's host, as root. Refused (sandbox.ErrInvalid)
// unless the agent's profile sets FilesInTmp; sandbox.ErrNotFound when the sandbox does
// not run. Within the returned Root no link leads out of /tmp, into the rest of the
// sandbox or the host.
func (r *Runtime) OpenTmp(ctx context.Context, s sandbox.Session) (*os.Root, error) {
	if !r.profileOrDefault(s.AgentID).FilesInTmp {
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

// SandboxUser returns the uid and gid the agent's sandboxes run as, which should own the
// files written into their workspaces.
func (r *Runtime) SandboxUser(agentID string) (uid, gid int) {
	p := r.profileOrDefault(agentID)
	return p.uid, p.gid
}

// ExtendsOnActivity reports whether exec and file calls extend the TTL of the agent's
// sandboxes.
func (r *Runtime) ExtendsOnActivity(agentID string) bool {
	return r.profileOrDefault(agentID).ExtendOnActivity
}

// profileOrDefault is the agent's profile, or the default one when it has none: only
// Admit and Create refuse unknown agents, and a sandbox that exists was admitted.
func (r *Runtime) profileOrDefault(agentID string) Profile {
	if p, ok := r.profiles[agentID]; ok {
		return p
	}
	return r.defaultProf
}

// engineError wraps an engine error with op, translating it into the domain's sentinels:
// NotFound into sandbox.ErrNotFound, an unreachable or overloaded engine into
// sandbox.ErrUnavailable.
func engineError(op string, err error) error {
	switch {
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("docker: %s: %w: %w", op, sandbox.ErrNotFound, err)
	case client.IsErrConnectionFailed(err), cerrdefs.IsUnavailable(err),
		cerrdefs.IsDeadlineExceeded(err), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("docker: %s: %w: %w", op, sandbox.ErrUnavailable, err)
	}
	return fmt.Errorf("docker: %s: %w", op, err)
}
