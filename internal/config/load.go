package config

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/sandboxd/sandboxd/internal/profile"
)

// option is one scalar key, settable from the environment and a flag.
type option struct {
	key   string // as in YAML, sections joined by ".": "sweep.interval"
	usage string
	flag  func(fs *pflag.FlagSet, name string, d Config, usage string)
}

// delim separates the sections of a koanf path. Not ".": agent ids (map keys) may hold dots.
const delim = "::"

// The options table is the one place a settable key is spelled (as in YAML, which the
// koanf tags of Config spell section by section; a test holds the two together): its
// koanf path, environment variable and flag are derived from it.

// path is the koanf path of a key: "sweep.interval" is "sweep::interval".
func path(key string) string { return strings.ReplaceAll(key, ".", delim) }

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
		{"ui.xterm_dir", "folder searched for a browser build of xterm.js for the operator's page's terminal (-: none)",
			str(func(c Config) string { return c.UI.XtermDir })},
		{"max_body_bytes", "largest request body in bytes",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int64(n, d.MaxBodyBytes, u) }},
		{"shutdown_timeout", "bound of the graceful shutdown", dur(func(c Config) time.Duration { return c.ShutdownTimeout })},
		{"server.max_connections", "connections the API's listener holds at once; more wait until one closes (0: no cap)",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int(n, d.Server.MaxConnections, u) }},
		{"limits.max_sandboxes", "sandboxes the service holds at once; one more create is refused with 429 (0: no cap)",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int(n, d.Limits.MaxSandboxes, u) }},
		{"max_lifetime", "cap of keepalive: latest expiry after creation", dur(func(c Config) time.Duration { return c.MaxLifetime })},
		{"exec.default_timeout", "timeout of a command that names none", dur(func(c Config) time.Duration { return c.Exec.DefaultTimeout })},
		{"exec.max_timeout", "largest timeout a command may ask for", dur(func(c Config) time.Duration { return c.Exec.MaxTimeout })},
		{"exec.output_cap", "bytes of output one command returns (the rest is cut and flagged)",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int64(n, d.Exec.OutputCap, u) }},
		{"exec.max_concurrent", "commands one sandbox runs at once (one more is refused with 429)",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int(n, d.Exec.MaxConcurrent, u) }},
		{"exec.max_buffered_bytes", "bytes all buffered (non-streaming) exec answers hold at once; one more is refused with 429",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int64(n, d.Exec.MaxBufferedBytes, u) }},
		{"files.max_bytes", "largest uploaded file in bytes",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int64(n, d.Files.MaxBytes, u) }},
		{"files.min_upload_rate", "slowest average upload rate in bytes a second after the first 10 s; slower is cut off with 408 (0: none)",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int64(n, d.Files.MinUploadRate, u) }},
		{"workspace.retention", "how long a workspace folder no session uses is kept after its last use (0: for ever)",
			dur(func(c Config) time.Duration { return c.Workspace.Retention })},
		{"workspace.retention_provided", "workspace.retention removes caller-provided folders too",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Bool(n, d.Workspace.RetentionProvided, u) }},
		{"sweep.interval", "time between expiry sweeps", dur(func(c Config) time.Duration { return c.Sweep.Interval })},
		{"sweep.parallelism", "chats one sweep cleans at once",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int(n, d.Sweep.Parallelism, u) }},
		{"reconcile.interval", "time between reconciliations", dur(func(c Config) time.Duration { return c.Reconcile.Interval })},
		{"reconcile.grace", "age before an unrecorded container is removed", dur(func(c Config) time.Duration { return c.Reconcile.Grace })},
		{"reconcile.force", "remove orphans even when more than 10 and more than half of the instance's sandboxes at once",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Bool(n, d.Reconcile.Force, u) }},
		{"registry", "session registry: sqlite:<path> or postgres://...", str(func(c Config) string { return c.Registry })},
		{"adopt", "take over, at start-up, a registry of another Docker engine or instance and the sandboxes of this instance that another registry (or none) recorded",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Bool(n, d.Adopt, u) }},
		{"lock_linger", "PostgreSQL: how long a replica keeps a chat's lock after its last use (0: off)", dur(func(c Config) time.Duration { return c.LockLinger })},
		{"registry_timeout", "deadline of each registry call", dur(func(c Config) time.Duration { return c.RegistryTimeout })},
		{"docker.host", "Docker engine address (empty: DOCKER_HOST or the default socket)", str(func(c Config) string { return c.Docker.Host })},
		{"docker.instance", "instance id labelling this service's containers", str(func(c Config) string { return c.Docker.Instance })},
		{"docker.volume_root", "host folder holding the workspaces", str(func(c Config) string { return c.Docker.VolumeRoot })},
		{"docker.stop_timeout", "how long a stop lets a sandbox end before killing it", dur(func(c Config) time.Duration { return c.Docker.StopTimeout })},
		{"docker.agent", "the in-sandbox agent's binary (empty: sandboxd-agent beside sandboxd, if there; none: no agent, commands through the engine's exec)",
			str(func(c Config) string { return c.Docker.Agent })},
		{"docker.call_timeout", "deadline of each engine call that reads or changes records (inspect, list, ...)", dur(func(c Config) time.Duration { return c.Docker.CallTimeout })},
		{"docker.create_timeout", "deadline of each engine call that makes or removes a container (a stop: plus docker.stop_timeout)", dur(func(c Config) time.Duration { return c.Docker.CreateTimeout })},
		{"docker.min_free_bytes", "free bytes the volume root keeps: below, creates are refused with 507 (0: no floor)",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int64(n, d.Docker.MinFreeBytes, u) }},
		{"egress.proxy_port", "port of the egress proxy on the gateway of the instance's egress network",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int(n, d.Egress.ProxyPort, u) }},
		{"agents.default.image", "image of the default agent profile (empty: " + profile.DefaultImage + ")", str(func(c Config) string { return c.Agents.Default.Image })},
		{"agents.default.runtime", "OCI runtime of the default profile's sandboxes, e.g. runsc for gVisor (empty: the engine's default)", str(func(c Config) string { return c.Agents.Default.Runtime })},
		{"agents.default.pool.min", "pre-started sandboxes the default agent profile keeps ready (0: no pool)",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int(n, d.Agents.Default.Pool.Min, u) }},
		{"agents.default.pool.max", "bound of the default profile's pool when creates outrun it (0: its min)",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Int(n, d.Agents.Default.Pool.Max, u) }},
		{"agents.default.workspace_max_bytes", "size of the default profile's workspace file system image, such as 1g (empty: no bound; needs root, mkfs.ext4 and loop devices)",
			str(func(c Config) string { return c.Agents.Default.WorkspaceMaxBytes })},
		{"agents.default.workspace_max_files", "files and folders the default profile's workspace image holds (0: mkfs's default for its size)",
			func(fs *pflag.FlagSet, n string, d Config, u string) {
				fs.Int64(n, d.Agents.Default.WorkspaceMaxFiles, u)
			}},
		{"agents.refuse_unknown", "refuse agent ids without a profile",
			func(fs *pflag.FlagSet, n string, d Config, u string) { fs.Bool(n, d.Agents.RefuseUnknown, u) }},
		{"otlp.endpoint", "OTLP/HTTP endpoint for traces (empty: none)", str(func(c Config) string { return c.OTLP.Endpoint })},
		{"log.level", "log level: debug, info, warn, error", str(func(c Config) string { return c.Log.Level })},
		{"log.format", "log format: json or text", str(func(c Config) string { return c.Log.Format })},
	}
}

// flagName is the command-line flag of a key: "sweep.interval" is --sweep-interval.
func flagName(key string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(key)
}

// envName is the environment variable of a key: "sweep.interval" is SANDBOXD_SWEEP_INTERVAL.
func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
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
		flagKeys[name] = path(o.key)
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
		envKeys[envName(o.key)] = path(o.key)
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
