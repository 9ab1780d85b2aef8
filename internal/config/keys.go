package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/sandboxd/sandboxd/internal/profile"
)

// A key is spelled once, by the koanf tags of the fields along its path ("exec" on
// Config.Exec, "max_timeout" on Exec.MaxTimeout: exec.max_timeout). Everything else is
// derived from those tags: the key's koanf path (path), its environment variable
// (envName), its flag (flagName), and the key that validation messages name (problems).
// The options table below names a field by Go, never by its key.

// option is one scalar key that the environment and a flag can set besides the file.
type option struct {
	// field returns the address of the key's field in c. Its type gives the flag's;
	// applied to Default(), the flag's default.
	field func(c *Config) any
	usage string
}

// options are the keys settable from the environment and flags (the others, such as
// agents.profiles and tenants, only from the file).
func options() []option {
	return []option{
		{func(c *Config) any { return &c.Listen }, "HTTP API address (host:port)"},
		{func(c *Config) any { return &c.TTL }, "sandbox lifetime"},
		{func(c *Config) any { return &c.Tokens }, "bearer tokens the API accepts (comma-separated)"},
		{func(c *Config) any { return &c.UI.XtermDir }, "folder searched for a browser build of xterm.js for the operator's page's terminal (-: none)"},
		{func(c *Config) any { return &c.MaxBodyBytes }, "largest request body in bytes"},
		{func(c *Config) any { return &c.ShutdownTimeout }, "bound of the graceful shutdown"},
		{func(c *Config) any { return &c.Server.MaxConnections }, "connections the API's listener holds at once; more wait until one closes (0: no cap)"},
		{func(c *Config) any { return &c.Limits.MaxSandboxes }, "sandboxes the service holds at once; one more create is refused with 429 (0: no cap)"},
		{func(c *Config) any { return &c.MaxLifetime }, "cap of keepalive: latest expiry after creation"},
		{func(c *Config) any { return &c.Exec.DefaultTimeout }, "timeout of a command that names none"},
		{func(c *Config) any { return &c.Exec.MaxTimeout }, "largest timeout a command may ask for"},
		{func(c *Config) any { return &c.Exec.OutputCap }, "bytes of output one command returns (the rest is cut and flagged)"},
		{func(c *Config) any { return &c.Exec.MaxConcurrent }, "commands one sandbox runs at once (one more is refused with 429)"},
		{func(c *Config) any { return &c.Exec.MaxBufferedBytes }, "bytes all buffered (non-streaming) exec answers hold at once; one more is refused with 429"},
		{func(c *Config) any { return &c.Files.MaxBytes }, "largest uploaded file in bytes"},
		{func(c *Config) any { return &c.Files.MinUploadRate }, "slowest average upload rate in bytes a second after the first 10 s; slower is cut off with 408 (0: none)"},
		{func(c *Config) any { return &c.Workspace.Retention }, "how long a workspace folder no session uses is kept after its last use (0: for ever)"},
		{func(c *Config) any { return &c.Workspace.RetentionProvided }, "let the workspace retention remove caller-provided folders too"},
		{func(c *Config) any { return &c.Sweep.Interval }, "time between expiry sweeps"},
		{func(c *Config) any { return &c.Sweep.Parallelism }, "chats one sweep cleans at once"},
		{func(c *Config) any { return &c.Reconcile.Interval }, "time between reconciliations"},
		{func(c *Config) any { return &c.Reconcile.Grace }, "age before an unrecorded container is removed"},
		{func(c *Config) any { return &c.Reconcile.Force }, "remove orphans even when more than 10 and more than half of the instance's sandboxes at once"},
		{func(c *Config) any { return &c.Registry }, "session registry: sqlite:<path> or postgres://..."},
		{func(c *Config) any { return &c.Adopt }, "take over, at start-up, a registry of another Docker engine or instance and the sandboxes of this instance that another registry (or none) recorded"},
		{func(c *Config) any { return &c.LockLinger }, "PostgreSQL: how long a replica keeps a chat's lock after its last use (0: off)"},
		{func(c *Config) any { return &c.RegistryTimeout }, "deadline of each registry call"},
		{func(c *Config) any { return &c.Runtime }, "what runs the sandboxes: docker or kubernetes"},
		{func(c *Config) any { return &c.Docker.Host }, "Docker engine address (empty: DOCKER_HOST or the default socket)"},
		{func(c *Config) any { return &c.Docker.Instance }, "instance id labelling this service's containers"},
		{func(c *Config) any { return &c.Docker.VolumeRoot }, "host folder holding the workspaces"},
		{func(c *Config) any { return &c.Docker.StopTimeout }, "how long a stop lets a sandbox end before killing it (0: no grace, a stop removes at once)"},
		{func(c *Config) any { return &c.Docker.Agent }, "the in-sandbox agent's binary (empty: sandboxd-agent beside sandboxd, if there; none: no agent, commands through the engine's exec)"},
		{func(c *Config) any { return &c.Docker.CallTimeout }, "deadline of each engine call that reads or changes records (inspect, list, ...)"},
		{func(c *Config) any { return &c.Docker.CreateTimeout }, "deadline of each engine call that makes or removes a container (a stop: plus the stop timeout)"},
		{func(c *Config) any { return &c.Docker.MinFreeBytes }, "free bytes the volume root keeps: below, creates of new sandboxes are refused with 507 (0: no floor)"},
		{func(c *Config) any { return &c.Kubernetes.Kubeconfig }, "kubeconfig file (empty: in-cluster credentials, else $KUBECONFIG or ~/.kube/config)"},
		{func(c *Config) any { return &c.Kubernetes.Namespace }, "namespace of the sandboxes' Pods and workspace claims"},
		{func(c *Config) any { return &c.Kubernetes.Instance }, "instance id labelling this service's Pods"},
		{func(c *Config) any { return &c.Kubernetes.StorageClass }, "storage class of the workspace claims (empty: the cluster's default)"},
		{func(c *Config) any { return &c.Kubernetes.WorkspaceBytes }, "size in bytes each chat's workspace claim asks for"},
		{func(c *Config) any { return &c.Kubernetes.StopTimeout }, "grace period of a sandbox's Pod at a stop"},
		{func(c *Config) any { return &c.Egress.ProxyPort }, "port of the egress proxy on the gateway of the instance's egress network"},
		{func(c *Config) any { return &c.Agents.Default.Image }, "image of the default agent profile (empty: " + profile.DefaultImage + ")"},
		{func(c *Config) any { return &c.Agents.Default.Runtime }, "OCI runtime of the default profile's sandboxes, e.g. runsc for gVisor (empty: the engine's default)"},
		{func(c *Config) any { return &c.Agents.Default.Pool.Min }, "pre-started sandboxes the default agent profile keeps ready (0: no pool)"},
		{func(c *Config) any { return &c.Agents.Default.Pool.Max }, "bound of the default profile's pool when creates outrun it (0: its min)"},
		{func(c *Config) any { return &c.Agents.Default.WorkspaceMaxBytes }, "size of the default profile's workspace file system image, such as 1g (empty: no bound; needs root, mkfs.ext4 and loop devices)"},
		{func(c *Config) any { return &c.Agents.Default.WorkspaceMaxFiles }, "files and folders the default profile's workspace image holds (0: mkfs's default for its size)"},
		{func(c *Config) any { return &c.Agents.RefuseUnknown }, "refuse agent ids without a profile"},
		{func(c *Config) any { return &c.OTLP.Endpoint }, "OTLP/HTTP endpoint for traces (empty: none)"},
		{func(c *Config) any { return &c.Log.Level }, "log level: debug, info, warn, error"},
		{func(c *Config) any { return &c.Log.Format }, "log format: json or text"},
	}
}

