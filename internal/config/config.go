// Package config provides sandboxd's configuration: the keys, their defaults, loading them
// from a YAML file, the environment (SANDBOXD_...) and command-line flags, in that order of
// precedence, and checking the result.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
)

// EnvPrefix starts the name of every environment variable sandboxd reads.
const EnvPrefix = "SANDBOXD_"

// Config is sandboxd's configuration. Its koanf tags are the YAML keys.
type Config struct {
	// Listen is the HTTP API's address (host:port).
	Listen string `koanf:"listen"`
	// TTL is how long a sandbox lives after it is created.
	TTL time.Duration `koanf:"ttl"`
	// Tokens are the bearer tokens the API accepts. None: the API is open, which is
	// refused unless Listen is a loopback address.
	Tokens []string `koanf:"tokens"`
	// MaxBodyBytes caps a request body.
	MaxBodyBytes int64 `koanf:"max_body_bytes"`
	// ShutdownTimeout bounds the graceful shutdown (in-flight requests, telemetry flush).
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`

	// MaxLifetime caps how far keepalive may push a sandbox's expiry past its creation.
	MaxLifetime time.Duration `koanf:"max_lifetime"`

	Sweep     Sweep     `koanf:"sweep"`
	Reconcile Reconcile `koanf:"reconcile"`
	Exec      Exec      `koanf:"exec"`
	Files     Files     `koanf:"files"`

	// Registry names the session registry: "sqlite:<path>" or "postgres://...".
	Registry string `koanf:"registry"`
	// RebindRuntime ties the registry to this service's runtime (Docker engine and
	// instance) whatever runtime it recorded before: for an operator who moved sandboxd to
	// another engine for good. Without it, sandboxd refuses a registry of another runtime.
	RebindRuntime bool `koanf:"rebind_runtime"`
	// LockLinger is how long a PostgreSQL replica keeps a chat's lock after the chat's
	// last use case, so that the next needs no round trip to the database (package
	// pglock's leases); 0 turns it off. SQLite ignores it.
	LockLinger time.Duration `koanf:"lock_linger"`

	Docker Docker `koanf:"docker"`
	// Agents are the agent profiles as configured; Profiles is what Load resolves them
	// to (package profile), the one form the rest of sandboxd uses.
	Agents   profile.Agents `koanf:"agents"`
	Profiles *profile.Set   `koanf:"-"`

	OTLP OTLP `koanf:"otlp"`
	Log  Log  `koanf:"log"`
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
}

// Files bounds the workspace file API.
type Files struct {
	MaxBytes int64 `koanf:"max_bytes"` // largest uploaded file (413 above)
}

// Reconcile configures the reconciler (run at start-up, then every Interval).
type Reconcile struct {
	Interval time.Duration `koanf:"interval"`
	// Grace is how old an unrecorded container must be before it is removed.
	Grace time.Duration `koanf:"grace"`
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
	// StopTimeout is how long a stop lets a sandbox end gracefully before killing it.
	StopTimeout time.Duration `koanf:"stop_timeout"`
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

// Default returns the configuration with every default set: a loopback API on SQLite. The
// defaults of settings a package takes are that package's (lifecycle.Default...,
// docker.DefaultStopTimeout, httpapi.DefaultMaxBodyBytes); those of sandboxd alone are
// written here.
func Default() Config {
	return Config{
		Listen:          "127.0.0.1:8080",
		TTL:             time.Hour,
		MaxBodyBytes:    httpapi.DefaultMaxBodyBytes,
		ShutdownTimeout: 30 * time.Second,
		MaxLifetime:     lifecycle.DefaultMaxLifetime,
		Exec: Exec{
			DefaultTimeout: lifecycle.DefaultExecTimeout,
			MaxTimeout:     lifecycle.DefaultExecMaxTimeout,
			OutputCap:      lifecycle.DefaultExecOutputCap,
			MaxConcurrent:  lifecycle.DefaultExecMaxConcurrent,
		},
		Files:      Files{MaxBytes: lifecycle.DefaultMaxFileBytes},
		Sweep:      Sweep{Interval: 30 * time.Second, Parallelism: lifecycle.DefaultSweepParallelism},
		Reconcile:  Reconcile{Interval: 5 * time.Minute, Grace: lifecycle.DefaultReconcileGrace},
		Registry:   "sqlite:./.data/sandboxd.db",
		LockLinger: 2 * time.Second,
		Docker:     Docker{Instance: "sandboxd", VolumeRoot: "./.data/volumes", StopTimeout: docker.DefaultStopTimeout},
		Log:        Log{Level: "info", Format: "json"},
	}
}

// option is one scalar key, settable from the environment and a flag.
type option struct {
	key   string // koanf path, with delim between sections
	usage string
	flag  func(fs *pflag.FlagSet, name string, d Config, usage string)
}

// delim separates the sections of a koanf path. Not ".": agent ids (map keys) may hold dots.
const delim = "::"

func options() []option {
	str := func(get func(Config) string) func(*pflag.FlagSet, string, Config, string) {
		return func(fs *pflag.FlagSet, n string, d Config, u string) { fs.String(n, get(d), u) }
	}
	dur := func(get func(Config) time.Duration) func(*pflag.FlagSet, string, Config, string) {
		return func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Duration(n, get(d), u) }
	}
	return []option{
		{"listen", "HTTP API address (host:port)", str(func(c Config) string { return c.Listen })},
		{"ttl", "sandbox lifetime", dur(func(c Config) time.Duration { return c.TTL })},
		{"tokens", "bearer tokens the API accepts (comma-separated)",
			func(fs *pflag.FlagSet, n string, _ Config, u string) { fs.StringSlice(n, nil, u) }},
		{"max_body_bytes", "largest request body in bytes",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int64(n, d.MaxBodyBytes, u) }},
		{"shutdown_timeout", "bound of the graceful shutdown", dur(func(c Config) time.Duration { return c.ShutdownTimeout })},
		{"max_lifetime", "cap of keepalive: latest expiry after creation", dur(func(c Config) time.Duration { return c.MaxLifetime })},
		{"exec::default_timeout", "timeout of a command that names none", dur(func(c Config) time.Duration { return c.Exec.DefaultTimeout })},
		{"exec::max_timeout", "largest timeout a command may ask for", dur(func(c Config) time.Duration { return c.Exec.MaxTimeout })},
		{"exec::output_cap", "bytes of output one command returns (the rest is cut and flagged)",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int64(n, d.Exec.OutputCap, u) }},
		{"exec::max_concurrent", "commands one sandbox runs at once (one more is refused with 429)",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int(n, d.Exec.MaxConcurrent, u) }},
		{"files::max_bytes", "largest uploaded file in bytes",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int64(n, d.Files.MaxBytes, u) }},
		{"sweep::interval", "time between expiry sweeps", dur(func(c Config) time.Duration { return c.Sweep.Interval })},
		{"sweep::parallelism", "chats one sweep cleans at once",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int(n, d.Sweep.Parallelism, u) }},
		{"reconcile::interval", "time between reconciliations", dur(func(c Config) time.Duration { return c.Reconcile.Interval })},
		{"reconcile::grace", "age before an unrecorded container is removed", dur(func(c Config) time.Duration { return c.Reconcile.Grace })},
		{"registry", "session registry: sqlite:<path> or postgres://...", str(func(c Config) string { return c.Registry })},
		{"rebind_runtime", "take over a registry that records another Docker engine's or instance's sandboxes (its records are then reconciled against this one)",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Bool(n, d.RebindRuntime, u) }},
		{"lock_linger", "PostgreSQL: how long a replica keeps a chat's lock after its last use (0: off)", dur(func(c Config) time.Duration { return c.LockLinger })},
		{"docker::host", "Docker engine address (empty: DOCKER_HOST or the default socket)", str(func(c Config) string { return c.Docker.Host })},
		{"docker::instance", "instance id labelling this service's containers", str(func(c Config) string { return c.Docker.Instance })},
		{"docker::volume_root", "host folder holding the workspaces", str(func(c Config) string { return c.Docker.VolumeRoot })},
		{"docker::stop_timeout", "how long a stop lets a sandbox end before killing it", dur(func(c Config) time.Duration { return c.Docker.StopTimeout })},
		{"agents::default::image", "image of the default agent profile (empty: " + profile.DefaultImage + ")", str(func(c Config) string { return c.Agents.Default.Image })},
		{"agents::default::runtime", "OCI runtime of the default profile's sandboxes, e.g. runsc for gVisor (empty: the engine's default)", str(func(c Config) string { return c.Agents.Default.Runtime })},
		{"agents::default::pool::min", "pre-started sandboxes the default agent profile keeps ready (0: no pool)",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int(n, d.Agents.Default.Pool.Min, u) }},
		{"agents::default::pool::max", "bound of the default profile's pool when creates outrun it (0: its min)",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int(n, d.Agents.Default.Pool.Max, u) }},
		{"agents::refuse_unknown", "refuse agent ids without a profile",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Bool(n, d.Agents.RefuseUnknown, u) }},
		{"otlp::endpoint", "OTLP/HTTP endpoint for traces (empty: none)", str(func(c Config) string { return c.OTLP.Endpoint })},
		{"log::level", "log level: debug, info, warn, error", str(func(c Config) string { return c.Log.Level })},
		{"log::format", "log format: json or text", str(func(c Config) string { return c.Log.Format })},
	}
}

// flagName is the command-line flag of a key: "sweep::interval" is --sweep-interval.
func flagName(key string) string {
	return strings.NewReplacer(delim, "-", "_", "-").Replace(key)
}

// envName is the environment variable of a key: "sweep::interval" is SANDBOXD_SWEEP_INTERVAL.
func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, delim, "_"))
}

// Load reads the configuration: defaults, then the YAML file named by --config or
// SANDBOXD_CONFIG (if any), then SANDBOXD_... variables of environ, then the flags in args
// (without the program name). It returns the checked configuration, or an error that
// says which keys are wrong. Asked for help (-h), it writes the usage to usage and
// returns pflag.ErrHelp.
func Load(args, environ []string, usage io.Writer) (Config, error) {
	opts := options()
	d := Default()
	fs := pflag.NewFlagSet("sandboxd", pflag.ContinueOnError)
	fs.SetOutput(usage)
	configPath := fs.StringP("config", "c", "", "YAML configuration file (env "+EnvPrefix+"CONFIG)")
	flagKeys := make(map[string]string, len(opts))
	for _, o := range opts {
		name := flagName(o.key)
		flagKeys[name] = o.key
		o.flag(fs, name, d, o.usage+" (env "+envName(o.key)+")")
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("config: unexpected arguments %q", fs.Args())
	}

	envKeys := make(map[string]string, len(opts))
	for _, o := range opts {
		envKeys[envName(o.key)] = o.key
	}
	k := koanf.New(delim)

	path := *configPath
	if path == "" {
		path = lookup(environ, EnvPrefix+"CONFIG")
	}
	if path != "" {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			return Config{}, fmt.Errorf("config: read %s: %w", path, err)
		}
	}
	// Unknown SANDBOXD_ variables are left alone: tests and scripts use the prefix too.
	envProvider := env.Provider(delim, env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: func() []string { return envList(environ) },
		TransformFunc: func(k, v string) (string, any) {
			key, ok := envKeys[k]
			if !ok {
				return "", nil
			}
			if key == "tokens" {
				return key, splitList(v)
			}
			return key, v
		},
	})
	if err := k.Load(envProvider, nil); err != nil {
		return Config{}, fmt.Errorf("config: environment: %w", err)
	}
	flagProvider := posflag.ProviderWithFlag(fs, delim, nil, func(f *pflag.Flag) (string, any) {
		key, ok := flagKeys[f.Name]
		if !ok || !f.Changed {
			return "", nil // defaults come from Default(), not from the flags
		}
		return key, posflag.FlagVal(fs, f)
	})
	if err := k.Load(flagProvider, nil); err != nil {
		return Config{}, fmt.Errorf("config: flags: %w", err)
	}

	cfg := d
	cfg.Agents.Profiles = nil
	dc := &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		),
		WeaklyTypedInput: true,
		ErrorUnused:      true, // a misspelt key in the file is an error, not a silent default
	}
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{DecoderConfig: dc}); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if err := cfg.finish(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// finish fills derived values (the resolved profiles, an absolute volume root) and
// validates; every problem is reported, joined.
func (c *Config) finish() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, a...)))
	}

	if loopback, err := isLoopback(c.Listen); err != nil {
		bad("listen", "%v", err)
	} else if !loopback && len(c.Tokens) == 0 {
		bad("listen", "%q is not a loopback address and no tokens are configured: set tokens (%s) or listen on 127.0.0.1", c.Listen, envName("tokens"))
	}
	for i, t := range c.Tokens {
		if strings.TrimSpace(t) == "" || strings.ContainsAny(t, " \t\r\n") {
			bad("tokens", "token %d is empty or holds white space", i+1)
		}
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "must be > 0, got %s", d)
		}
	}
	positive("ttl", c.TTL)
	positive("shutdown_timeout", c.ShutdownTimeout)
	positive("sweep.interval", c.Sweep.Interval)
	positive("max_lifetime", c.MaxLifetime)
	positive("docker.stop_timeout", c.Docker.StopTimeout)
	positive("exec.default_timeout", c.Exec.DefaultTimeout)
	positive("exec.max_timeout", c.Exec.MaxTimeout)
	if c.Exec.DefaultTimeout > c.Exec.MaxTimeout {
		bad("exec.default_timeout", "%s is over exec.max_timeout %s", c.Exec.DefaultTimeout, c.Exec.MaxTimeout)
	}
	if c.MaxLifetime > 0 && c.TTL > c.MaxLifetime {
		bad("ttl", "%s is over max_lifetime %s", c.TTL, c.MaxLifetime)
	}
	if c.Exec.MaxConcurrent < 1 {
		bad("exec.max_concurrent", "must be >= 1, got %d", c.Exec.MaxConcurrent)
	}
	if c.Exec.OutputCap <= 0 {
		bad("exec.output_cap", "must be > 0, got %d", c.Exec.OutputCap)
	}
	if c.Files.MaxBytes <= 0 {
		bad("files.max_bytes", "must be > 0, got %d", c.Files.MaxBytes)
	}
	positive("reconcile.interval", c.Reconcile.Interval)
	positive("reconcile.grace", c.Reconcile.Grace)
	if c.Sweep.Parallelism < 1 {
		bad("sweep.parallelism", "must be >= 1, got %d", c.Sweep.Parallelism)
	}
	if c.MaxBodyBytes <= 0 {
		bad("max_body_bytes", "must be > 0, got %d", c.MaxBodyBytes)
	}

	if _, _, err := ParseRegistry(c.Registry); err != nil {
		bad("registry", "%v", err)
	}
	if c.LockLinger < 0 {
		bad("lock_linger", "must be >= 0, got %s", c.LockLinger)
	}

	if !validInstance(c.Docker.Instance) {
		bad("docker.instance", "%q: use 1 to 63 letters, digits, '.', '_' or '-'", c.Docker.Instance)
	}
	if c.Docker.VolumeRoot == "" {
		bad("docker.volume_root", "must be set")
	} else if abs, err := filepath.Abs(c.Docker.VolumeRoot); err != nil {
		bad("docker.volume_root", "%v", err)
	} else {
		c.Docker.VolumeRoot = abs
	}

	if set, err := profile.New(c.Agents); err != nil {
		errs = append(errs, configErrors(err)...)
	} else {
		c.Profiles = set
	}

	if c.OTLP.Endpoint != "" {
		u, err := url.Parse(c.OTLP.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("otlp.endpoint", "%q is not an http(s) URL such as http://localhost:4318", c.OTLP.Endpoint)
		}
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q: use debug, info, warn or error", c.Log.Level)
	}
	switch strings.ToLower(c.Log.Format) {
	case "json", "text":
	default:
		bad("log.format", "%q: use json or text", c.Log.Format)
	}
	return errors.Join(errs...)
}

// configErrors prefixes each of the (joined) errors with "config: ".
func configErrors(err error) []error {
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{fmt.Errorf("config: %w", err)}
	}
	var out []error
	for _, e := range joined.Unwrap() {
		out = append(out, fmt.Errorf("config: %w", e))
	}
	return out
}

// ParseRegistry splits a registry DSN into its kind ("sqlite" or "postgres") and what the
// store opens: the file path for sqlite, the whole DSN for postgres.
func ParseRegistry(dsn string) (kind, target string, err error) {
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "//")
		if path == "" {
			return "", "", fmt.Errorf("%q names no file: use sqlite:<path>", dsn)
		}
		return "sqlite", path, nil
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		if _, err := url.Parse(dsn); err != nil {
			return "", "", fmt.Errorf("postgres DSN does not parse: %v", redact(err))
		}
		return "postgres", dsn, nil
	}
	return "", "", fmt.Errorf("unknown registry %q: use sqlite:<path> or postgres://<dsn>", redactDSN(dsn))
}

// isLoopback reports whether the listen address only takes connections from this host.
func isLoopback(listen string) (bool, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return false, fmt.Errorf("%q is not host:port", listen)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return false, fmt.Errorf("%q: bad port %q", listen, port)
	}
	if host == "localhost" {
		return true, nil
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false, nil // a host name may resolve anywhere
	}
	return addr.IsLoopback(), nil
}

func validInstance(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// redact keeps a password out of an error message.
func redact(err error) string {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err.Error()
	}
	return "malformed URL"
}

func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		u.User = url.User(u.User.Username())
		return u.String()
	}
	if len(dsn) > 16 {
		return dsn[:16] + "..."
	}
	return dsn
}

func lookup(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == name {
			return v
		}
	}
	return ""
}

// envList drops duplicate names, the last one winning, as the shell does.
func envList(env []string) []string {
	seen := make(map[string]int, len(env))
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := seen[k]; ok {
			out[i] = kv
			continue
		}
		seen[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
