// Package profile provides agent profiles: how the sandbox of each agent is made (image,
// limits, network, user, workspace, warm pool), chosen by configuration, never by the
// client. It owns a profile's fields as configured (Spec, the YAML keys under
// agents.default and agents.profiles.<id>), their defaults, the merging of a listed
// profile from the default one, their validation, and the lookup of an agent's profile
// (Set).
//
// A runtime only translates a resolved Profile into its own objects (internal/docker: a
// container's config and host config). A new profile setting is a field of Spec and of
// Profile, its default and check in resolve, and its translation in each runtime.
//
// Capabilities, privileges, namespaces and the root file system are not part of a
// profile: every sandbox gets the hardened ones, whatever its profile says.
package profile

import "github.com/sandboxd/sandboxd/internal/egress"

// Defaults of a profile field that neither the agent's profile nor the default profile
// sets: the hardened ones.
const (
	DefaultImage       = "sandboxd-sandbox:latest" // what scripts/build-image.sh builds
	DefaultMemoryBytes = 512 << 20
	DefaultNanoCPUs    = 1e9 // 1 CPU
	DefaultPIDs        = 256
	DefaultNetwork     = "none"
	DefaultWorkspace   = "/workspace"
	DefaultUser        = "1000:1000"
	DefaultTmpfsBytes  = 64 << 20
	// A sandbox's output to its init's stdout and stderr goes to the engine's log: by
	// default json-file, at most 2 files of 1 MiB.
	DefaultLogDriver   = LogJSONFile
	DefaultLogMaxBytes = 1 << 20
	DefaultLogMaxFiles = 2
)

// The log drivers a profile may name: those that keep the log on the engine's host
// bounded by size (json-file, local) or keep nothing (none).
const (
	LogJSONFile = "json-file"
	LogLocal    = "local"
	LogNone     = "none"
)

// Bounds of a profile's log: a typo must not let one sandbox fill the host's disk.
const (
	MaxLogBytes = 1 << 30
	MaxLogFiles = 100
)

// MaxPool bounds a pool's size: a typo must not start thousands of containers.
const MaxPool = 1000

// minMemoryBytes is the least memory a sandbox may get (the engine's own floor).
const minMemoryBytes = 6 << 20

// Agents is the agents section of the configuration: the profile each agent id gets.
// Its koanf tags are the YAML keys.
type Agents struct {
	// Default is the profile of an empty or unlisted agent id, and the base every listed
	// profile fills its unset fields from.
	Default Spec `koanf:"default"`
	// Profiles are the known agents.
	Profiles map[string]Spec `koanf:"profiles"`
	// RefuseUnknown refuses a create for an agent id that is not in Profiles.
	RefuseUnknown bool `koanf:"refuse_unknown"`
}

// Spec is one profile as configured. An unset field of a listed profile takes the
// default profile's value (Over), and one unset there the Default... constant (New).
type Spec struct {
	Image string `koanf:"image"`
	// Memory is a size such as "512m" or "1g" (binary units); swap is held equal to it.
	Memory string  `koanf:"memory"`
	CPUs   float64 `koanf:"cpus"`
	PIDs   int64   `koanf:"pids"`
	// Network is "none" (no network, the default), "egress" (HTTP and HTTPS through
	// sandboxd's egress proxy, to what Egress allows), or another Docker network mode
	// ("bridge", ...); never "host" or "container:..." (they share a namespace).
	Network string `koanf:"network"`
	// Egress lists what a sandbox of network "egress" may reach (unset lists: the
	// default profile's).
	Egress Egress `koanf:"egress"`
	// Env is set in the sandbox's environment; a listed profile's is merged over the
	// default profile's.
	Env map[string]string `koanf:"env"`
	// Workspace is where the chat's host folder is mounted in the sandbox.
	Workspace string `koanf:"workspace"`
	// User runs the sandbox's process: a numeric "uid[:gid]", never root or its group.
	User string `koanf:"user"`
	// Tmpfs is the size of the tmpfs on /tmp, such as "64m".
	Tmpfs string `koanf:"tmpfs"`
	// ExtendOnActivity makes exec and file calls extend the sandbox's TTL, as a
	// keepalive of the TTL would (unset: the default profile's; off there: never).
	ExtendOnActivity *bool `koanf:"extend_on_activity"`
	// FilesTmp lets the file API reach the sandbox's /tmp besides its workspace (unset:
	// the default profile's; off there: never). Only with the runc runtime.
	FilesTmp *bool `koanf:"files_tmp"`
	// Runtime is the engine's OCI runtime for the sandbox, e.g. "runsc" (gVisor);
	// empty: the engine's default. The engine must know it (checked at start-up).
	Runtime string `koanf:"runtime"`
	// WorkspaceMaxBytes bounds the workspace folder sandboxd makes for a chat, such as
	// "1g": the folder is a file system image of that size (see internal/wsimage), so a
	// write past it fails with ENOSPC. Empty: the default profile's; "none" (or "0"): no
	// bound, even when the default profile has one. Not with a pool.
	WorkspaceMaxBytes string `koanf:"workspace_max_bytes"`
	// WorkspaceMaxFiles bounds the files and folders of such a workspace (its image's
	// inode count, which mkfs rounds to its inode tables); 0: mkfs's default for the size.
	// Only with WorkspaceMaxBytes.
	WorkspaceMaxFiles int64 `koanf:"workspace_max_files"`
	// Log bounds what the engine keeps of the sandbox's init's output (what it writes to
	// /proc/1/fd/1 and 2): each field unset takes the default profile's, then the
	// Default... one.
	Log Log `koanf:"log"`
	// Pool is the profile's warm pool of pre-started sandboxes. Unlike the other fields
	// it is not taken from the default profile: every pool is sized on its own.
	Pool Pool `koanf:"pool"`
}

