package docker_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
)

// gVisor is the runsc runtime; scripts/enable-gvisor.sh installs it and registers it with
// the engine (.ci/run does).
const gVisor = "runsc"

// requireRuntime skips the test when the engine lacks the runtime, or fails it with CI=true.
func requireRuntime(t *testing.T, cli *client.Client, name string) {
	t.Helper()
	res, err := cli.Info(context.Background(), client.InfoOptions{})
	if err != nil {
		t.Fatalf("engine info: %v", err)
	}
	if _, ok := res.Info.Runtimes[name]; ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("the engine has no %s runtime, and CI=true (scripts/enable-gvisor.sh registers it)", name)
	}
	t.Skipf("the engine has no %s runtime (scripts/enable-gvisor.sh registers it)", name)
}

// run execs argv in the sandbox and returns its exit code and output.
func run(t *testing.T, e env, id string, argv ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code, err := e.rt.Exec(context.Background(), id, lifecycle.ExecCommand{Cmd: argv, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("exec %q: %v", argv, err)
	}
	return code, out.String()
}

// A profile's runtime is the one its sandboxes run under.
func TestProfileRuntimeIsTheSandboxes(t *testing.T) {
	e := newEnv(t, func(c *docker.Config) {
		c.Profiles = testProfiles(t, profile.Agents{Default: profile.Spec{Runtime: "runc"}})
	})
	if err := e.rt.CheckRuntimes(context.Background()); err != nil {
		t.Fatalf("CheckRuntimes with runc: %v", err)
	}
	s := e.create(t, newSpec(""))
	if got := e.inspect(t, s.ContainerID).HostConfig.Runtime; got != "runc" {
		t.Fatalf("container runtime %q, want runc", got)
	}
}

// A runtime the engine lacks is refused at start-up, naming the runtime and the profile,
// rather than failing every create of that profile.
func TestCheckRuntimesRefusesARuntimeTheEngineLacks(t *testing.T) {
	e := newEnv(t, func(c *docker.Config) {
		c.Profiles = testProfiles(t, profile.Agents{Profiles: map[string]profile.Spec{"strict": {Runtime: "sandboxd-no-such-runtime"}}})
	})
	err := e.rt.CheckRuntimes(context.Background())
	if !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), `"sandboxd-no-such-runtime" of profile "strict"`) {
		t.Fatalf("CheckRuntimes = %v, want ErrInvalid naming the runtime and the profile", err)
	}
}

// A profile that asks for a network under a runtime the engine runs without one (runsc
// registered with --network=none, as scripts/enable-gvisor.sh does) is refused at start-up.
func TestCheckRuntimesRefusesANetworkTheRuntimeCannotGive(t *testing.T) {
	cli := dockertest.Client(t)
	requireRuntime(t, cli, gVisor)
	res, err := cli.Info(context.Background(), client.InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Info.Runtimes[gVisor].Args, "--network=none") {
		t.Skip("runsc is registered with a network of its own here")
	}
	e := newEnv(t, func(c *docker.Config) {
		c.Profiles = testProfiles(t, profile.Agents{Profiles: map[string]profile.Spec{
			"online":  {Runtime: gVisor, Network: "bridge"},
			"offline": {Runtime: gVisor},
			// An egress profile needs a network stack in the sandbox too (its proxy is
			// on the egress network): refused the same way.
			"egress": {Runtime: gVisor, Network: profile.NetworkEgress, Egress: profile.Egress{Allow: []string{"pypi.org"}}},
		}})
	})
	err = e.rt.CheckRuntimes(context.Background())
	if !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), `profile "online" asks for network "bridge"`) ||
		!strings.Contains(err.Error(), `profile "egress" asks for network "egress"`) || strings.Contains(err.Error(), `"offline"`) {
		t.Fatalf("CheckRuntimes = %v, want ErrInvalid for the online and egress profiles only", err)
	}
}

