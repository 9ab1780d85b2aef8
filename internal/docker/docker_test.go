package docker_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/google/uuid"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is one test's runtime: its own instance id and volume root, on the real engine.
type env struct {
	rt       *docker.Runtime
	profiles *profile.Set // rt's
	cli      *client.Client
	root     string
	inst     string
}

// testProfiles resolves a for a test: the default profile runs the test image unless it
// names another.
func testProfiles(t testing.TB, a profile.Agents) *profile.Set {
	t.Helper()
	if a.Default.Image == "" {
		a.Default.Image = dockertest.ImageRef
	}
	s, err := profile.New(a)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newEnv(t testing.TB, tweak func(*docker.Config)) env {
	t.Helper()
	cli := dockertest.Client(t)
	image := dockertest.Image(t, cli)
	inst := dockertest.Instance(t, cli)
	root := filepath.Join(t.TempDir(), "vol")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := docker.Config{
		Instance:    inst,
		Registry:    registryOf(inst),
		VolumeRoot:  root,
		Profiles:    testProfiles(t, profile.Agents{Default: profile.Spec{Image: image}}),
		StopTimeout: time.Second,
		AgentPath:   dockertest.Agent(t),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	rt, err := docker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	if err := rt.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	return env{rt: rt, profiles: cfg.Profiles, cli: cli, root: root, inst: inst}
}

// registryOf is the registry id a test's runtime labels its sandboxes with.
func registryOf(instance string) string { return "registry-of-" + instance }

func newSpec(volume string) lifecycle.CreateSpec {
	now := time.Now().UTC().Truncate(time.Second)
	return lifecycle.CreateSpec{
		SessionID:      uuid.New(),
		ChatID:         uuid.New(),
		VolumeHostPath: volume,
		CreatedAt:      now,
		ExpiresAt:      now.Add(time.Hour),
	}
}

// create makes a sandbox through the runtime, as the lifecycle would after Admit.
func (e env) create(t testing.TB, spec lifecycle.CreateSpec) sandbox.Session {
	t.Helper()
	ctx := context.Background()
	volume, err := e.rt.Admit(ctx, spec.Tenant, spec.ChatID, spec.AgentID, spec.VolumeHostPath)
	if err != nil {
		t.Fatalf("Admit: %v", err)
	}
	spec.VolumeHostPath = volume
	s, err := e.rt.Create(ctx, spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	dockertest.RemoveAtCleanup(t, e.cli, s.ContainerID)
	return s
}

func (e env) inspect(t *testing.T, id string) container.InspectResponse {
	t.Helper()
	res, err := e.cli.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatalf("inspect %s: %v", id, err)
	}
	return res.Container
}

func (e env) assertGone(t *testing.T, id string) {
	t.Helper()
	_, err := e.cli.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if !cerrdefs.IsNotFound(err) {
		t.Errorf("container %s still there (inspect: %v)", id, err)
	}
}

func (e env) assertNoContainers(t *testing.T) {
	t.Helper()
	if ids := dockertest.Containers(t, e.cli, docker.LabelInstance+"="+e.inst); len(ids) != 0 {
		t.Errorf("containers left: %v", ids)
	}
}

func TestCreateMakesAHardenedSandbox(t *testing.T) {
	e := newEnv(t, nil)
	spec := newSpec("")
	spec.AgentID = "some-agent"
	spec.Tenant = "acme"
	s := e.create(t, spec)

	want := sandbox.Session{
		ID: spec.SessionID, ChatID: spec.ChatID, ContainerID: s.ContainerID,
		Status: sandbox.StatusRunning, CreatedAt: spec.CreatedAt, ExpiresAt: spec.ExpiresAt,
		AgentID: "some-agent", VolumeHostPath: filepath.Join(e.root, ".tenants", "acme", spec.ChatID.String()),
	}
	if s != want || s.ContainerID == "" {
		t.Fatalf("session = %+v\nwant %+v", s, want)
	}

	c := e.inspect(t, s.ContainerID)
	hc, cfg := c.HostConfig, c.Config
	check := func(what string, got, want any) {
		t.Helper()
		if !equal(got, want) {
			t.Errorf("%s = %#v, want %#v", what, got, want)
		}
	}
	check("name", c.Name, "/"+docker.ContainerName(spec.ChatID, spec.SessionID))
	check("running", c.State.Running, true)
	check("image", cfg.Image, dockertest.ImageRef)
	check("labels", cfg.Labels, map[string]string{
		docker.LabelManagedBy: docker.ManagedBy,
		docker.LabelInstance:  e.inst,
		docker.LabelChatID:    spec.ChatID.String(),
		docker.LabelSessionID: spec.SessionID.String(),
		docker.LabelAgentID:   "some-agent",
		docker.LabelRegistry:  registryOf(e.inst),
		docker.LabelWorkspace: want.VolumeHostPath,
		docker.LabelCreatedAt: spec.CreatedAt.Format(time.RFC3339Nano),
		docker.LabelExpiresAt: spec.ExpiresAt.Format(time.RFC3339Nano),
		docker.LabelTenant:    "acme",
	})
	check("user", cfg.User, "1000:1000")
	check("init", hc.Init != nil && *hc.Init, true)
	check("cap drop", hc.CapDrop, []string{"ALL"})
	check("cap add", len(hc.CapAdd), 0)
	check("security opt", hc.SecurityOpt, []string{"no-new-privileges"})
	check("read-only root", hc.ReadonlyRootfs, true)
	check("privileged", hc.Privileged, false)
	check("tmpfs", hc.Tmpfs, map[string]string{"/tmp": "rw,nosuid,nodev,size=67108864,mode=1777"})
	check("memory", hc.Memory, int64(512<<20))
	check("memory swap", hc.MemorySwap, int64(512<<20))
	check("nano cpus", hc.NanoCPUs, int64(1e9))
	check("pids limit", hc.PidsLimit != nil && *hc.PidsLimit == 256, true)
	check("network", string(hc.NetworkMode), "none")
	check("pid mode", string(hc.PidMode), "")
	check("ipc mode", string(hc.IpcMode), "private")
	check("uts mode", string(hc.UTSMode), "")
	check("userns mode", string(hc.UsernsMode), "")
	check("cgroupns mode", string(hc.CgroupnsMode), "private")
	check("restart", string(hc.RestartPolicy.Name), "no")
	check("binds", len(hc.Binds), 0)
	check("devices", len(hc.Devices), 0)
	check("volumes from", len(hc.VolumesFrom), 0)
	check("host config mounts", hc.Mounts, []mount.Mount{{
		Type: mount.TypeBind, Source: want.VolumeHostPath, Target: "/workspace",
		BindOptions: &mount.BindOptions{Propagation: mount.PropagationPrivate, NonRecursive: true},
	}, {
		Type: mount.TypeBind, Source: dockertest.Agent(t), Target: docker.AgentTarget, ReadOnly: true,
		BindOptions: &mount.BindOptions{Propagation: mount.PropagationPrivate, NonRecursive: true},
	}})
	// What the engine really mounted: the workspace and the agent's binary (read-only),
	// nothing else from the host.
	if len(c.Mounts) != 2 {
		t.Fatalf("mounts = %+v, want the workspace and the agent", c.Mounts)
	}
	slices.SortFunc(c.Mounts, func(a, b container.MountPoint) int { return strings.Compare(b.Destination, a.Destination) })
	if a := c.Mounts[1]; a.Destination != docker.AgentTarget || a.RW || a.Source != dockertest.Agent(t) {
		t.Errorf("agent mount = %+v, want %s read-only at %s", a, dockertest.Agent(t), docker.AgentTarget)
	}
	m := c.Mounts[0]
	check("mount type", m.Type, mount.TypeBind)
	check("mount source", m.Source, want.VolumeHostPath)
	check("mount destination", m.Destination, "/workspace")
	check("mount propagation", m.Propagation, mount.PropagationPrivate)
	check("mount rw", m.RW, true)

	fi, err := os.Stat(want.VolumeHostPath)
	if err != nil {
		t.Fatalf("derived workspace: %v", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	check("workspace mode", fi.Mode().Perm(), os.FileMode(0o700))
	check("workspace owner", [2]uint32{st.Uid, st.Gid}, [2]uint32{1000, 1000})
}

func equal(a, b any) bool {
	switch a := a.(type) {
	case []string:
		return slices.Equal(a, b.([]string))
	case map[string]string:
		b := b.(map[string]string)
		if len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if bv, ok := b[k]; !ok || bv != v {
				return false
			}
		}
		return true
	case []mount.Mount:
		b := b.([]mount.Mount)
		return len(a) == len(b) && (len(a) == 0 ||
			(a[0].Type == b[0].Type && a[0].Source == b[0].Source && a[0].Target == b[0].Target &&
				!a[0].ReadOnly && a[0].BindOptions != nil && *a[0].BindOptions == *b[0].BindOptions))
	}
	return a == b
}

func TestInsideTheSandbox(t *testing.T) {
	e := newEnv(t, func(c *docker.Config) {
		c.Profiles = testProfiles(t, profile.Agents{Default: profile.Spec{PIDs: 32}})
	})
	s := e.create(t, newSpec(""))
	run := func(cmd ...string) (string, int) {
		t.Helper()
		return dockertest.Exec(t, e.cli, s.ContainerID, cmd...)
	}

	t.Run("not root", func(t *testing.T) {
		out, code := run("id", "-u")
		if code != 0 || strings.TrimSpace(out) == "0" {
			t.Errorf("id -u = %q (exit %d), want a non-root uid", out, code)
		}
	})
	t.Run("root file system is read-only", func(t *testing.T) {
		for _, p := range []string{"/x", "/etc/passwd", "/bin/evil"} {
			if out, code := run("sh", "-c", "echo x > "+p); code == 0 {
				t.Errorf("writing %s succeeded: %q", p, out)
			}
		}
	})
	t.Run("workspace and tmp are writable", func(t *testing.T) {
		if out, code := run("sh", "-c", "echo hi > /workspace/hello && echo hi > /tmp/hello"); code != 0 {
			t.Fatalf("write: %q (exit %d)", out, code)
		}
		b, err := os.ReadFile(filepath.Join(s.VolumeHostPath, "hello"))
		if err != nil || string(b) != "hi\n" {
			t.Errorf("host sees %q, %v", b, err)
		}
	})
	t.Run("tmp is size-capped", func(t *testing.T) {
		out, code := run("sh", "-c", "dd if=/dev/zero of=/tmp/big bs=1M count=100; rm -f /tmp/big")
		if !strings.Contains(out, "No space left") {
			t.Errorf("writing 100 MiB to /tmp: %q (exit %d), want no space left", out, code)
		}
	})
	t.Run("only loopback", func(t *testing.T) {
		out, code := run("ls", "/sys/class/net")
		if code != 0 || strings.Join(strings.Fields(out), " ") != "lo" {
			t.Errorf("interfaces = %q (exit %d), want lo only", out, code)
		}
	})
	t.Run("host is unreachable", func(t *testing.T) {
		port := listen(t)
		for _, host := range hostAddrs(t) {
			out, code := run("sh", "-c", "nc -w 2 "+host+" "+port+" </dev/null")
			if code == 0 || !strings.Contains(out, "Network is unreachable") {
				t.Errorf("nc %s %s: %q (exit %d), want network unreachable", host, port, out, code)
			}
		}
		// 127.0.0.1 is the sandbox's own loopback, not the host's.
		if out, code := run("sh", "-c", "nc -w 2 127.0.0.1 "+port+" </dev/null"); code == 0 {
			t.Errorf("nc 127.0.0.1 %s reached the host: %q", port, out)
		}
	})
	t.Run("no capabilities", func(t *testing.T) {
		out, _ := run("grep", "Cap", "/proc/self/status")
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] != "CapBnd:" && f[1] != "0000000000000000" {
				t.Errorf("%s", line)
			}
		}
		if !strings.Contains(out, "CapBnd:\t0000000000000000") {
			t.Errorf("bounding set not empty:\n%s", out)
		}
	})
	t.Run("no new privileges, seccomp filter on", func(t *testing.T) {
		out, _ := run("grep", "-E", "^(NoNewPrivs|Seccomp):", "/proc/self/status")
		if got := strings.Join(strings.Fields(out), " "); got != "NoNewPrivs: 1 Seccomp: 2" {
			t.Errorf("status = %q, want NoNewPrivs 1 and Seccomp 2 (filter)", got)
		}
	})
	t.Run("init is PID 1", func(t *testing.T) {
		out, _ := run("cat", "/proc/1/cmdline")
		if !strings.HasPrefix(out, "/sbin/docker-init") && !strings.HasPrefix(out, "/dev/init") {
			t.Errorf("PID 1 is %q, want docker's init", out)
		}
	})
	t.Run("fork bomb hits the pids limit", func(t *testing.T) {
		// Through the agent (the runtime's exec): on this host the engine refuses the
		// exec right after the bomb (exit 126, pids still exhausted) for 17-31 s.
		run := func(cmd ...string) (string, int) {
			t.Helper()
			code, out := runThroughAgent(t, e, s.ContainerID, cmd...)
			return out, code
		}
		out, _ := run("sh", "-c", `i=0; while [ $i -lt 100 ]; do sleep 3 & i=$((i+1)); done; wait`)
		if !strings.Contains(out, "can't fork") && !strings.Contains(out, "Resource temporarily unavailable") {
			t.Errorf("100 processes under a limit of 32: %q", out)
		}
		// The sandbox survives it.
		if out, code := run("true"); code != 0 {
			t.Errorf("after the fork bomb: %q (exit %d)", out, code)
		}
	})
}

// listen accepts (and at once closes) TCP connections on every host address until the
// test ends, and returns the port.
func listen(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// The probe above proves something only if it would see a leak: with a profile that has
// a network, the same nc reaches the host.
func TestHostProbeSeesANetworkedProfile(t *testing.T) {
	e := newEnv(t, func(c *docker.Config) {
		c.Profiles = testProfiles(t, profile.Agents{Default: profile.Spec{Network: "bridge"}})
	})
	s := e.create(t, newSpec(""))
	port := listen(t)
	gateway := e.inspect(t, s.ContainerID).NetworkSettings.Networks["bridge"].Gateway.String()
	if out, code := dockertest.Exec(t, e.cli, s.ContainerID,
		"sh", "-c", "nc -w 2 "+gateway+" "+port+" </dev/null"); code != 0 {
		t.Errorf("nc %s %s from a bridged sandbox: %q (exit %d)", gateway, port, out, code)
	}
}

// hostAddrs returns the host's non-loopback IPv4 addresses, the docker0 bridge among them.
func hostAddrs(t *testing.T) []string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			out = append(out, n.IP.String())
		}
	}
	return out
}

