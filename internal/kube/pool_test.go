package kube_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/metrictest"
)

// pooledFixture is a runtime whose default profile keeps a warm pool of min Pods, its
// metrics read from an in-memory reader. Its pool is started, and drained at the test's
// end.
type pooledFixture struct {
	fixture
	reader *sdkmetric.ManualReader
}

func newPooled(t *testing.T, min int, edit ...func(*kube.Config)) pooledFixture {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	spec := testProfile()
	spec.Pool = profile.Pool{Min: min}
	f := newRuntime(t, profile.Agents{Default: spec}, append([]func(*kube.Config){func(c *kube.Config) {
		c.PoolCheckInterval = 200 * time.Millisecond
		c.MeterProvider = mp
	}}, edit...)...)
	return pooledFixture{fixture: f, reader: reader}
}

// start starts the pool of rt and drains it when the test ends.
func (f fixture) start(t *testing.T, rt *kube.Runtime) {
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

// pooled lists the unclaimed pool Pods of the instance (of any pool) that run, and the
// pool's claims.
func (f fixture) pooled(t *testing.T) (pods, claims []string) {
	t.Helper()
	sel := kube.LabelInstance + "=" + f.cfg.Instance + "," + kube.LabelPool
	list, err := f.cs.CoreV1().Pods(f.ns).List(context.Background(), metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			pods = append(pods, p.Name)
		}
	}
	cl, err := f.cs.CoreV1().PersistentVolumeClaims(f.ns).List(context.Background(), metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cl.Items {
		if c.DeletionTimestamp == nil {
			claims = append(claims, c.Name)
		}
	}
	slices.Sort(pods)
	slices.Sort(claims)
	return pods, claims
}

// ready waits until the pool reports n ready Pods, and n pool Pods with a claim each
// exist, and returns their names.
func (f pooledFixture) ready(t *testing.T, n int) []string {
	t.Helper()
	var pods []string
	eventually(t, 2*time.Minute, "a pool of ready pods", func() bool {
		pods = f.readyNow(t, n)
		return pods != nil
	})
	return pods
}

// readyNow returns the pool's Pods if it holds n ready ones with a claim each, else nil.
func (f pooledFixture) readyNow(t *testing.T, n int) []string {
	t.Helper()
	pods, claims := f.pooled(t)
	fill := f.rt.PoolFill()
	if len(fill) == 1 && fill[0].Ready == n && len(pods) == n && slices.Equal(pods, claims) {
		return pods
	}
	return nil
}

func (f pooledFixture) metric(t *testing.T, name string, want ...string) float64 {
	t.Helper()
	return metrictest.Value(t, f.reader, name, want...)
}

func (f fixture) pod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	p, err := f.cs.CoreV1().Pods(f.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The warm pool's story on the cluster: pooled Pods are made as hardened as cold ones; a
// chat without a workspace gets one by relabelling, with its pre-made claim as the chat's
// workspace, and the pool refills; the reconciler and the watch leave unclaimed Pods alone
// and see a claimed one as its chat's; a dead pooled Pod is replaced; a chat that has a
// workspace gets a cold create on it and keeps its files; the drain removes the pool's
// Pods, claims and Lease, never a chat's.
func TestWarmPool(t *testing.T) {
	f := newPooled(t, 2)
	ctx := context.Background()
	var (
		mu   sync.Mutex
		ends []lifecycle.Ending
	)
	wctx, stopWatch := context.WithCancel(ctx)
	watched := make(chan error, 1)
	connected := make(chan struct{})
	go func() {
		watched <- f.rt.Watch(wctx, func() { close(connected) }, func(e lifecycle.Ending) {
			mu.Lock()
			ends = append(ends, e)
			mu.Unlock()
		})
	}()
	defer func() {
		stopWatch()
		if err := <-watched; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch: %v", err)
		}
	}()
	<-connected
	f.start(t, f.rt)
	pooled := f.ready(t, 2)
	clk := &clock{now: time.Now()}
	svc := service(t, f.rt, clk)

	// Hardened like a cold Pod: the same spec but for the claim's name and the deadline,
	// which is set at the claim.
	other := profileSpecOf(t, f)
	pooledSpec := f.pod(t, pooled[0]).Spec
	if pooledSpec.ActiveDeadlineSeconds != nil {
		t.Errorf("an unclaimed pod has a deadline: %d", *pooledSpec.ActiveDeadlineSeconds)
	}
	pooledSpec.ActiveDeadlineSeconds = other.ActiveDeadlineSeconds
	for i := range pooledSpec.Volumes {
		if c := pooledSpec.Volumes[i].PersistentVolumeClaim; c != nil {
			if c.ClaimName != pooled[0] {
				t.Errorf("pooled pod %s mounts claim %s, want its own", pooled[0], c.ClaimName)
			}
			c.ClaimName = other.Volumes[i].PersistentVolumeClaim.ClaimName
		}
	}
	if !apiequality.Semantic.DeepEqual(pooledSpec, *other) {
		t.Errorf("a pooled pod's spec differs from a cold one's:\npooled %+v\ncold   %+v", pooledSpec, *other)
	}

	// A chat without a workspace: served by the pool.
	chat := spec("").ChatID
	t0 := time.Now()
	s, outcome, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat})
	took := time.Since(t0)
	if err != nil || outcome != lifecycle.Created {
		t.Fatalf("Create = %v, %v", outcome, err)
	}
	if !slices.Contains(pooled, s.ContainerID) {
		t.Fatalf("the create made %s, not one of the pool's %v", s.ContainerID, pooled)
	}
	t.Logf("a create served by the pool took %s", took)
	if hits := f.metric(t, "sandbox.pool.hits", "profile=default"); hits != 1 {
		t.Errorf("sandbox.pool.hits = %g, want 1", hits)
	}
	claimed := f.pod(t, s.ContainerID)
	switch {
	case claimed.Labels[kube.LabelChatID] != chat.String() || claimed.Labels[kube.LabelSessionID] != s.ID.String():
		t.Errorf("claimed pod labels %v: want the chat's and session's", claimed.Labels)
	case claimed.Labels[kube.LabelPool] != "" || claimed.Labels[kube.LabelPoolOwner] != "":
		t.Errorf("claimed pod labels %v: still the pool's", claimed.Labels)
	case claimed.Annotations[kube.AnnotationExpiresAt] == "":
		t.Errorf("claimed pod annotations %v: no expiry", claimed.Annotations)
	case claimed.Spec.ActiveDeadlineSeconds == nil || *claimed.Spec.ActiveDeadlineSeconds < 3600 || *claimed.Spec.ActiveDeadlineSeconds > 3600+300:
		t.Errorf("claimed pod deadline %v: want max_lifetime (3600 s) past its age", claimed.Spec.ActiveDeadlineSeconds)
	}
	claim, err := f.cs.CoreV1().PersistentVolumeClaims(f.ns).Get(ctx, s.ContainerID, metav1.GetOptions{})
	if err != nil || claim.Labels[kube.LabelChatID] != chat.String() || claim.Labels[kube.LabelPool] != "" {
		t.Fatalf("the pooled claim is not the chat's: %v, %v", claim.Labels, err)
	}
	if res, err := svc.Exec(ctx, lifecycle.ExecRequest{ChatID: chat, Cmd: []string{"sh", "-c", "echo kept > /workspace/f"}}); err != nil || res.ExitCode != 0 {
		t.Fatalf("Exec = %+v, %v", res, err)
	}
	var refilled []string
	eventually(t, 2*time.Minute, "the pool refilled", func() bool {
		refilled = f.readyNow(t, 2)
		return refilled != nil && !slices.Contains(refilled, s.ContainerID)
	})

	// The reconciler: nothing to remove, the pool untouched.
	clk.Add(2 * time.Second) // past the grace period
	if rep, err := svc.Reconcile(ctx); err != nil || rep.OrphansRemoved != 0 || rep.Containers != 1 || rep.Errors != 0 {
		t.Fatalf("Reconcile = %+v, %v; want the claimed pod alone, nothing removed", rep, err)
	}
	if pods, _ := f.pooled(t); !slices.Equal(pods, refilled) {
		t.Fatalf("pool pods after Reconcile %v, want %v", pods, refilled)
	}

	// A pooled Pod that dies is replaced, and the watch does not report it.
	zero := int64(0)
	if err := f.cs.CoreV1().Pods(f.ns).Delete(ctx, refilled[0], metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the dead pooled pod replaced", func() bool {
		now := f.readyNow(t, 2)
		return now != nil && !slices.Contains(now, refilled[0])
	})

	// A chat with a workspace keeps it: delete, then a cold create on the same claim.
	if del, err := svc.Delete(ctx, chat); err != nil || del.Result != lifecycle.Deleted {
		t.Fatalf("Delete = %+v, %v", del, err)
	}
	before, _ := f.pooled(t)
	again, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat})
	if err != nil {
		t.Fatalf("Create again: %v", err)
	}
	if slices.Contains(before, again.ContainerID) || strings.HasPrefix(again.ContainerID, "sandboxd-pool-") {
		t.Errorf("the chat with a workspace got pooled pod %s", again.ContainerID)
	}
	if misses := f.metric(t, "sandbox.pool.misses", "reason=claim_exists"); misses != 1 {
		t.Errorf("sandbox.pool.misses{claim_exists} = %g, want 1", misses)
	}
	var out strings.Builder
	if res, err := svc.Exec(ctx, lifecycle.ExecRequest{ChatID: chat, Cmd: []string{"cat", "/workspace/f"}, Stdout: &out}); err != nil || res.ExitCode != 0 || out.String() != "kept\n" {
		t.Fatalf("the chat's file after a new sandbox: %q %+v %v", out.String(), res, err)
	}
	if after, _ := f.pooled(t); !slices.Equal(after, before) {
		t.Errorf("pool pods %v after a cold create, want %v untouched", after, before)
	}

	// The same chat id under another tenant has no workspace there: it is served by the
	// pool, on a claim of that tenant's, and never sees the other's files.
	if del, err := svc.Delete(ctx, chat); err != nil || del.Result != lifecycle.Deleted {
		t.Fatalf("Delete = %+v, %v", del, err)
	}
	tctx := sandbox.WithTenant(ctx, "team_b")
	theirs, _, err := svc.Create(tctx, lifecycle.CreateRequest{ChatID: chat})
	if err != nil || !slices.Contains(before, theirs.ContainerID) {
		t.Fatalf("Create of the chat id under another tenant = %+v, %v; want one of the pool's %v", theirs, err, before)
	}
	if claim, err := f.cs.CoreV1().PersistentVolumeClaims(f.ns).Get(ctx, theirs.ContainerID, metav1.GetOptions{}); err != nil ||
		claim.Annotations[kube.AnnotationTenant] != "team_b" || claim.Labels[kube.LabelChatID] != chat.String() {
		t.Fatalf("the other tenant's pooled claim: %v, %v", claim, err)
	}
	if pod := f.pod(t, theirs.ContainerID); pod.Annotations[kube.AnnotationTenant] != "team_b" {
		t.Errorf("the other tenant's pod annotations %v", pod.Annotations)
	}
	if res, err := svc.Exec(tctx, lifecycle.ExecRequest{ChatID: chat, Cmd: []string{"test", "!", "-e", "/workspace/f"}}); err != nil || res.ExitCode != 0 {
		t.Errorf("the other tenant sees the first tenant's file: %+v, %v", res, err)
	}

	// The watch saw the claimed Pod's removal as its chat's, and no pooled Pod at all.
	mu.Lock()
	for _, e := range ends {
		if strings.HasPrefix(e.ContainerID, "sandboxd-pool-") && e.ContainerID != s.ContainerID {
			t.Errorf("the watch reported unclaimed pod %+v", e)
		}
	}
	mu.Unlock()
	eventually(t, time.Minute, "the claimed pod's removal reported as the chat's", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.ContainsFunc(ends, func(e lifecycle.Ending) bool {
			return e.ContainerID == s.ContainerID && e.Removed && e.ChatID == chat && e.SessionID == s.ID
		})
	})

	// The drain: the pool's Pods, claims and Lease go; the chat's claim (a pool's name)
	// and sandbox stay.
	if err := f.rt.DrainPool(ctx); err != nil {
		t.Fatalf("DrainPool: %v", err)
	}
	eventually(t, time.Minute, "the pool's pods and claims gone", func() bool {
		pods, claims := f.pooled(t)
		return len(pods) == 0 && len(claims) == 0
	})
	if leases, err := f.cs.CoordinationV1().Leases(f.ns).List(ctx, metav1.ListOptions{}); err != nil || len(leases.Items) != 0 {
		t.Errorf("leases after the drain: %v, %v", leases, err)
	}
	if _, err := f.cs.CoreV1().PersistentVolumeClaims(f.ns).Get(ctx, s.ContainerID, metav1.GetOptions{}); err != nil {
		t.Errorf("the chat's claim after the drain: %v", err)
	}
	if !podExists(t, f.fixture, theirs.ContainerID) {
		t.Error("the chat's sandbox is gone after the drain")
	}
	if _, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: spec("").ChatID}); err != nil {
		t.Errorf("a cold create after the drain: %v", err)
	}
}

