package docker_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
)

// A sandbox that writes 200 MB to its init's output (what the engine logs) leaves the
// engine's log of it within the profile's bound: the default, two files of 1 MiB. (A
// sandbox with the in-sandbox agent logs nothing: TestTheAgentRunsTheSandboxesCommands.)
func TestSandboxOutputLogStaysBounded(t *testing.T) {
	e := newEnv(t, noAgent)
	s := e.create(t, newSpec(""))
	hc := e.inspect(t, s.ContainerID).HostConfig
	want := container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "1048576", "max-file": "2"}}
	if !reflect.DeepEqual(hc.LogConfig, want) {
		t.Fatalf("log config = %+v, want %+v", hc.LogConfig, want)
	}

	const total = 200_000_000
	line := strings.Repeat("0123456789", 10)
	out, code := dockertest.Exec(t, e.cli, s.ContainerID, "sh", "-c",
		"yes "+line+" | head -c "+strconv.Itoa(total)+" | tee /proc/1/fd/1 | wc -c")
	if code != 0 || strings.TrimSpace(out) != strconv.Itoa(total) {
		t.Fatalf("writing %d bytes to the init's output: %q (exit %d)", total, out, code)
	}

	logPath := e.inspect(t, s.ContainerID).LogPath
	if logPath == "" {
		t.Fatal("the engine names no log file")
	}
	files, err := filepath.Glob(logPath + "*") // the log and its rotations
	if err != nil || len(files) == 0 {
		t.Fatalf("the engine's log %s: %v, %v", logPath, files, err)
	}
	var size int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatalf("the engine's log (readable as root): %v", err)
		}
		size += fi.Size()
	}
	// Each file may pass max-size by the one message that crossed it.
	const bound = 2*(1<<20) + 2*(64<<10)
	if size > bound || len(files) > 2 {
		t.Errorf("the engine keeps %d bytes in %d files of the sandbox's 200 MB, over the bound of %d in 2", size, len(files), bound)
	}
	if size < 1<<20 {
		t.Errorf("the engine's log holds %d bytes: the output did not reach it (%v)", size, files)
	}
	t.Logf("%d bytes in %v", size, files)
}

// The warm pool's containers run the agent too, so the engine logs nothing of them
// whatever the profile's log (the default, json-file, here); without the agent a profile
// may keep none.
func TestPoolAndProfilesGetTheirLogConfig(t *testing.T) {
	e := newPoolEnv(t, 1, nil)
	ids := e.ready(t, 1)
	if got := e.inspect(t, ids[0]).HostConfig.LogConfig; got.Type != "none" || len(got.Config) != 0 {
		t.Errorf("pool container's log config = %+v, want none", got)
	}
	plain := newEnv(t, func(c *docker.Config) {
		noAgent(c)
		c.Profiles = testProfiles(t, profile.Agents{Default: profile.Spec{Log: profile.Log{Driver: "none"}}})
	})
	opts, err := plain.rt.CreateOptions(newSpec(""), plain.root)
	if err != nil {
		t.Fatal(err)
	}
	if got := opts.HostConfig.LogConfig; got.Type != "none" || len(got.Config) != 0 {
		t.Errorf("log config of a profile that keeps none = %+v", got)
	}
}
