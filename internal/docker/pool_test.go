package docker_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/memstore"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
	"github.com/sandboxd/sandboxd/internal/testing/metrictest"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
	"github.com/sandboxd/sandboxd/internal/workspace"
)

// poolEnv is an env whose default profile keeps a warm pool of min containers, with
// metrics read from an in-memory reader.
type poolEnv struct {
	env
	reader *sdkmetric.ManualReader
}

func newPoolEnv(t *testing.T, min int, tweak func(*profile.Agents)) poolEnv {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	e := newEnv(t, func(c *docker.Config) {
		agents := profile.Agents{Default: profile.Spec{Pool: profile.Pool{Min: min}}}
		if tweak != nil {
			tweak(&agents)
		}
		c.Profiles = testProfiles(t, agents)
		c.PoolCheckInterval = 200 * time.Millisecond
		c.MeterProvider = mp
	})
	pe := poolEnv{env: e, reader: reader}
	pe.start(t, e.rt)
	return pe
}

// start starts rt's pool and drains it when the test ends (before the instance's
// containers are removed, since cleanups run last-in first-out).
func (e env) start(t *testing.T, rt *docker.Runtime) {
	t.Helper()
	if err := rt.StartPool(context.Background()); err != nil {
		t.Fatalf("StartPool: %v", err)
	}
	t.Cleanup(func() {
		if err := rt.DrainPool(context.Background()); err != nil {
			t.Errorf("DrainPool: %v", err)
		}
	})
}

// metric returns the value of the named counter or gauge summed over the data points
// whose attributes include want ("key=value" strings).
func (e poolEnv) metric(t *testing.T, name string, want ...string) float64 {
	t.Helper()
	return metricValue(t, e.reader, name, want...)
}

var metricValue = metrictest.Value

// ready waits until the pool reports n ready containers and n unclaimed pool containers
// run on the engine, and returns their ids.
func (e poolEnv) ready(t *testing.T, n int) []string {
	t.Helper()
	var ids []string
	eventually(t, 60*time.Second, func() bool {
		ids = e.pooled(t)
		return e.metric(t, "sandbox.pool.size") == float64(n) && len(ids) == n
	}, "pool of %d ready containers", n)
	return ids
}

