package poolset_test

import (
	"testing"

	"github.com/sandboxd/sandboxd/internal/poolset"
	"github.com/sandboxd/sandboxd/internal/profile"
)

// An agent draws from its own profile's pool when listed, from the default profile's
// otherwise, and from none when that profile is not pooled.
func TestSetFor(t *testing.T) {
	set, err := profile.New(profile.Agents{
		Default: profile.Spec{Pool: profile.Pool{Min: 1}},
		Profiles: map[string]profile.Spec{
			"pooled":   {Pool: profile.Pool{Min: 2}},
			"unpooled": {Pool: profile.Pool{Min: 0}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	type pool struct{ name string }
	s := poolset.New(set, func(name string, p profile.Profile) *pool { return &pool{name} })
	for agent, want := range map[string]string{"": poolset.DefaultName, "stranger": poolset.DefaultName, "pooled": "pooled", "unpooled": ""} {
		got := s.For(agent)
		if (want == "") != (got == nil) || got != nil && got.name != want {
			t.Errorf("For(%q) = %v, want the pool %q", agent, got, want)
		}
	}
	if len(s.All) != 2 || s.All[0].name != poolset.DefaultName {
		t.Errorf("All = %v, want the default pool first and the pooled one", s.All)
	}
}