// setting is an option with its key, found from the tags of its field.
type setting struct {
	option
	key string // as in YAML, sections joined by ".": "sweep.interval"
}

// settings are the options with their keys.
func settings() []setting { return resolve(options()) }

// resolve finds the options' keys. An option whose field has no key (a field tagged "-"
// or untagged, or none of the Config it is given) is a mistake in the table: it panics,
// which every Load and the package's tests show.
func resolve(opts []option) []setting {
	var zero Config
	keys := fieldKeys(&zero, "")
	out := make([]setting, 0, len(opts))
	for _, o := range opts {
		ptr := o.field(&zero)
		key, ok := keys[ptr]
		if !ok {
			panic(fmt.Sprintf("config: an option (%q) names a %T that is no tagged field of Config", o.usage, ptr))
		}
		out = append(out, setting{o, key})
	}
	return out
}

// fieldKeys maps the address of every tagged field under root, a pointer to a struct, to
// its key: prefix, then the koanf tags along the field's path, joined by ".". Root itself
// maps to prefix. Addresses are held as any, pointer and type together: a struct and its
// first field share an address, not a type. Maps, slices and pointers are not entered (a
// map's values have no address; name them apart, as problems.name does).
func fieldKeys(root any, prefix string) map[any]string {
	keys := map[any]string{root: prefix}
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		for i := range v.NumField() {
			f := v.Type().Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("koanf"), ",")
			if tag == "" || tag == "-" || !f.IsExported() {
				continue
			}
			key := tag
			if prefix != "" {
				key = prefix + "." + tag
			}
			fv := v.Field(i)
			keys[fv.Addr().Interface()] = key
			if fv.Kind() == reflect.Struct {
				walk(fv, key)
			}
		}
	}
	walk(reflect.ValueOf(root).Elem(), prefix)
	return keys
}

// delim separates the sections of a koanf path. Not ".": agent ids (map keys) may hold dots.
const delim = "::"

// path is the koanf path of a key: "sweep.interval" is "sweep::interval".
func path(key string) string { return strings.ReplaceAll(key, ".", delim) }

// flagName is the command-line flag of a key: "sweep.interval" is --sweep-interval.
func flagName(key string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(key)
}

// envName is the environment variable of a key: "sweep.interval" is SANDBOXD_SWEEP_INTERVAL.
func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// isList reports whether a setting's field is a list, which the environment gives
// comma-separated.
func (s setting) isList(c *Config) bool {
	_, ok := s.field(c).(*[]string)
	return ok
}

// addFlag defines the setting's flag, of its field's type, with the field of d as its
// default.
func (s setting) addFlag(fs *pflag.FlagSet, d *Config) {
	name, usage := flagName(s.key), s.usage+" (env "+envName(s.key)+")"
	switch def := s.field(d).(type) {
	case *string:
		fs.String(name, *def, usage)
	case *time.Duration:
		fs.Duration(name, *def, usage)
	case *int:
		fs.Int(name, *def, usage)
	case *int64:
		fs.Int64(name, *def, usage)
	case *bool:
		fs.Bool(name, *def, usage)
	case *[]string:
		fs.StringSlice(name, *def, usage)
	default:
		panic(fmt.Sprintf("config: key %s: no flag for a %T", s.key, def))
	}
}