// pooled returns the ids of this instance's unclaimed pool containers that run.
func (e env) pooled(t testing.TB) []string {
	t.Helper()
	res, err := e.cli.ContainerList(context.Background(), client.ContainerListOptions{
		Filters: client.Filters{}.Add("label", docker.LabelInstance+"="+e.inst, docker.LabelPool),
	})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range res.Items {
		if strings.HasPrefix(c.Names[0], "/sandboxd-pool-") && c.State == container.StateRunning {
			ids = append(ids, c.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	waitfor.True(t, timeout, fmt.Sprintf(format, args...), cond)
}

func TestPoolHandsOutAPreStartedSandbox(t *testing.T) {
	e := newPoolEnv(t, 2, nil)
	ctx := context.Background()
	before := e.ready(t, 2)

	spec := newSpec("")
	s := e.create(t, spec)
	if !slices.Contains(before, s.ContainerID) {
		t.Fatalf("container %s is not one of the pool's %v: a cold create, not a hit", s.ContainerID, before)
	}
	derived := filepath.Join(e.root, spec.ChatID.String())
	if s.VolumeHostPath != derived || s.ChatID != spec.ChatID || s.ID != spec.SessionID {
		t.Errorf("session = %+v", s)
	}
	if got := e.metric(t, "sandbox.pool.hits", "profile=default"); got != 1 {
		t.Errorf("hits = %v, want 1", got)
	}
	if got := e.metric(t, "sandbox.pool.claim.duration", "profile=default"); got != 1 {
		t.Errorf("claim durations recorded = %v, want 1", got)
	}

	c := e.inspect(t, s.ContainerID)
	if c.Name != "/"+docker.ContainerName(spec.ChatID, spec.SessionID) || !c.State.Running {
		t.Errorf("claimed container: name %s, running %v", c.Name, c.State.Running)
	}

	// The sandbox's /workspace is the chat's folder now: what it writes, the host sees
	// there, and the folder is owned and closed as a cold create's would be.
	if out, code := dockertest.Exec(t, e.cli, s.ContainerID, "sh", "-c", "echo hi > /workspace/hello && id -u"); code != 0 || strings.TrimSpace(out) != "1000" {
		t.Fatalf("write in the sandbox: %q (exit %d)", out, code)
	}
	if b, err := os.ReadFile(filepath.Join(derived, "hello")); err != nil || string(b) != "hi\n" {
		t.Errorf("host sees %q, %v in %s", b, err, derived)
	}
	fi, err := os.Stat(derived)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o700 || st.Uid != 1000 || st.Gid != 1000 {
		t.Errorf("chat folder: mode %v owner %d:%d, want 0700 1000:1000", fi.Mode().Perm(), st.Uid, st.Gid)
	}

	// Hardened exactly like a cold sandbox: same config and host config, but for the
	// labels (a pool container names no chat) and the mount's source as the engine
	// recorded it at creation (the folder has been renamed since).
	cold := e.create(t, newSpec(e.mkdir(t, "explicit")))
	assertSameSandbox(t, c, e.inspect(t, cold.ContainerID))
	if got := c.Config.Labels; got[docker.LabelPool] != "default" || got[docker.LabelChatID] != "" || got[docker.LabelExpiresAt] != "" {
		t.Errorf("pool container labels = %v", got)
	}
	if got, ok := e.inspect(t, cold.ContainerID).Config.Labels[docker.LabelTenant]; ok {
		t.Errorf("a default tenant's sandbox carries the tenant label %q, want none", got)
	}

	// The inventory knows the claimed container by its name, and not the pool's own.
	managed, err := e.rt.Managed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, m := range managed {
		if slices.Contains(before, m.ID) && m.ID != s.ContainerID {
			t.Errorf("Managed lists the unclaimed pool container %s", m.ID)
		}
		if m.ID == s.ContainerID {
			found = true
			if m.ChatID != spec.ChatID || m.SessionID != spec.SessionID || !m.Running {
				t.Errorf("Managed: claimed container = %+v, want chat %s session %s", m, spec.ChatID, spec.SessionID)
			}
			// Enough to adopt it: the registry of its labels, the chat's folder, and the
			// default profile (no agent id).
			if m.Registry != registryOf(e.inst) || m.VolumeHostPath != derived || m.AgentID != "" {
				t.Errorf("Managed: claimed container = %+v, want registry %s, workspace %s, no agent", m, registryOf(e.inst), derived)
			}
		}
	}
	if !found || len(managed) != 2 {
		t.Errorf("Managed = %+v, want the claimed and the cold sandbox", managed)
	}

	// Refilled to min, with a new container.
	after := e.ready(t, 2)
	if slices.Contains(after, s.ContainerID) {
		t.Errorf("the claimed container is still in the pool: %v", after)
	}
}

// assertSameSandbox fails unless pooled and cold were made from the same options, apart
// from labels and the bind mount's source.
func assertSameSandbox(t *testing.T, pooled, cold container.InspectResponse) {
	t.Helper()
	pc, cc := *pooled.Config, *cold.Config
	pc.Labels, cc.Labels = nil, nil
	if !reflect.DeepEqual(pc, cc) {
		t.Errorf("config differs from a cold sandbox's:\npooled %+v\ncold   %+v", pc, cc)
	}
	ph, ch := *pooled.HostConfig, *cold.HostConfig
	ph.Mounts, ch.Mounts = slices.Clone(ph.Mounts), slices.Clone(ch.Mounts)
	// The workspace, then the agent's binary (the same for both).
	if len(ph.Mounts) != 2 || len(ch.Mounts) != 2 || ph.Mounts[1].Target != docker.AgentTarget {
		t.Fatalf("mounts: pooled %+v, cold %+v", ph.Mounts, ch.Mounts)
	}
	ph.Mounts[0].Source, ch.Mounts[0].Source = "", ""
	if !reflect.DeepEqual(ph, ch) {
		t.Errorf("host config differs from a cold sandbox's:\npooled %+v\ncold   %+v", ph, ch)
	}
	if len(pooled.Mounts) != 2 || !slices.ContainsFunc(pooled.Mounts, func(m container.MountPoint) bool { return m.Destination == "/workspace" && m.RW }) {
		t.Errorf("pooled mounts = %+v", pooled.Mounts)
	}
}

func (e env) mkdir(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(e.root, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 1000, 1000); err != nil { // the sandbox user's, as a caller prepares it
		t.Fatal(err)
	}
	return p
}

func TestPoolMissesFallBackToColdCreates(t *testing.T) {
	e := newPoolEnv(t, 1, func(a *profile.Agents) {
		a.Profiles = map[string]profile.Spec{"unpooled": {}}
	})
	pool := e.ready(t, 1)

	existing := newSpec("")
	if err := os.Mkdir(filepath.Join(e.root, existing.ChatID.String()), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(e.root, existing.ChatID.String()), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	unpooled := newSpec("")
	unpooled.AgentID = "unpooled"
	for name, spec := range map[string]lifecycle.CreateSpec{
		"explicit volume":      newSpec(e.mkdir(t, "mine")),
		"existing chat folder": existing,
		"profile without pool": unpooled,
	} {
		s := e.create(t, spec)
		if slices.Contains(pool, s.ContainerID) {
			t.Errorf("%s: got the pool's container", name)
		}
		if got := e.inspect(t, s.ContainerID).Config.Labels[docker.LabelChatID]; got != spec.ChatID.String() {
			t.Errorf("%s: chat label %q: not a cold create", name, got)
		}
	}
	for reason, want := range map[string]float64{"volume": 1, "folder_exists": 1} {
		if got := e.metric(t, "sandbox.pool.misses", "profile=default", "reason="+reason); got != want {
			t.Errorf("misses for %s = %v, want %v", reason, got, want)
		}
	}
	if got := e.metric(t, "sandbox.pool.hits"); got != 0 {
		t.Errorf("hits = %v", got)
	}
	if got := e.pooled(t); !slices.Equal(got, pool) {
		t.Errorf("pool = %v, want it untouched: %v", got, pool)
	}
}

func TestReconcileRemovesAClaimThatWasNeverSaved(t *testing.T) {
	e := newPoolEnv(t, 2, nil)
	ctx := context.Background()
	store := memstore.New()
	svc := e.service(t, store, time.Minute, 10*time.Second)
	e.ready(t, 2)

	// Tracked: created through the service from the pool, so saved.
	tracked, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	// The crash: claimed from the pool, never saved.
	lost := e.create(t, newSpec(""))
	if e.metric(t, "sandbox.pool.hits") != 2 {
		t.Fatalf("hits = %v, want both creates from the pool", e.metric(t, "sandbox.pool.hits"))
	}
	unclaimed := e.pooled(t)

	rep, err := svc.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (lifecycle.ReconcileReport{Containers: 2, Records: 1, OrphansRemoved: 1}); rep != want {
		t.Errorf("report = %+v, want %+v (the pool's own containers unseen)", rep, want)
	}
	e.assertGone(t, lost.ContainerID)
	if !e.inspect(t, tracked.ContainerID).State.Running {
		t.Error("the tracked sandbox was removed")
	}
	for _, id := range unclaimed {
		if _, err := e.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); err != nil {
			t.Errorf("unclaimed pool container %s: %v", id, err)
		}
	}
}

func TestDrainRemovesEveryPoolContainerAndFolder(t *testing.T) {
	e := newPoolEnv(t, 3, nil)
	ctx := context.Background()
	e.ready(t, 3)
	claimed := e.create(t, newSpec(""))
	e.ready(t, 3)

	if err := e.rt.DrainPool(ctx); err != nil {
		t.Fatalf("DrainPool: %v", err)
	}
	if ids := e.pooled(t); len(ids) != 0 {
		t.Errorf("pool containers left: %v", ids)
	}
	if ids := dockertest.Containers(t, e.cli, docker.LabelInstance+"="+e.inst); !slices.Equal(ids, []string{claimed.ContainerID}) {
		t.Errorf("containers after drain = %v, want only the claimed sandbox %s", ids, claimed.ContainerID)
	}
	if entries, err := os.ReadDir(filepath.Join(e.root, workspace.PoolDir)); err != nil || len(entries) != 0 {
		t.Errorf(".pool after drain: %v, %v", entries, err)
	}
	if _, err := os.Stat(claimed.VolumeHostPath); err != nil {
		t.Errorf("claimed sandbox's folder: %v", err)
	}
	// Creates after the drain are cold.
	if s := e.create(t, newSpec("")); e.inspect(t, s.ContainerID).Config.Labels[docker.LabelPool] != "" {
		t.Error("a create after the drain came from the pool")
	}
	if err := e.rt.DrainPool(ctx); err != nil {
		t.Errorf("second DrainPool: %v", err)
	}
}

func TestHealthCheckReplacesADeadPoolContainer(t *testing.T) {
	e := newPoolEnv(t, 2, nil)
	ctx := context.Background()
	before := e.ready(t, 2)
	if _, err := e.cli.ContainerKill(ctx, before[0], client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() bool {
		ids := e.pooled(t)
		_, err := e.cli.ContainerInspect(ctx, before[0], client.ContainerInspectOptions{})
		return len(ids) == 2 && !slices.Contains(ids, before[0]) && err != nil
	}, "the dead container replaced and removed")
	e.ready(t, 2)
}

func TestStartRemovesLeftoversOfADeadPoolOnly(t *testing.T) {
	e := newEnv(t, nil)
	second := func(min int) *docker.Runtime {
		rt, err := docker.New(docker.Config{
			Instance: e.inst, VolumeRoot: e.root, PoolCheckInterval: 200 * time.Millisecond,
			Profiles: testProfiles(t, profile.Agents{Default: profile.Spec{Pool: profile.Pool{Min: min}}}),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rt.Close() })
		return rt
	}
	// A pool that dies without draining (the previous run), and a live one (a replica).
	dead, live := second(2), second(1)
	if err := dead.StartPool(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.start(t, live)
	eventually(t, 60*time.Second, func() bool { return len(e.pooled(t)) == 3 }, "3 pool containers")
	docker.AbandonPool(dead)
	liveIDs := e.pooled(t)
	for deadline := time.Now().Add(30 * time.Second); len(poolEntries(t, e.root)) != 3+2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) { // seen once under heavy load: say what is there
			t.Fatalf(".pool = %v after 30s, want 3 folders and 2 lock files (pool containers: %v)", poolEntries(t, e.root), e.pooled(t))
		}
	}

	// A restart: the new pool removes the dead pool's containers and folders only.
	e.start(t, e.rt)
	left := e.pooled(t)
	if len(left) != 1 {
		t.Fatalf("pool containers after start = %v, want the live pool's one", left)
	}
	if !slices.Contains(liveIDs, left[0]) {
		t.Errorf("left %v is not the live pool's (%v)", left, liveIDs)
	}
	if got := poolEntries(t, e.root); len(got) != 1+2 {
		t.Errorf(".pool = %v, want the live pool's folder and lock, and ours", got)
	}
}

func poolEntries(t *testing.T, root string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, workspace.PoolDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range entries {
		names = append(names, d.Name())
	}
	return names
}

func BenchmarkCreateCold(b *testing.B) { benchmarkCreate(b, 0) }

func BenchmarkCreatePooled(b *testing.B) { benchmarkCreate(b, 4) }

// benchmarkCreate times Runtime.Create of a new chat's sandbox (derived folder), from a
// pool of min containers or cold (min 0). The pool is refilled outside the timer.
func benchmarkCreate(b *testing.B, min int) {
	cli := dockertest.Client(b)
	dockertest.Image(b, cli)
	inst := dockertest.Instance(b, cli)
	root := filepath.Join(b.TempDir(), "vol")
	if err := os.Mkdir(root, 0o755); err != nil {
		b.Fatal(err)
	}
	rt, err := docker.New(docker.Config{
		Instance: inst, VolumeRoot: root, PoolCheckInterval: 100 * time.Millisecond,
		Profiles: testProfiles(b, profile.Agents{Default: profile.Spec{Pool: profile.Pool{Min: min}}}),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rt.Close() })
	ctx := context.Background()
	if err := rt.StartPool(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rt.DrainPool(ctx) })
	waitFull := func() {
		waitfor.True(b, time.Minute, "a full pool", func() bool { return docker.PoolReady(rt) >= min })
	}
	var made []string
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if min > 0 && i%min == 0 {
			b.StopTimer()
			waitFull()
			b.StartTimer()
		}
		spec := newSpec("")
		spec.VolumeHostPath = filepath.Join(root, spec.ChatID.String())
		s, err := rt.Create(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		made = append(made, s.ContainerID)
	}
	b.StopTimer()
	for _, id := range made {
		dockertest.Remove(b, cli, id)
	}
}

// Creates that outrun the pool are cold creates: the pool never grows past pool.max to
// serve them, however many come at once.
func TestCreatesPastAnEmptyPoolAreColdNeverUnbounded(t *testing.T) {
	const max, n = 2, 6
	e := newPoolEnv(t, 1, func(a *profile.Agents) { a.Default.Pool.Max = max })
	e.ready(t, 1)
	ctx := context.Background()
	var (
		wg   sync.WaitGroup
		ids  = make([]string, n)
		errs = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			spec := newSpec("")
			volume, err := e.rt.Admit(ctx, "", spec.ChatID, "", "")
			if err == nil {
				spec.VolumeHostPath = volume
				var s sandbox.Session
				s, err = e.rt.Create(ctx, spec)
				ids[i] = s.ContainerID
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		dockertest.RemoveAtCleanup(t, e.cli, ids[i])
	}
	hits, empty := e.metric(t, "sandbox.pool.hits"), e.metric(t, "sandbox.pool.misses", "reason=empty")
	if hits+empty != n || empty == 0 {
		t.Errorf("hits %v + misses for an empty pool %v, want %d with some misses", hits, empty, n)
	}
	// The pool grows towards max while creates find it empty, never past it.
	for range 10 {
		if got := len(e.pooled(t)); got > max {
			t.Fatalf("%d pool containers, over pool.max %d", got, max)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
