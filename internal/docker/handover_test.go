package docker

import (
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/internal/profile"
)

func TestCanHandOverOnlyWhatItMay(t *testing.T) {
	profiles := func(agents map[string]string) *profile.Set {
		t.Helper()
		a := profile.Agents{Default: profile.Spec{User: "1000:1000"}, Profiles: map[string]profile.Spec{}}
		for id, user := range agents {
			a.Profiles[id] = profile.Spec{User: user}
		}
		s, err := profile.New(a)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := canHandOver(0, nil, profiles(map[string]string{"a": "2000:2000"})); err != nil {
		t.Fatalf("root: %v", err)
	}
	if err := canHandOver(1000, []int{1000, 5}, profiles(map[string]string{"a": "1000:5"})); err != nil {
		t.Fatalf("the sandbox user itself: %v", err)
	}
	if err := canHandOver(1000, []int{1000}, profiles(map[string]string{"a": "1000:5"})); err == nil || !strings.Contains(err.Error(), "group 5") {
		t.Fatalf("a group sandboxd is not in: err = %v", err)
	}
	err := canHandOver(1500, []int{1500}, profiles(map[string]string{"a": "1500:1500", "b": "2000:2000"}))
	if err == nil {
		t.Fatal("uid 1500 without root accepted profiles running as 1000 and 2000")
	}
	for _, want := range []string{"default profile runs its sandbox as uid 1000", `profile "b" runs its sandbox as uid 2000`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), `profile "a"`) {
		t.Errorf("error %q blames profile a, which runs as sandboxd's own uid", err)
	}
}
