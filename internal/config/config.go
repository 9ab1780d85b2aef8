// Package config provides sandboxd's configuration: the keys and their defaults (this
// file; a key is spelled once, by the koanf tags along its field's path), which of them the
// environment and flags set (keys.go), loading them from a YAML file, the environment
// (SANDBOXD_...) and command-line flags, in that order of precedence (load.go), and
// checking the result (validate.go).
package config

import (
	"net/netip"
	"time"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/webui"
)

// EnvPrefix starts the name of every environment variable sandboxd reads.
const EnvPrefix = "SANDBOXD_"

// Config is sandboxd's configuration. Its koanf tags are the YAML keys.
type Config struct {
	// Listen is the HTTP API's address (host:port).
	Listen string `koanf:"listen"`
	// TTL is how long a sandbox lives after it is created.
	TTL time.Duration `koanf:"ttl"`
	// Tokens are the bearer tokens the API accepts for the default tenant, each plain or
	// "sha256:<hex>". None (and no Tenants): the API is open, which is refused unless
	// Listen is a loopback address.
	Tokens []string `koanf:"tokens"`
	// Tenants are the tenants besides the default one, by name (YAML only): each reaches
	// only the chats its callers created (see tenant.go).
	Tenants map[string]Tenant `koanf:"tenants"`
	// MaxBodyBytes caps a request body.
	MaxBodyBytes int64 `koanf:"max_body_bytes"`
	// ShutdownTimeout bounds the graceful shutdown (in-flight requests, telemetry flush).
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`

	// MaxLifetime caps how far keepalive may push a sandbox's expiry past its creation.
	MaxLifetime time.Duration `koanf:"max_lifetime"`

	Server    Server    `koanf:"server"`
	Limits    Limits    `koanf:"limits"`
	Sweep     Sweep     `koanf:"sweep"`
	Reconcile Reconcile `koanf:"reconcile"`
	Exec      Exec      `koanf:"exec"`
	Files     Files     `koanf:"files"`
	Workspace Workspace `koanf:"workspace"`

	// Registry names the session registry: "sqlite:<path>" or "postgres://...".
	Registry string `koanf:"registry"`
	// Adopt takes over, at start-up, what another registry recorded: it ties the registry
	// to this service's runtime (Docker engine and instance) whatever runtime it recorded
	// before, and rebuilds the records of this instance's sandboxes that another registry
	// (or none) recorded from their labels. Without it, sandboxd refuses to start on
	// either. Meant for one start.
	Adopt bool `koanf:"adopt"`
	// LockLinger is how long a PostgreSQL replica keeps a chat's lock after the chat's
	// last use case, so that the next needs no round trip to the database (package
	// pglock's leases); 0 turns it off. SQLite ignores it.
	LockLinger time.Duration `koanf:"lock_linger"`
	// RegistryTimeout bounds each call to the registry (lifecycle.Config.RegistryTimeout).
	RegistryTimeout time.Duration `koanf:"registry_timeout"`

	// Runtime is what runs the sandboxes: RuntimeDocker (one Docker engine, the default)
	// or RuntimeKubernetes (Pods of one namespace of a cluster).
	Runtime    string     `koanf:"runtime"`
	Docker     Docker     `koanf:"docker"`
	Kubernetes Kubernetes `koanf:"kubernetes"`
	Egress     Egress     `koanf:"egress"`
	// Agents are the agent profiles as configured; Profiles is what Load resolves them
	// to (package profile), the one form the rest of sandboxd uses.
	Agents   profile.Agents `koanf:"agents"`
	Profiles *profile.Set   `koanf:"-"`

	OTLP OTLP `koanf:"otlp"`
	Log  Log  `koanf:"log"`
	UI   UI   `koanf:"ui"`
}

// UI configures the operator's page (/ui/).
type UI struct {
	// XtermDir is searched for a browser build of xterm.js (and xterm.css), which the
	// page's terminal then uses; "-": never. Without one the page has a plain terminal.
	XtermDir string `koanf:"xterm_dir"`
}

// Server bounds the HTTP server.
type Server struct {
	// MaxConnections caps the connections the listener holds at once (idle keep-alive
	// ones included); more wait in the kernel's backlog until one closes. 0: no cap.
	MaxConnections int `koanf:"max_connections"`
}

// Limits bounds the service as a whole, whatever tenant asks.
type Limits struct {
	// MaxSandboxes caps the sessions the registry holds (expired ones until the sweep
	// stops them); a create for a chat without one, at the cap, is refused with 429 and
	// Retry-After. 0: no cap.
	MaxSandboxes int `koanf:"max_sandboxes"`
}

// Workspace configures the life cycle of workspace folders.
type Workspace struct {
	// Retention is how long a folder no session uses is kept after its last use; the
	// sweep removes it then. 0: never.
	Retention time.Duration `koanf:"retention"`
	// RetentionProvided lets Retention remove the folders callers provided
	// (volume_host_path) too, not only those sandboxd made for a chat.
	RetentionProvided bool `koanf:"retention_provided"`
}

// Sweep configures the expiry sweep.
type Sweep struct {
	Interval    time.Duration `koanf:"interval"`
	Parallelism int           `koanf:"parallelism"` // chats cleaned at once
}

// Exec bounds the commands agents run in their sandboxes.
type Exec struct {
	DefaultTimeout time.Duration `koanf:"default_timeout"` // when the request gives none
	MaxTimeout     time.Duration `koanf:"max_timeout"`     // larger requests are refused
	OutputCap      int64         `koanf:"output_cap"`      // bytes of output one command returns
	MaxConcurrent  int           `koanf:"max_concurrent"`  // commands one sandbox runs at once
	// MaxBufferedBytes bounds the memory all buffered (non-streaming) exec answers hold
	// at once; each reserves httpapi.BufferedExecCost(OutputCap), one more is 429.
	MaxBufferedBytes int64 `koanf:"max_buffered_bytes"`
}

// Files bounds the workspace file API.
type Files struct {
	MaxBytes int64 `koanf:"max_bytes"` // largest uploaded file (413 above)
	// MinUploadRate is the slowest average, in bytes a second, an upload may arrive at
	// after its first 10 s; a slower one is cut off with 408. 0: no minimum.
	MinUploadRate int64 `koanf:"min_upload_rate"`
}

// Reconcile configures the reconciler (run at start-up, then every Interval).
type Reconcile struct {
	Interval time.Duration `koanf:"interval"`
	// Grace is how old an unrecorded container must be before it is removed.
	Grace time.Duration `koanf:"grace"`
	// Force lets a reconciliation remove more than 10 sandboxes and more than half of the
	// instance's at once, which it otherwise refuses (lifecycle.MassRemovalMin).
	Force bool `koanf:"force"`
}

// Docker configures the container runtime.
type Docker struct {
	// Host is the engine's address (e.g. unix:///var/run/docker.sock); empty: DOCKER_HOST
	// or the default socket.
	Host string `koanf:"host"`
	// Instance labels the containers this sandboxd makes; two services sharing an engine
	// need different instances.
	Instance string `koanf:"instance"`
	// VolumeRoot is the host folder under which workspaces live; made absolute by Load.
	VolumeRoot string `koanf:"volume_root"`
	// StopTimeout is how long a stop lets a sandbox end gracefully before killing it;
	// 0: no grace, a stop removes the sandbox at once.
	StopTimeout time.Duration `koanf:"stop_timeout"`
	// CallTimeout and CreateTimeout bound each call to the engine (docker.Config's).
	CallTimeout   time.Duration `koanf:"call_timeout"`
	CreateTimeout time.Duration `koanf:"create_timeout"`
	// MinFreeBytes is the free space the volume root's file system keeps: below it,
	// creates of new sandboxes are refused with 507 before anything is made (a reuse of
	// the live one is not). 0: no floor.
	MinFreeBytes int64 `koanf:"min_free_bytes"`
	// Agent is the in-sandbox agent's binary (cmd/sandboxd-agent) on the engine's host,
	// which every new sandbox runs and commands go through. Empty: sandboxd-agent beside
	// sandboxd's own executable, if there is one; "none": no agent (the engine's exec).
	// With a PostgreSQL registry each replica reaches it through an agent of its own
	// per sandbox, started through the engine's exec.
	Agent string `koanf:"agent"`
}

// The runtimes a configuration can choose.
const (
	RuntimeDocker     = "docker"
	RuntimeKubernetes = "kubernetes"
)

// Kubernetes configures the Kubernetes runtime (runtime: kubernetes).
type Kubernetes struct {
	// Kubeconfig is the kubeconfig file; empty: the in-cluster service account when
	// sandboxd runs in a Pod, else $KUBECONFIG or ~/.kube/config.
	Kubeconfig string `koanf:"kubeconfig"`
	// Namespace holds the sandboxes' Pods and workspace claims.
	Namespace string `koanf:"namespace"`
	// Instance labels the Pods this sandboxd makes; two services sharing a namespace
	// need different instances.
	Instance string `koanf:"instance"`
	// StorageClass is the class of the workspace claims; empty: the cluster's default.
	StorageClass string `koanf:"storage_class"`
	// WorkspaceBytes is the size each chat's workspace claim asks for.
	WorkspaceBytes int64 `koanf:"workspace_bytes"`
	// StopTimeout is the Pods' grace period at a stop (rounded up to whole seconds).
	StopTimeout time.Duration `koanf:"stop_timeout"`
}

// Egress configures the proxy through which the sandboxes of profiles with network
// "egress" reach what their rules allow.
type Egress struct {
	// ProxyPort is the port the proxy listens on, on the gateway address of the instance's
	// egress network (the sandboxes' HTTP_PROXY).
	ProxyPort int `koanf:"proxy_port"`
	// Hosts gives names fixed addresses, which the proxy uses instead of DNS (YAML only).
	Hosts map[string][]string `koanf:"hosts"`
	// Resolved is Hosts, checked (by Load).
	Resolved map[string][]netip.Addr `koanf:"-"`
}

// OTLP configures trace export.
type OTLP struct {
	// Endpoint is an OTLP/HTTP URL (e.g. http://localhost:4318); empty: no export.
	Endpoint string `koanf:"endpoint"`
}

// Log configures the logger.
type Log struct {
	Level  string `koanf:"level"`  // debug, info, warn, error
	Format string `koanf:"format"` // json or text
}

// DefaultMaxConnections is the default of server.max_connections: room for many clients,
// and far below the file descriptors a process may open.
const DefaultMaxConnections = 1024

// Default returns the configuration with every default set: a loopback API on SQLite. The
// defaults of settings a package takes are that package's (lifecycle.Default...,
// httpapi.DefaultMaxBodyBytes); those of sandboxd alone are written here (docker's stop
// grace among them: none, see docker.Config.NoStopGrace). Every bound of the service is
// on by default; workspace retention is off.
func Default() Config {
	return Config{
		Listen:          "127.0.0.1:8080",
		Server:          Server{MaxConnections: DefaultMaxConnections},
		Limits:          Limits{MaxSandboxes: lifecycle.DefaultMaxSandboxes},
		TTL:             time.Hour,
		MaxBodyBytes:    httpapi.DefaultMaxBodyBytes,
		UI:              UI{XtermDir: webui.DefaultXtermDir},
		ShutdownTimeout: 30 * time.Second,
		MaxLifetime:     lifecycle.DefaultMaxLifetime,
		Exec: Exec{
			DefaultTimeout: lifecycle.DefaultExecTimeout,
			MaxTimeout:     lifecycle.DefaultExecMaxTimeout,
			OutputCap:      lifecycle.DefaultExecOutputCap,
			MaxConcurrent:  lifecycle.DefaultExecMaxConcurrent,
			// Enough for 146 buffered answers at the default output cap.
			MaxBufferedBytes: httpapi.DefaultMaxBufferedExecBytes,
		},
		Files:           Files{MaxBytes: lifecycle.DefaultMaxFileBytes, MinUploadRate: httpapi.DefaultMinUploadRate},
		Sweep:           Sweep{Interval: 30 * time.Second, Parallelism: lifecycle.DefaultSweepParallelism},
		Reconcile:       Reconcile{Interval: 5 * time.Minute, Grace: lifecycle.DefaultReconcileGrace},
		Registry:        "sqlite:./.data/sandboxd.db",
		LockLinger:      2 * time.Second,
		RegistryTimeout: lifecycle.DefaultRegistryTimeout,
		Docker: Docker{Instance: "sandboxd", VolumeRoot: "./.data/volumes", StopTimeout: 0,
			CallTimeout: docker.DefaultCallTimeout, CreateTimeout: docker.DefaultCreateTimeout,
			MinFreeBytes: docker.DefaultMinFreeBytes},
		Runtime: RuntimeDocker,
		Kubernetes: Kubernetes{Namespace: "sandboxd", Instance: "sandboxd",
			WorkspaceBytes: kube.DefaultWorkspaceBytes, StopTimeout: kube.DefaultStopTimeout},
		Egress: Egress{ProxyPort: docker.DefaultEgressProxyPort},
		Log:    Log{Level: "info", Format: "json"},
	}
}
