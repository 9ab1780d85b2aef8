package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sandboxd.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaults(t *testing.T) {
	cfg, err := Load(nil, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:8080" || cfg.Registry != "sqlite:./.data/sandboxd.db" {
		t.Errorf("listen %q registry %q", cfg.Listen, cfg.Registry)
	}
	wd, _ := os.Getwd()
	if want := filepath.Join(wd, ".data", "volumes"); cfg.Docker.VolumeRoot != want {
		t.Errorf("volume root %q, want %q (absolute)", cfg.Docker.VolumeRoot, want)
	}
	if cfg.Agents.RefuseUnknown || len(cfg.Agents.Profiles) != 0 {
		t.Errorf("agents = %+v, want every agent on the default profile", cfg.Agents)
	}
	if cfg.Docker.CallTimeout != docker.DefaultCallTimeout || cfg.Docker.CreateTimeout != docker.DefaultCreateTimeout ||
		cfg.RegistryTimeout != lifecycle.DefaultRegistryTimeout {
		t.Errorf("deadlines %s %s %s, want the packages' defaults", cfg.Docker.CallTimeout, cfg.Docker.CreateTimeout, cfg.RegistryTimeout)
	}
}

// File < environment < flags, key by key: each layer only overrides what it sets.
func TestPrecedence(t *testing.T) {
	path := writeFile(t, `
listen: 127.0.0.1:9001
ttl: 10m
sweep:
  interval: 11s
  parallelism: 3
reconcile:
  interval: 12m
docker:
  instance: from-file
  volume_root: /srv/sandboxd/volumes
agents:
  default:
    image: base:1
    memory: 256m
    env: {A: "1"}
  profiles:
    claude.v2:
      image: claude:2
      env: {B: "2"}
tokens: [file-token]
log:
  format: text
`)
	env := []string{
		"SANDBOXD_CONFIG=" + path,
		"SANDBOXD_TTL=20m",
		"SANDBOXD_SWEEP_INTERVAL=21s",
		"SANDBOXD_DOCKER_INSTANCE=from-env",
		"SANDBOXD_TOKENS=env-a, env-b",
		"SANDBOXD_LOG_LEVEL=debug",
		"SANDBOXD_TEST_PG_DSN=ignored", // the prefix is shared with tests: unknown names are left alone
		"HOME=/root",
	}
	args := []string{"--ttl=30m", "--docker-instance", "from-flag", "--max-body-bytes=4096"}
	cfg, err := Load(args, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen (file)", cfg.Listen, "127.0.0.1:9001"},
		{"ttl (flag over env over file)", cfg.TTL, 30 * time.Minute},
		{"sweep.interval (env over file)", cfg.Sweep.Interval, 21 * time.Second},
		{"sweep.parallelism (file)", cfg.Sweep.Parallelism, 3},
		{"reconcile.interval (file)", cfg.Reconcile.Interval, 12 * time.Minute},
		{"reconcile.grace (default)", cfg.Reconcile.Grace, time.Minute},
		{"docker.instance (flag)", cfg.Docker.Instance, "from-flag"},
		{"docker.volume_root (file)", cfg.Docker.VolumeRoot, "/srv/sandboxd/volumes"},
		{"tokens (env over file)", strings.Join(cfg.Tokens, "|"), "env-a|env-b"},
		{"max_body_bytes (flag)", cfg.MaxBodyBytes, int64(4096)},
		{"log.level (env)", cfg.Log.Level, "debug"},
		{"log.format (file)", cfg.Log.Format, "text"},
		{"registry (default)", cfg.Registry, "sqlite:./.data/sandboxd.db"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	// An agent id with a dot stays one key.
	if _, ok := cfg.Agents.Profiles["claude.v2"]; !ok || !cfg.Profiles.Listed("claude.v2") {
		t.Fatalf("profiles %v: no claude.v2", cfg.Profiles.Agents())
	}
	p := cfg.Profiles.Of("claude.v2")
	if p.Image != "claude:2" || p.MemoryBytes != 256<<20 || p.Env["A"] != "1" || p.Env["B"] != "2" {
		t.Errorf("profile claude.v2 = %+v, want its own image over the default's other fields", p)
	}
}

// Every settable key is read from the file, from its variable and from its flag, the
// file < environment < flags: alone, each layer sets it; for each pair of layers, with
// either value in the lower one, the higher one's wins; and the flag over both others.
func TestEveryKeyByLayer(t *testing.T) {
	const file, env, flag = 0, 1, 2
	layerName := [3]string{"file", "env", "flag"}
	d := Default()
	// values are two values of a key's type as text, which a file, a variable and a flag
	// all take so; show gives a field's value in the same form.
	values := func(s setting) [2]string {
		switch s.field(&d).(type) {
		case *string:
			return [2]string{"one", "two"}
		case *time.Duration:
			return [2]string{"7s", "9m0s"}
		case *int, *int64:
			return [2]string{"7", "9"}
		case *bool:
			return [2]string{"true", "false"}
		case *[]string:
			return [2]string{"a,b", "c"}
		}
		t.Fatalf("%s: no test values for a %T", s.key, s.field(&d))
		return [2]string{}
	}
	show := func(field any) string {
		switch v := field.(type) {
		case *string:
			return *v
		case *time.Duration:
			return v.String()
		case *int:
			return strconv.Itoa(*v)
		case *int64:
			return strconv.FormatInt(*v, 10)
		case *bool:
			return strconv.FormatBool(*v)
		case *[]string:
			return strings.Join(*v, ",")
		}
		return fmt.Sprintf("%T", field)
	}
	// yamlOf writes every setting, as nested sections, with its value of index i.
	yamlOf := func(sets []setting, i int) string {
		var b strings.Builder
		var last []string
		for _, s := range sets { // sorted by key: a section's keys are together
			parts := strings.Split(s.key, ".")
			same := 0
			for same < len(last) && same < len(parts)-1 && last[same] == parts[same] {
				same++
			}
			for j := same; j < len(parts); j++ {
				b.WriteString(strings.Repeat("  ", j) + parts[j] + ":")
				if j < len(parts)-1 {
					b.WriteString("\n")
				}
			}
			v := values(s)[i]
			if _, list := s.field(&d).(*[]string); list {
				v = "[" + strings.ReplaceAll(v, ",", ", ") + "]"
			}
			b.WriteString(" " + v + "\n")
			last = parts[:len(parts)-1]
		}
		return b.String()
	}
	sets := settings()
	slices.SortFunc(sets, func(a, b setting) int { return strings.Compare(a.key, b.key) })

	var cases []map[int]int // layer: index of the value it gives every key
	for _, l := range []int{file, env, flag} {
		cases = append(cases, map[int]int{l: 0}, map[int]int{l: 1})
	}
	for _, pair := range [][2]int{{file, env}, {env, flag}, {file, flag}} {
		cases = append(cases, map[int]int{pair[0]: 0, pair[1]: 1}, map[int]int{pair[0]: 1, pair[1]: 0})
	}
	cases = append(cases, map[int]int{file: 0, env: 1, flag: 0}, map[int]int{file: 1, env: 0, flag: 1})

	for _, given := range cases {
		var args, environ []string
		top, name := -1, ""
		for l := file; l <= flag; l++ {
			i, ok := given[l]
			if !ok {
				continue
			}
			top, name = l, name+fmt.Sprintf("%s=%d ", layerName[l], i)
			switch l {
			case file:
				args = append(args, "--config", writeFile(t, yamlOf(sets, i)))
			case env:
				for _, s := range sets {
					environ = append(environ, envName(s.key)+"="+values(s)[i])
				}
			case flag:
				for _, s := range sets {
					args = append(args, "--"+flagName(s.key)+"="+values(s)[i])
				}
			}
		}
		cfg, err := load(args, environ, io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, s := range sets {
			if got, want := show(s.field(&cfg)), values(s)[given[top]]; got != want {
				t.Errorf("%s: %s = %q, want the %s's %q", name, s.key, got, layerName[top], want)
			}
		}
	}
}

// The service-wide bounds are on by default (retention is off), and each is read from
// the file, the environment and the flags alike.
func TestServiceBounds(t *testing.T) {
	def, err := Load(nil, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if def.Server.MaxConnections <= 0 || def.Limits.MaxSandboxes <= 0 || def.Exec.MaxBufferedBytes <= 0 ||
		def.Files.MinUploadRate <= 0 || def.Docker.MinFreeBytes <= 0 {
		t.Errorf("defaults %+v %+v %+v %+v %+v: want every bound on", def.Server, def.Limits, def.Exec, def.Files, def.Docker)
	}
	if def.Workspace.Retention != 0 || def.Workspace.RetentionProvided {
		t.Errorf("workspace %+v: want no retention by default", def.Workspace)
	}

	path := writeFile(t, `
server: {max_connections: 50}
limits: {max_sandboxes: 7}
exec: {max_buffered_bytes: 1073741824}
files: {min_upload_rate: 1}
docker: {min_free_bytes: 0}
workspace: {retention: 168h, retention_provided: true}
`)
	cfg, err := Load([]string{"--config", path, "--limits-max-sandboxes=9"},
		[]string{"SANDBOXD_FILES_MIN_UPLOAD_RATE=0", "SANDBOXD_SERVER_MAX_CONNECTIONS=60"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"server.max_connections (env)", cfg.Server.MaxConnections, 60},
		{"limits.max_sandboxes (flag)", cfg.Limits.MaxSandboxes, 9},
		{"exec.max_buffered_bytes (file)", cfg.Exec.MaxBufferedBytes, int64(1 << 30)},
		{"files.min_upload_rate (env: off)", cfg.Files.MinUploadRate, int64(0)},
		{"docker.min_free_bytes (file: off)", cfg.Docker.MinFreeBytes, int64(0)},
		{"workspace.retention (file)", cfg.Workspace.Retention, 168 * time.Hour},
		{"workspace.retention_provided (file)", cfg.Workspace.RetentionProvided, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestFlagOverridesEnvTokens(t *testing.T) {
	cfg, err := Load([]string{"--tokens", "x,y", "--listen", "0.0.0.0:8080"},
		[]string{"SANDBOXD_TOKENS=e"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Tokens, []string{"x", "y"}) {
		t.Errorf("tokens = %q", cfg.Tokens)
	}
}

func TestValidationErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  []string
		file string
		want []string // substrings of the error
	}{
		{
			name: "non-loopback listen without tokens",
			args: []string{"--listen", "0.0.0.0:8080"},
			want: []string{"listen", "not a loopback address and no tokens"},
		},
		{
			name: "empty host means every interface",
			env:  []string{"SANDBOXD_LISTEN=:8080"},
			want: []string{"no tokens"},
		},
		{
			name: "listen not host:port",
			args: []string{"--listen", "localhost"},
			want: []string{"listen", "not host:port"},
		},
		{
			name: "durations and counts",
			args: []string{"--ttl=0s", "--sweep-interval=-1s", "--sweep-parallelism=0", "--max-body-bytes=0"},
			want: []string{"ttl: must be > 0", "sweep.interval: must be > 0", "sweep.parallelism: must be >= 1", "max_body_bytes"},
		},
		{
			name: "deadlines",
			args: []string{"--docker-call-timeout=0s", "--registry-timeout=-1s"},
			env:  []string{"SANDBOXD_DOCKER_CREATE_TIMEOUT=0s"},
			want: []string{"docker.call_timeout: must be > 0", "docker.create_timeout: must be > 0", "registry_timeout: must be > 0"},
		},
		{
			name: "exec, files and lifetime bounds",
			args: []string{"--exec-default-timeout=20m", "--exec-output-cap=0", "--files-max-bytes=-1", "--ttl=48h"},
			env:  []string{"SANDBOXD_EXEC_MAX_TIMEOUT=10m"},
			want: []string{"exec.default_timeout: 20m0s is over exec.max_timeout 10m0s", "exec.output_cap: must be > 0",
				"files.max_bytes: must be > 0", "ttl: 48h0m0s is over max_lifetime 24h0m0s"},
		},
		{
			name: "service-wide bounds",
			args: []string{"--server-max-connections=-1", "--limits-max-sandboxes=-5", "--docker-min-free-bytes=-1",
				"--files-min-upload-rate=-2", "--workspace-retention=-1h", "--docker-stop-timeout=-1s"},
			want: []string{"server.max_connections: must be >= 0", "limits.max_sandboxes: must be >= 0",
				"docker.min_free_bytes: must be >= 0", "files.min_upload_rate: must be >= 0", "workspace.retention: must be >= 0",
				"docker.stop_timeout: must be >= 0"},
		},
		{
			name: "buffered exec budget below one answer",
			env:  []string{"SANDBOXD_EXEC_OUTPUT_CAP=1024", "SANDBOXD_EXEC_MAX_BUFFERED_BYTES=11263"},
			want: []string{"exec.max_buffered_bytes: 11263 is less than one buffered exec answer may hold: 11264 for exec.output_cap 1024"},
		},
		{
			name: "provided folders' retention without a retention",
			file: "workspace:\n  retention_provided: true\n",
			want: []string{"workspace.retention_provided", "without workspace.retention"},
		},
		{
			name: "not a number",
			file: "limits:\n  max_sandboxes: many\n",
			want: []string{"max_sandboxes"},
		},
		{
			name: "unknown registry scheme",
			env:  []string{"SANDBOXD_REGISTRY=mysql://u:secret@db/x"},
			want: []string{"registry", "use sqlite:<path> or postgres://<dsn>"},
		},
		{
			name: "bad instance",
			args: []string{"--docker-instance", "has space"},
			want: []string{"docker.instance"},
		},
		{
			name: "bad otlp endpoint",
			args: []string{"--otlp-endpoint", "localhost:4318"},
			want: []string{"otlp.endpoint"},
		},
		{
			name: "bad log level and format",
			args: []string{"--log-level", "loud", "--log-format", "xml"},
			want: []string{"log.level", "log.format"},
		},
		{
			name: "the other bounds",
			args: []string{"--tokens", "a b", "--shutdown-timeout=0s", "--max-lifetime=0s", "--exec-max-timeout=0s",
				"--exec-max-concurrent=0", "--reconcile-interval=0s", "--reconcile-grace=-1s", "--lock-linger=-1s",
				"--docker-volume-root="},
			want: []string{"tokens: token 1 is empty or holds white space", "shutdown_timeout: must be > 0",
				"max_lifetime: must be > 0", "exec.max_timeout: must be > 0", "exec.max_concurrent: must be >= 1",
				"reconcile.interval: must be > 0", "reconcile.grace: must be > 0", "lock_linger: must be >= 0",
				"docker.volume_root: must be set"},
		},
		{
			name: "misspelt key in the file",
			file: "sweep:\n  intervall: 3s\n",
			want: []string{"intervall"},
		},
		{
			name: "bad sizes and paths in profiles",
			file: "agents:\n  default:\n    tmpfs: 1x\n  profiles:\n    a:\n      memory: lots\n      workspace: rel\n",
			want: []string{"agents.default", `tmpfs "1x"`, "agents.profiles.a", `memory "lots"`, `workspace "rel"`},
		},
		{
			name: "bad pool sizes",
			file: "agents:\n  default:\n    pool: {min: 3, max: 2}\n  profiles:\n    a:\n      pool: {min: -1}\n    b:\n      pool: {min: 5000}\n",
			want: []string{"agents.default", "pool min 3, max 2", "agents.profiles.a", "pool min -1", "agents.profiles.b", "pool min 5000"},
		},
		{
			name: "refuse unknown with no profiles",
			args: []string{"--agents-refuse-unknown"},
			want: []string{"agents.refuse_unknown"},
		},
		{
			name: "wrong type in env",
			env:  []string{"SANDBOXD_TTL=soon"},
			want: []string{"ttl"},
		},
		{
			name: "stray argument",
			args: []string{"serve"},
			want: []string{"unexpected arguments"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeFile(t, tc.file)}, args...)
			}
			_, err := Load(args, tc.env, io.Discard)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q leaks a password", err)
			}
		})
	}
}

// A key the file spells wrong, at any depth, is refused and named, never silently left
// at its default; so is an unknown flag. (Unknown SANDBOXD_ variables are ignored:
// TestPrecedence.)
func TestUnknownKeysRefused(t *testing.T) {
	for file, want := range map[string]string{
		"listn: 127.0.0.1:1\n":                                 "listn",
		"exec:\n  max_timout: 1s\n":                            "max_timout",
		"agents:\n  default:\n    imag: x\n":                   "imag",
		"agents:\n  default:\n    pool: {minimum: 1}\n":        "minimum",
		"agents:\n  profiles:\n    a: {memroy: 1g}\n":          "memroy",
		"agents:\n  profiles:\n    a: {log: {max_sise: 1m}}\n": "max_sise",
		"docker:\n  volume-root: /srv\n":                       "volume-root",
	} {
		_, err := Load([]string{"--config", writeFile(t, file)}, nil, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("file %q: error %v, want one naming %s", file, err, want)
		}
	}
	if _, err := Load([]string{"--exec-max-timout=1s"}, nil, io.Discard); err == nil || !strings.Contains(err.Error(), "exec-max-timout") {
		t.Errorf("unknown flag: error %v", err)
	}
}

func TestHelp(t *testing.T) {
	var out strings.Builder
	_, err := Load([]string{"-h"}, nil, &out)
	if !errors.Is(err, pflag.ErrHelp) {
		t.Fatalf("err = %v, want pflag.ErrHelp", err)
	}
	for _, k := range keys() {
		if !strings.Contains(out.String(), k[2]) || !strings.Contains(out.String(), k[1]) {
			t.Errorf("usage does not show %s / %s", k[2], k[1])
		}
	}
}

func TestParseRegistry(t *testing.T) {
	cases := []struct{ dsn, kind, target string }{
		{"sqlite:./.data/sandboxd.db", "sqlite", "./.data/sandboxd.db"},
		{"sqlite:///var/lib/sandboxd.db", "sqlite", "/var/lib/sandboxd.db"},
		{"postgres://u:p@localhost/db?sslmode=disable", "postgres", "postgres://u:p@localhost/db?sslmode=disable"},
		{"postgresql://localhost/db", "postgres", "postgresql://localhost/db"},
	}
	for _, c := range cases {
		kind, target, err := ParseRegistry(c.dsn)
		if err != nil || kind != c.kind || target != c.target {
			t.Errorf("ParseRegistry(%q) = %q, %q, %v", c.dsn, kind, target, err)
		}
	}
	if _, _, err := ParseRegistry("sqlite:"); err == nil {
		t.Error("sqlite: with no path was accepted")
	}
}

// Pools are sized per profile: a listed profile does not inherit the default's pool.
func TestPoolSizes(t *testing.T) {
	path := writeFile(t, `
agents:
  default:
    pool: {min: 2, max: 8}
  profiles:
    big:
      memory: 1g
    warm:
      pool: {min: 1}
`)
	cfg, err := Load([]string{"--agents-default-pool-max=6"}, []string{"SANDBOXD_CONFIG=" + path, "SANDBOXD_AGENTS_DEFAULT_POOL_MIN=4"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ got, want profile.Pool }{
		"default (env and flag over file)": {cfg.Profiles.Default().Pool, profile.Pool{Min: 4, Max: 6}},
		"big (not inherited)":              {cfg.Profiles.Of("big").Pool, profile.Pool{}},
		"warm (max 0: min)":                {cfg.Profiles.Of("warm").Pool, profile.Pool{Min: 1, Max: 1}},
	} {
		if c.got != c.want {
			t.Errorf("%s: pool = %+v, want %+v", name, c.got, c.want)
		}
	}
	if def, _ := Load(nil, nil, io.Discard); def.Profiles.Default().Pool != (profile.Pool{}) {
		t.Errorf("default pool = %+v, want off", def.Profiles.Default().Pool)
	}
}

// Activity extends the TTL only where a profile says so; a listed profile inherits the
// default's setting unless it sets its own.
func TestExtendOnActivity(t *testing.T) {
	path := writeFile(t, `
agents:
  default:
    extend_on_activity: true
  profiles:
    inherits: {memory: 1g}
    off: {extend_on_activity: false}
`)
	cfg, err := Load(nil, []string{"SANDBOXD_CONFIG=" + path}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	on := cfg.Profiles.ExtendsOnActivity
	if !on("") || !on("inherits") || on("off") {
		t.Errorf("default %v, inherits %v, off %v; want true, true, false", on(""), on("inherits"), on("off"))
	}
	if def, _ := Load(nil, nil, io.Discard); def.Profiles.ExtendsOnActivity("") {
		t.Error("activity extends the TTL by default")
	}
}

// The file API reaches /tmp only where a profile says so, inherited like the other fields.
func TestFilesTmp(t *testing.T) {
	path := writeFile(t, `
agents:
  default:
    files_tmp: true
  profiles:
    inherits: {memory: 1g}
    off: {files_tmp: false}
`)
	cfg, err := Load(nil, []string{"SANDBOXD_CONFIG=" + path}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	on := func(agent string) bool { return cfg.Profiles.Of(agent).FilesTmp }
	if !on("") || !on("inherits") || on("off") {
		t.Error("files_tmp: want the default on, inherited, and off where a profile says so")
	}
	if def, _ := Load(nil, nil, io.Discard); def.Profiles.Default().FilesTmp {
		t.Error("the file API reaches /tmp by default")
	}
}

// keys lists every key settable from the environment and flags: its YAML path,
// environment variable and flag.
func keys() [][3]string {
	var out [][3]string
	for _, s := range settings() {
		out = append(out, [3]string{s.key, envName(s.key), "--" + flagName(s.key)})
	}
	return out
}

// README.md's configuration table names every key with its environment variable, and
// its profile example every profile field, so that the README stays true.
func TestREADMENamesEveryKey(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys() {
		row := "| `" + k[0] + "` | `" + k[1] + "`"
		if !strings.Contains(string(readme), row) {
			t.Errorf("README.md has no row %q", row)
		}
	}
	for _, f := range reflect.VisibleFields(reflect.TypeFor[profile.Spec]()) {
		if key := f.Tag.Get("koanf"); !strings.Contains(string(readme), "    "+key+":") {
			t.Errorf("README.md's profile example does not show %s", key)
		}
	}
}

// A key is its fields' koanf tags along its path; its variable and flag follow from it.
// (TestREADMENamesEveryKey pins every key and variable the README documents.)
func TestKeysFromTags(t *testing.T) {
	var c Config
	byField := fieldKeys(&c, "")
	for field, want := range map[any]string{
		&c.Listen:                           "listen",
		&c.Exec.MaxTimeout:                  "exec.max_timeout",
		&c.Exec:                             "exec",
		&c.Agents.Default.Pool.Min:          "agents.default.pool.min",
		&c.Agents.Default.Pool:              "agents.default.pool",
		&c.Agents.Default.Image:             "agents.default.image",
		&c.Agents.Default:                   "agents.default",
		&c.Docker.Host:                      "docker.host",
		&c.Workspace.RetentionProvided:      "workspace.retention_provided",
		&c.Agents.Default.WorkspaceMaxFiles: "agents.default.workspace_max_files",
	} {
		if got := byField[field]; got != want {
			t.Errorf("key of %T = %q, want %q", field, got, want)
		}
	}
	if _, ok := byField[&c.Profiles]; ok {
		t.Error("Profiles (koanf:\"-\") has a key")
	}
	if got := [3]string{path("exec.max_timeout"), envName("exec.max_timeout"), flagName("exec.max_timeout")}; got !=
		[3]string{"exec::max_timeout", "SANDBOXD_EXEC_MAX_TIMEOUT", "exec-max-timeout"} {
		t.Errorf("exec.max_timeout's path, variable, flag = %q", got)
	}

	// Every option names a field with a key (settings panics otherwise), each its own.
	seen := map[string]bool{}
	for _, k := range keys() {
		for _, name := range k {
			if seen[name] {
				t.Errorf("%s is named twice", name)
			}
			seen[name] = true
		}
	}
	if len(settings()) != len(options()) || len(options()) < 40 {
		t.Errorf("%d settings of %d options", len(settings()), len(options()))
	}
	// An option naming no field with a key is caught.
	var stray time.Duration
	for name, field := range map[string]func(*Config) any{
		"a variable":           func(*Config) any { return &stray },
		"a field tagged \"-\"": func(c *Config) any { return &c.Profiles },
		"a section":            func(c *Config) any { return c.Exec },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("an option naming %s resolved to a key", name)
				}
			}()
			resolve([]option{{field, "usage"}})
		}()
	}
}

func TestEgress(t *testing.T) {
	path := writeFile(t, `
egress:
  proxy_port: 3999
  hosts:
    Index.Example.: [203.0.113.5, "2001:db8::5"]
agents:
  profiles:
    pip:
      network: egress
      egress: {allow: [index.example, "*.index.example:443"], deny: ["203.0.113.0/24:22"]}
`)
	cfg, err := Load([]string{"--config", path}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Egress.ProxyPort != 3999 || len(cfg.Egress.Resolved["index.example"]) != 2 {
		t.Errorf("egress %+v", cfg.Egress)
	}
	if p := cfg.Profiles.Of("pip"); p.Egress == nil || len(p.Egress.Allow()) != 2 {
		t.Errorf("profile pip %+v", p)
	}

	bad := writeFile(t, `
egress:
  hosts: {"bad name": [1.2.3.4], ok.example: [nope]}
agents:
  profiles:
    pip: {network: egress, egress: {allow: ["*.com"]}}
`)
	_, err = Load([]string{"--config", bad, "--egress-proxy-port", "0"}, nil, io.Discard)
	for _, want := range []string{"egress.proxy_port: must be a port", "egress.hosts:", `agents.profiles.pip: egress.allow[0] "*.com": *.com would match a whole top-level domain`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
}