// NetworkEgress is the network of profiles whose sandboxes reach what their egress rules
// allow, through sandboxd's proxy, and nothing else.
const NetworkEgress = "egress"

// Egress is a profile's egress rules as configured (see egress.ParseRule for their forms:
// host names, *.suffix wildcards, address prefixes, each with an optional port).
type Egress struct {
	// Allow names the destinations the sandbox may reach; internal addresses only when an
	// address prefix here names them.
	Allow []string `koanf:"allow"`
	// Deny names destinations refused even when Allow names them (checked first).
	Deny []string `koanf:"deny"`
}

// Log is the engine's log of a sandbox: driver json-file or local, rotated at MaxSize
// (a size such as "1m") and keeping MaxFile files, or none.
type Log struct {
	Driver  string `koanf:"driver"`
	MaxSize string `koanf:"max_size"`
	MaxFile int    `koanf:"max_file"`
}

// Pool sizes a profile's warm pool. Min 0 (the default): no pool.
type Pool struct {
	// Min is how many ready sandboxes the pool keeps.
	Min int `koanf:"min"`
	// Max bounds the ready sandboxes when demand outruns the pool: each interval in
	// which a create found the pool empty raises the pool's target by one, up to Max;
	// each quiet interval lowers it again, down to Min. Unset (0): Min.
	Max int `koanf:"max"`
}

// Profile is a resolved profile: every field set (defaults filled) and checked. What a
// runtime translates into its own objects.
type Profile struct {
	Image       string
	MemoryBytes int64 // memory limit; swap is held equal to it
	NanoCPUs    int64 // CPU limit in 1e-9 CPUs
	PIDs        int64 // process limit
	Network     string
	// Egress is the profile's parsed egress rules when Network is NetworkEgress, else nil.
	Egress    *egress.Policy
	Env       map[string]string // shared: do not modify
	Workspace string            // where the workspace folder appears in the sandbox
	// User is the user as configured ("uid" or "uid:gid"), what the sandbox runs as;
	// UID and GID are its numbers (GID is UID when User names none): who owns the
	// files written into the sandbox's workspace.
	User             string
	UID, GID         int
	TmpfsBytes       int64 // size of the tmpfs on /tmp
	ExtendOnActivity bool
	FilesTmp         bool
	Runtime          string // the engine's OCI runtime; empty: the engine's default
	Pool             Pool   // Max filled (>= Min)
	// WorkspaceMaxBytes and WorkspaceMaxFiles bound the workspace folder made for a
	// chat (0: no bound): its file system image's size and inode count.
	WorkspaceMaxBytes int64
	WorkspaceMaxFiles int64
	// LogDriver is the engine's log driver (LogJSONFile, LogLocal or LogNone); the log
	// is rotated at LogMaxBytes and keeps LogMaxFiles files (both 0 with LogNone).
	LogDriver   string
	LogMaxBytes int64
	LogMaxFiles int
}

// MinWorkspaceBytes is the smallest workspace_max_bytes: below it an ext4 image's own
// metadata leaves next to nothing for files (internal/wsimage's MinBytes).
const MinWorkspaceBytes = 8 << 20

// Over returns p with its unset fields filled from base: the merging of a listed profile
// from the default one. Env is merged, p's keys winning; Pool is p's own.
func (p Spec) Over(base Spec) Spec {
	fill(&p.Image, base.Image)
	fill(&p.Memory, base.Memory)
	fill(&p.CPUs, base.CPUs)
	fill(&p.PIDs, base.PIDs)
	fill(&p.Network, base.Network)
	fill(&p.Workspace, base.Workspace)
	fill(&p.User, base.User)
	fill(&p.Tmpfs, base.Tmpfs)
	fill(&p.ExtendOnActivity, base.ExtendOnActivity)
	fill(&p.FilesTmp, base.FilesTmp)
	fill(&p.Runtime, base.Runtime)
	if p.Network == NetworkEgress && base.Network == NetworkEgress { // rules only from an egress profile
		fill2(&p.Egress.Allow, base.Egress.Allow)
		fill2(&p.Egress.Deny, base.Egress.Deny)
	}
	fill(&p.WorkspaceMaxBytes, base.WorkspaceMaxBytes)
	fill(&p.WorkspaceMaxFiles, base.WorkspaceMaxFiles)
	fill(&p.Log.Driver, base.Log.Driver)
	if p.Log.Driver != LogNone { // a profile that keeps no log takes no sizes
		fill(&p.Log.MaxSize, base.Log.MaxSize)
		fill(&p.Log.MaxFile, base.Log.MaxFile)
	}
	p.Env = mergeMaps(base.Env, p.Env)
	return p
}

// fill sets *v to def when *v is its type's zero value.
func fill[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// fill2 sets *v to def when *v is nil (unset; an empty list is set).
func fill2(v *[]string, def []string) {
	if *v == nil {
		*v = def
	}
}

func mergeMaps(base, over map[string]string) map[string]string {
	if len(base) == 0 && len(over) == 0 {
		return nil
	}
	out := make(map[string]string, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}