// profileSpecOf is the spec of a cold Pod of f's profile, made by a runtime like f's
// without a pool, and removed again.
func profileSpecOf(t *testing.T, f pooledFixture) *corev1.PodSpec {
	t.Helper()
	cfg := f.cfg
	cfg.Profiles = unpooled(t)
	cold, err := kube.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := fixture{rt: cold, cs: f.cs, ns: f.ns, cfg: cfg}.create(t, spec(""))
	p := f.pod(t, got.ContainerID)
	if err := cold.Delete(context.Background(), got.ContainerID); err != nil {
		t.Fatal(err)
	}
	return &p.Spec
}

// unpooled is testProfile without a pool.
func unpooled(t *testing.T) *profile.Set {
	t.Helper()
	set, err := profile.New(profile.Agents{Default: testProfile()})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// Leftovers: a live pool's Pods are never another's to remove; once it dies (its Lease
// expires), another pool of the instance removes its unclaimed Pods, claims and Lease,
// and leaves what a chat claimed from it.
func TestWarmPoolLeftovers(t *testing.T) {
	a := newPooled(t, 1)
	kube.SetPoolLease(a.rt, 2*time.Second)
	a.start(t, a.rt)
	aPods := a.ready(t, 1)
	s := a.create(t, spec("")) // claims aPods[0]; A refills
	if s.ContainerID != aPods[0] {
		t.Fatalf("create got %s, want the pooled %s", s.ContainerID, aPods[0])
	}
	aPool := a.ready(t, 1) // A's refill

	// B starts beside a live A: A's pool stays.
	b, err := kube.New(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	kube.SetPoolLease(b, 2*time.Second)
	a.start(t, b)
	eventually(t, 2*time.Minute, "B's pool ready", func() bool { return b.PoolFill()[0].Ready == 1 })
	both, _ := a.pooled(t)
	if len(both) != 2 || !slices.Contains(both, aPool[0]) {
		t.Fatalf("pool pods %v beside a live pool, want A's %s and B's", both, aPool[0])
	}
	bPool := slices.DeleteFunc(slices.Clone(both), func(n string) bool { return n == aPool[0] })
	time.Sleep(3 * time.Second) // past a lease period: A renews, B judges it alive
	if now, _ := a.pooled(t); !slices.Equal(now, both) {
		t.Fatalf("pool pods %v, want %v: B removed a live pool's", now, both)
	}

	// A dies: B removes its leftovers once A's Lease has expired.
	kube.AbandonPool(a.rt)
	eventually(t, time.Minute, "A's leftovers removed", func() bool {
		pods, claims := a.pooled(t)
		return slices.Equal(pods, bPool) && slices.Equal(claims, bPool)
	})
	leases, err := a.cs.CoordinationV1().Leases(a.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(leases.Items) != 1 {
		t.Errorf("leases %v, %v: want B's alone", leases, err)
	}
	if !podExists(t, a.fixture, s.ContainerID) {
		t.Error("the pod a chat claimed from the dead pool was removed")
	}
	if _, err := a.cs.CoreV1().PersistentVolumeClaims(a.ns).Get(context.Background(), s.ContainerID, metav1.GetOptions{}); err != nil {
		t.Errorf("the claim a chat claimed from the dead pool: %v", err)
	}
}

// eventually asks cond every 100 ms (each ask lists objects: the API server is not
// hammered) until it holds, and fails t with what when within passes first.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
	}
}