func TestStopAndDeleteLeaveNothing(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()

	stopped := e.create(t, newSpec(""))
	if err := e.rt.Stop(ctx, stopped.ContainerID); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	e.assertGone(t, stopped.ContainerID)
	if _, err := os.Stat(stopped.VolumeHostPath); err != nil {
		t.Errorf("workspace folder after stop: %v", err)
	}

	deleted := e.create(t, newSpec(""))
	if err := e.rt.Delete(ctx, deleted.ContainerID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	e.assertGone(t, deleted.ContainerID)

	for _, id := range []string{stopped.ContainerID, deleted.ContainerID, "0123456789ab"} {
		if err := e.rt.Delete(ctx, id); err != nil {
			t.Errorf("Delete of gone %s: %v", id, err)
		}
		if err := e.rt.Stop(ctx, id); err != nil {
			t.Errorf("Stop of gone %s: %v", id, err)
		}
	}
	e.assertNoContainers(t)
}

// Removals of one sandbox that overlap (a delete and the sweep, two replicas) all
// succeed once it is gone: the engine answers the later ones "removal already in
// progress", which is not an error of theirs.
func TestOverlappingRemovalsAllSucceed(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for range 3 {
		s := e.create(t, newSpec(""))
		errs := make(chan error, 6)
		var wg sync.WaitGroup
		for i := range 6 {
			op := e.rt.Delete
			if i%2 == 1 {
				op = e.rt.Stop
			}
			wg.Go(func() { errs <- op(ctx, s.ContainerID) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("overlapping removal of %s: %v", s.ContainerID, err)
			}
		}
		e.assertGone(t, s.ContainerID)
	}
}

func TestStopAndDeleteRefuseForeignContainers(t *testing.T) {
	e := newEnv(t, nil)
	id := lookAlike(t, e, uuid.New())
	for name, op := range map[string]func(context.Context, string) error{"Stop": e.rt.Stop, "Delete": e.rt.Delete} {
		if err := op(context.Background(), id); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("%s of an unlabelled container = %v, want ErrInvalid", name, err)
		}
	}
	if !e.inspect(t, id).State.Running {
		t.Error("the unlabelled container was stopped")
	}
}

// lookAlike starts a container sandboxd did not make: same image, similar name, no labels.
func lookAlike(t *testing.T, e env, chatID uuid.UUID) string {
	t.Helper()
	ctx := context.Background()
	res, err := e.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:       "sandboxd-" + chatID.String() + "-lookalike",
		Config:     &container.Config{Image: dockertest.ImageRef},
		HostConfig: &container.HostConfig{NetworkMode: "none", Init: new(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	dockertest.RemoveAtCleanup(t, e.cli, res.ID)
	if _, err := e.cli.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	return res.ID
}

func TestManagedListsThisInstanceOnly(t *testing.T) {
	e := newEnv(t, nil)
	other := newEnv(t, nil)
	ctx := context.Background()
	running := e.create(t, newSpec(""))
	stopped := e.create(t, newSpec(""))
	if _, err := e.cli.ContainerStop(ctx, stopped.ContainerID, client.ContainerStopOptions{}); err != nil {
		t.Fatal(err)
	}
	other.create(t, newSpec(""))
	lookAlike(t, e, running.ChatID)

	got, err := e.rt.Managed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]lifecycle.Container{}
	for _, c := range got {
		byID[c.ID] = c
	}
	if len(got) != 2 {
		t.Fatalf("Managed = %+v, want the 2 containers of this instance", got)
	}
	for _, tc := range []struct {
		s       sandbox.Session
		running bool
	}{{running, true}, {stopped, false}} {
		c, ok := byID[tc.s.ContainerID]
		switch {
		case !ok:
			t.Errorf("container %s missing", tc.s.ContainerID)
		case c.ChatID != tc.s.ChatID || c.SessionID != tc.s.ID || c.Running != tc.running:
			t.Errorf("container = %+v, want chat %s session %s running %v", c, tc.s.ChatID, tc.s.ID, tc.running)
		case time.Since(c.CreatedAt) > time.Minute || time.Since(c.CreatedAt) < 0:
			t.Errorf("created at %v", c.CreatedAt)
		// What adoption rebuilds the record from.
		case c.Registry != registryOf(e.inst) || c.AgentID != tc.s.AgentID || c.VolumeHostPath != tc.s.VolumeHostPath ||
			!c.SessionCreatedAt.Equal(tc.s.CreatedAt) || !c.ExpiresAt.Equal(tc.s.ExpiresAt):
			t.Errorf("container = %+v, want the labels of session %+v and registry %s", c, tc.s, registryOf(e.inst))
		}
	}
}

func TestUnknownAgents(t *testing.T) {
	ctx := context.Background()
	chat := uuid.New()
	big := map[string]profile.Spec{"big": {Memory: "1g"}}
	lenient := newEnv(t, func(c *docker.Config) {
		c.Profiles = testProfiles(t, profile.Agents{Profiles: big})
	})
	if _, err := lenient.rt.Admit(ctx, "", chat, "stranger", ""); err != nil {
		t.Errorf("unknown agent with fallback: %v", err)
	}
	strict := newEnv(t, func(c *docker.Config) {
		c.Profiles = testProfiles(t, profile.Agents{Profiles: big, RefuseUnknown: true})
	})
	if _, err := strict.rt.Admit(ctx, "", chat, "stranger", ""); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("unknown agent refused: %v, want ErrInvalid", err)
	}
	if _, err := strict.rt.Admit(ctx, "", chat, "", ""); err != nil {
		t.Errorf("no agent uses the default profile: %v", err)
	}
	spec := newSpec("")
	spec.AgentID = "big"
	s := strict.create(t, spec)
	if got := strict.inspect(t, s.ContainerID).HostConfig.Memory; got != 1<<30 {
		t.Errorf("memory of agent big = %d", got)
	}
}

func TestNewRefusesAnIncompleteConfig(t *testing.T) {
	root := t.TempDir()
	ps := testProfiles(t, profile.Agents{})
	if _, err := docker.New(docker.Config{VolumeRoot: root, Profiles: ps}); err == nil {
		t.Error("no instance id: accepted")
	}
	if _, err := docker.New(docker.Config{Instance: "x", Profiles: ps}); err == nil {
		t.Error("no volume root: accepted")
	}
	if _, err := docker.New(docker.Config{Instance: "x", VolumeRoot: root}); err == nil {
		t.Error("no profiles: accepted")
	}
}

// A stop with a grace sends the sandbox SIGTERM first; without one (docker.stop_timeout
// 0) it is removed at once, killed with SIGKILL as a delete is. Both leave nothing.
func TestStopSignalsOnlyWithAGrace(t *testing.T) {
	for _, grace := range []bool{true, false} {
		e := newEnv(t, func(c *docker.Config) { c.NoStopGrace = !grace })
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		s := e.create(t, newSpec(""))
		res := e.cli.Events(ctx, client.EventsListOptions{Filters: client.Filters{}.
			Add("container", s.ContainerID).Add("event", "kill", "destroy")})
		time.Sleep(200 * time.Millisecond) // the subscription is in place
		if err := e.rt.Stop(ctx, s.ContainerID); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		var signals []string
	read:
		for {
			select {
			case m := <-res.Messages:
				if m.Action == "destroy" {
					break read
				}
				signals = append(signals, m.Actor.Attributes["signal"])
			case err := <-res.Err:
				t.Fatalf("events: %v", err)
			}
		}
		cancel()
		e.assertGone(t, s.ContainerID)
		if termed := slices.Contains(signals, strconv.Itoa(int(syscall.SIGTERM))); termed != grace {
			t.Errorf("grace %v: the engine sent signals %q, want SIGTERM (15) only with a grace", grace, signals)
		}
	}
}
