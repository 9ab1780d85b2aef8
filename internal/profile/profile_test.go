package profile_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// A profile that sets nothing gets the hardened defaults.
func TestDefaults(t *testing.T) {
	s, err := profile.New(profile.Agents{})
	if err != nil {
		t.Fatal(err)
	}
	want := profile.Profile{
		Image: profile.DefaultImage, MemoryBytes: 512 << 20, NanoCPUs: 1e9, PIDs: 256, Network: "none",
		Workspace: "/workspace", User: "1000:1000", UID: 1000, GID: 1000, TmpfsBytes: 64 << 20,
		LogDriver: "json-file", LogMaxBytes: 1 << 20, LogMaxFiles: 2,
	}
	if got := s.Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("default profile = %+v\nwant %+v", got, want)
	}
}

// A listed profile takes what it leaves unset from the default profile, except its pool;
// an agent without a profile gets the default one, unless unknown agents are refused.
func TestMergingAndLookup(t *testing.T) {
	on, off := true, false
	s, err := profile.New(profile.Agents{
		Default: profile.Spec{Image: "base:1", Memory: "256m", CPUs: 0.5, User: "2000", Env: map[string]string{"A": "1", "B": "base"},
			ExtendOnActivity: &on, Pool: profile.Pool{Min: 2, Max: 4}, Log: profile.Log{Driver: "local", MaxSize: "4m"}},
		Profiles: map[string]profile.Spec{
			"claude.v2": {Image: "claude:2", Env: map[string]string{"B": "own"}, ExtendOnActivity: &off, Pool: profile.Pool{Min: 1},
				Log: profile.Log{MaxFile: 5}},
		},
		RefuseUnknown: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Lookup("claude.v2")
	if err != nil {
		t.Fatal(err)
	}
	want := profile.Profile{
		Image: "claude:2", MemoryBytes: 256 << 20, NanoCPUs: 5e8, PIDs: 256, Network: "none",
		Env: map[string]string{"A": "1", "B": "own"}, Workspace: "/workspace", User: "2000", UID: 2000, GID: 2000,
		TmpfsBytes: 64 << 20, LogDriver: "local", LogMaxBytes: 4 << 20, LogMaxFiles: 5, Pool: profile.Pool{Min: 1, Max: 1},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("claude.v2 = %+v\nwant %+v", p, want)
	}
	if def, err := s.Lookup(""); err != nil || def.Image != "base:1" || def.Pool != (profile.Pool{Min: 2, Max: 4}) || !def.ExtendOnActivity {
		t.Errorf("empty agent id: %+v, %v; want the default profile", def, err)
	}
	if _, err := s.Lookup("stranger"); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("unknown agent with refuse_unknown: %v, want ErrInvalid", err)
	}
	if got := s.Of("stranger"); got.Image != "base:1" {
		t.Errorf("the sandbox of an unknown agent has profile %+v, want the default", got)
	}
	if s.ExtendsOnActivity("claude.v2") || !s.ExtendsOnActivity("stranger") {
		t.Error("extend_on_activity: want claude.v2's own off, the default's on")
	}
	if uid, gid := s.SandboxUser("claude.v2"); uid != 2000 || gid != 2000 {
		t.Errorf("sandbox user %d:%d, want 2000:2000", uid, gid)
	}
	if got := s.Agents(); !reflect.DeepEqual(got, []string{"claude.v2"}) || !s.Listed("claude.v2") || s.Listed("stranger") {
		t.Errorf("agents %v", got)
	}

	lenient, err := profile.New(profile.Agents{Profiles: map[string]profile.Spec{"a": {}}})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := lenient.Lookup("stranger"); err != nil || p.Image != profile.DefaultImage {
		t.Errorf("unknown agent without refuse_unknown: %+v, %v; want the default profile", p, err)
	}
}

// A profile may keep no log at all.
func TestNoLog(t *testing.T) {
	s, err := profile.New(profile.Agents{
		Default:  profile.Spec{Log: profile.Log{MaxSize: "4m", MaxFile: 3}},
		Profiles: map[string]profile.Spec{"quiet": {Log: profile.Log{Driver: "none"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Of("quiet"); p.LogDriver != profile.LogNone || p.LogMaxBytes != 0 || p.LogMaxFiles != 0 {
		t.Errorf("quiet = %+v, want log driver none", p)
	}
	if p := s.Default(); p.LogDriver != profile.LogJSONFile || p.LogMaxBytes != 4<<20 || p.LogMaxFiles != 3 {
		t.Errorf("default profile's log %q %d %d, want json-file of 3 files of 4 MiB", p.LogDriver, p.LogMaxBytes, p.LogMaxFiles)
	}
}

// What would weaken the sandbox, or cannot be made, is refused, in the default profile as
// in a listed one, and the error names the profile by its key.
func TestNewRefusesUnsafeProfiles(t *testing.T) {
	yes := true
	for name, c := range map[string]struct {
		spec profile.Spec
		want string
	}{
		"root user":              {profile.Spec{User: "0:0"}, "is root"},
		"root group":             {profile.Spec{User: "1000:0"}, "root group"},
		"named user":             {profile.Spec{User: "root"}, "numeric uid:gid"},
		"host network":           {profile.Spec{Network: "host"}, "shares a namespace"},
		"container network":      {profile.Spec{Network: "container:abc"}, "shares a namespace"},
		"mount on /":             {profile.Spec{Workspace: "/"}, `workspace "/"`},
		"relative mount":         {profile.Spec{Workspace: "work"}, `workspace "work"`},
		"tiny memory":            {profile.Spec{Memory: "1m"}, `memory "1m"`},
		"bad memory":             {profile.Spec{Memory: "lots"}, `memory "lots"`},
		"bad tmpfs":              {profile.Spec{Tmpfs: "1x"}, `tmpfs "1x"`},
		"negative cpus":          {profile.Spec{CPUs: -1}, "cpus"},
		"negative pids":          {profile.Spec{PIDs: -1}, "pids"},
		"pool max below min":     {profile.Spec{Pool: profile.Pool{Min: 3, Max: 2}}, "pool min 3, max 2"},
		"negative pool":          {profile.Spec{Pool: profile.Pool{Min: -1}}, "pool min -1"},
		"pool over the bound":    {profile.Spec{Pool: profile.Pool{Min: profile.MaxPool + 1}}, "pool min 1001"},
		"a path as runtime":      {profile.Spec{Runtime: "/usr/bin/runsc"}, "not a runtime name"},
		"files_tmp under gVisor": {profile.Spec{Runtime: "runsc", FilesTmp: &yes}, "files_tmp needs the runc runtime"},
		"tiny workspace":         {profile.Spec{WorkspaceMaxBytes: "1m"}, `workspace_max_bytes "1m" is below`},
		"bad workspace size":     {profile.Spec{WorkspaceMaxBytes: "big"}, `workspace_max_bytes "big"`},
		"files without bytes":    {profile.Spec{WorkspaceMaxFiles: 10}, "workspace_max_files needs workspace_max_bytes"},
		"negative files":         {profile.Spec{WorkspaceMaxBytes: "1g", WorkspaceMaxFiles: -1}, "workspace_max_files must be"},
		"bounded pool":           {profile.Spec{WorkspaceMaxBytes: "1g", Pool: profile.Pool{Min: 1}}, "cannot be combined with a pool"},
		"unbounded log driver":   {profile.Spec{Log: profile.Log{Driver: "syslog"}}, `log driver "syslog"`},
		"bad log size":           {profile.Spec{Log: profile.Log{MaxSize: "big"}}, `log max_size "big"`},
		"log over the bound":     {profile.Spec{Log: profile.Log{MaxSize: "2g"}}, `log max_size "2g" is over 1024 MiB`},
		"no log file":            {profile.Spec{Log: profile.Log{MaxFile: -1}}, "log max_file -1"},
		"too many log files":     {profile.Spec{Log: profile.Log{MaxFile: 101}}, "log max_file 101"},
		"sizes without a log":    {profile.Spec{Log: profile.Log{Driver: "none", MaxFile: 3}}, "log driver none keeps nothing"},
	} {
		_, err := profile.New(profile.Agents{Default: c.spec})
		if err == nil || !strings.Contains(err.Error(), "agents.default: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s as the default profile: err = %v, want agents.default and %q", name, err, c.want)
		}
		_, err = profile.New(profile.Agents{Profiles: map[string]profile.Spec{"a": c.spec}})
		if err == nil || !strings.Contains(err.Error(), "agents.profiles.a: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s in an agent profile: err = %v, want agents.profiles.a and %q", name, err, c.want)
		}
	}
	if _, err := profile.New(profile.Agents{RefuseUnknown: true}); err == nil || !strings.Contains(err.Error(), "agents.refuse_unknown") {
		t.Errorf("refuse_unknown without profiles: err = %v", err)
	}
	if _, err := profile.New(profile.Agents{Profiles: map[string]profile.Spec{"": {}}}); err == nil {
		t.Error("an empty agent id: accepted")
	}
}

func TestEgressProfiles(t *testing.T) {
	set, err := profile.New(profile.Agents{
		Default: profile.Spec{Network: "egress", Egress: profile.Egress{Allow: []string{"pypi.org"}, Deny: []string{"evil.pypi.org"}}},
		Profiles: map[string]profile.Spec{
			"inherits": {},
			"own":      {Egress: profile.Egress{Allow: []string{"*.github.com"}}},
			"offline":  {Network: "none"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := set.Of("inherits").Egress.Allow(); len(got) != 1 || got[0] != "pypi.org" {
		t.Errorf("inherited allow %v", got)
	}
	own := set.Of("own").Egress
	if got := own.Allow(); len(got) != 1 || got[0] != "*.github.com" {
		t.Errorf("own allow %v", got)
	}
	if got := own.Deny(); len(got) != 1 || got[0] != "evil.pypi.org" {
		t.Errorf("own profile's deny (inherited) %v", got)
	}
	if p := set.Of("offline"); p.Egress != nil || p.Network != "none" {
		t.Errorf("a none profile got egress rules: %+v", p)
	}

	_, err = profile.New(profile.Agents{
		Default:  profile.Spec{Network: "egress", Egress: profile.Egress{Allow: []string{"*.com", "10.0.0.1/8"}}},
		Profiles: map[string]profile.Spec{"wrong": {Network: "none", Egress: profile.Egress{Deny: []string{"x.example"}}}},
	})
	for _, want := range []string{`agents.default: egress.allow[0] "*.com"`, `egress.allow[1] "10.0.0.1/8"`,
		`agents.profiles.wrong: egress rules need network "egress", not "none"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %s", err, want)
		}
	}
}

// A workspace bound is inherited like the other fields, and the set says whether any
// profile has one (the host must then be able to enforce it).
func TestWorkspaceBounds(t *testing.T) {
	s, err := profile.New(profile.Agents{
		Default:  profile.Spec{WorkspaceMaxBytes: "1g", WorkspaceMaxFiles: 5000},
		Profiles: map[string]profile.Spec{"small": {WorkspaceMaxBytes: "64MiB"}, "free": {WorkspaceMaxBytes: "none", Pool: profile.Pool{Min: 1}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Of("small"); p.WorkspaceMaxBytes != 64<<20 || p.WorkspaceMaxFiles != 5000 {
		t.Errorf("small: %d bytes, %d files; want 64 MiB and the default's 5000", p.WorkspaceMaxBytes, p.WorkspaceMaxFiles)
	}
	if p := s.Of("free"); p.WorkspaceMaxBytes != 0 {
		t.Errorf("free: %d bytes, want no bound (none)", p.WorkspaceMaxBytes)
	}
	if p := s.Default(); p.WorkspaceMaxBytes != 1<<30 || !s.BoundsWorkspaces() {
		t.Errorf("default: %d bytes, bounds %v", p.WorkspaceMaxBytes, s.BoundsWorkspaces())
	}
	none, err := profile.New(profile.Agents{Profiles: map[string]profile.Spec{"a": {}}})
	if err != nil || none.BoundsWorkspaces() || none.Default().WorkspaceMaxBytes != 0 {
		t.Errorf("no bound configured: bounds %v, %v", none.BoundsWorkspaces(), err)
	}
	only, err := profile.New(profile.Agents{Profiles: map[string]profile.Spec{"a": {WorkspaceMaxBytes: "8m"}}})
	if err != nil || !only.BoundsWorkspaces() {
		t.Errorf("one listed profile bounded: bounds %v, %v", only != nil && only.BoundsWorkspaces(), err)
	}
}