// Under gVisor the sandbox runs on gVisor's kernel, with the same hardening, workspace
// and exec as under runc, and an exec past its deadline is killed there too.
func TestGVisorSandbox(t *testing.T) {
	e := newEnv(t, func(c *docker.Config) {
		c.Profiles = testProfiles(t, profile.Agents{Default: profile.Spec{Runtime: gVisor}})
	})
	requireRuntime(t, e.cli, gVisor)
	if err := e.rt.CheckRuntimes(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := e.create(t, newSpec(""))
	if got := e.inspect(t, s.ContainerID).HostConfig.Runtime; got != gVisor {
		t.Fatalf("container runtime %q, want %s", got, gVisor)
	}

	if code, out := run(t, e, s.ContainerID, "dmesg"); code != 0 || !strings.Contains(out, "gVisor") {
		t.Fatalf("dmesg: exit %d, %q; want gVisor's kernel log", code, out)
	}
	if code, out := run(t, e, s.ContainerID, "id", "-u"); code != 0 || strings.TrimSpace(out) != "1000" {
		t.Errorf("id -u: exit %d, %q; want 1000", code, out)
	}
	// The sandbox user could not write / anyway (root's): read the mount's options.
	if code, out := run(t, e, s.ContainerID, "sh", "-c", `while read -r _ m _ o _; do [ "$m" != / ] || echo "$o"; done </proc/mounts`); code != 0 || !strings.HasPrefix(out, "ro,") {
		t.Errorf("root mount options under gVisor: exit %d, %q; want read-only", code, out)
	}
	if code, out := run(t, e, s.ContainerID, "sh", "-c", "echo from-gvisor > /workspace/f && echo tmp > /tmp/t && cat /tmp/t"); code != 0 || out != "tmp\n" {
		t.Fatalf("write workspace and /tmp: exit %d, %q", code, out)
	}
	b, err := os.ReadFile(filepath.Join(s.VolumeHostPath, "f"))
	if err != nil || string(b) != "from-gvisor\n" {
		t.Fatalf("workspace file on the host: %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(s.VolumeHostPath, "f")); err != nil {
		t.Fatal(err)
	} else if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1000 {
		t.Errorf("workspace file owned by uid %d on the host, want 1000", st.Uid)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err = e.rt.Exec(ctx, s.ContainerID, lifecycle.ExecCommand{Cmd: []string{"sleep", "300"}})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("exec past its deadline: err %v, want DeadlineExceeded", err)
	}
	if _, out := run(t, e, s.ContainerID, "ps"); strings.Contains(out, "sleep 300") {
		t.Fatalf("the timed-out command still runs under gVisor:\n%s", out)
	}

	if err := e.rt.Delete(context.Background(), s.ContainerID); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, s.ContainerID)
}

// The warm pool's claim renames the pooled folder to the chat's while the container runs;
// under gVisor too, the sandbox then writes into the chat's folder.
func TestGVisorPoolClaim(t *testing.T) {
	requireRuntime(t, dockertest.Client(t), gVisor)
	e := newPoolEnv(t, 1, func(a *profile.Agents) { a.Default.Runtime = gVisor })
	before := e.ready(t, 1)
	spec := newSpec("")
	s := e.create(t, spec)
	if !slices.Contains(before, s.ContainerID) {
		t.Fatalf("container %s is not the pool's %v: a cold create, not a hit", s.ContainerID, before)
	}
	if got := e.inspect(t, s.ContainerID).HostConfig.Runtime; got != gVisor {
		t.Fatalf("claimed container runtime %q, want %s", got, gVisor)
	}
	if code, out := run(t, e.env, s.ContainerID, "sh", "-c", "echo claimed > /workspace/f"); code != 0 {
		t.Fatalf("write in the claimed sandbox: exit %d, %q", code, out)
	}
	derived := filepath.Join(e.root, spec.ChatID.String())
	if b, err := os.ReadFile(filepath.Join(derived, "f")); err != nil || string(b) != "claimed\n" {
		t.Fatalf("the chat's folder holds %q, %v", b, err)
	}
}
