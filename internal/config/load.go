package config

import (
	"fmt"
	"io"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// Load reads the configuration: defaults, then the YAML file named by --config or
// SANDBOXD_CONFIG (if any), then SANDBOXD_... variables of environ, then the flags in args
// (without the program name). It returns the checked configuration, or an error that
// says which keys are wrong. Asked for help (-h), it writes the usage to usage and
// returns pflag.ErrHelp.
func Load(args, environ []string, usage io.Writer) (Config, error) {
	cfg, err := load(args, environ, usage)
	if err != nil {
		return Config{}, err
	}
	if err := cfg.finish(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// load is Load before finish: the layers decoded over Default(), unchecked.
func load(args, environ []string, usage io.Writer) (Config, error) {
	sets := settings()
	d := Default()
	fs := pflag.NewFlagSet("sandboxd", pflag.ContinueOnError)
	fs.SetOutput(usage)
	configPath := fs.StringP("config", "c", "", "YAML configuration file (env "+EnvPrefix+"CONFIG)")
	flagKeys := make(map[string]string, len(sets))
	type envKey struct {
		path string
		list bool // comma-separated
	}
	envKeys := make(map[string]envKey, len(sets))
	for _, s := range sets {
		s.addFlag(fs, &d)
		flagKeys[flagName(s.key)] = path(s.key)
		envKeys[envName(s.key)] = envKey{path(s.key), s.isList(&d)}
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("config: unexpected arguments %q", fs.Args())
	}

	k := koanf.New(delim)
	name := *configPath
	if name == "" {
		name = lookup(environ, EnvPrefix+"CONFIG")
	}
	if name != "" {
		if err := k.Load(file.Provider(name), yaml.Parser()); err != nil {
			return Config{}, fmt.Errorf("config: read %s: %w", name, err)
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
			if key.list {
				return key.path, splitList(v)
			}
			return key.path, v
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
