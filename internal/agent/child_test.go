package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
)

// The image's command: its output and its end are reported on out; Stop's SIGTERM
// reaches it, and Stop returns once it ended.
func TestTheImagesCommand(t *testing.T) {
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	var out syncbuf.Buffer
	c, err := StartChild([]string{"sh", "-c", `trap 'echo got-term; exit 0' TERM; echo up; while :; do sleep 0.05; done`}, env, &out)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "up"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no output: %q", out.String())
		}
	}
	c.Stop()
	if got := out.String(); !strings.Contains(got, "got-term") || !strings.Contains(got, "ended: exit status 0") {
		t.Errorf("after Stop: %q", got)
	}

	out = syncbuf.Buffer{}
	c, err = StartChild([]string{"false"}, env, &out)
	if err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if !strings.Contains(out.String(), `"false"] ended: exit status 1`) {
		t.Errorf("after its end: %q", out.String())
	}
	if _, err := StartChild([]string{"no-such-program"}, env, &out); err == nil {
		t.Error("a missing program started")
	}
}
