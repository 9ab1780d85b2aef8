package kube

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/poolset"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// The warm pool (profiles with pool.min > 0). A pooled sandbox is a Pod made exactly as a
// cold one from its profile (podFor: same image, limits, user and hardening), with a
// workspace claim of its own made with it; both are named sandboxd-pool-<owner>-<rand>
// and labelled LabelPool and LabelPoolOwner instead of a chat and session, and the Pod
// has no activeDeadlineSeconds until it is claimed.
//
// A create claims one only for a chat that has no workspace claim yet (a chat that had a
// workspace keeps its files: its create is cold, on its claim). The claim relabels: first
// the pooled claim becomes the chat's (LabelChatID, the pool's labels gone), then the Pod
// becomes the session's (chat, session, agent, times and tenant; its deadline set so that
// the cluster ends it max_lifetime after the claim). A Pod cannot be renamed: a claimed
// Pod keeps its pool name, which is the session's container id, and a chat's claim is
// found by its label, whatever its name (chatClaim). Each relabelling is a JSON patch that
// first tests the pool owner's label, so a Pod or claim is handed out at most once.
//
// Managed and Watch select Pods without LabelPool: the reconciler and the watch never see
// an unclaimed Pod, and see a claimed one as its chat's (a crash between the claim and the
// registry's save leaves a Pod of a chat without a record, which the reconciler removes).
//
// Every pool (one per process run, its owner id random) keeps a Lease of its own,
// sandboxd-pool-<owner>, renewed every few seconds and holding 15 s by default: the
// leftovers of a pool whose Lease is missing or expired (a previous run that crashed) are
// removed at start and then at every renewal, and never those of a live pool (another
// replica's). The ready lists, and their invariant (a member is in one at most once and
// leaves it before it is handed out or removed), are poolset.Pool's.

// Labels of pooled Pods, claims and Leases.
const (
	LabelPool             = "sandboxd.pool"         // the profile a pooled Pod or claim was made for (made a label value)
	LabelPoolOwner        = "sandboxd.pool-owner"   // the pool (one per process run) that made it
	AnnotationPoolProfile = "sandboxd.pool-profile" // the profile's name as configured
)

const (
	// DefaultPoolCheckInterval is how often the pool looks at its Pods and renews its
	// Lease by default.
	DefaultPoolCheckInterval = 10 * time.Second
	// poolReadyTimeout bounds how long a pooled Pod may take to become ready.
	poolReadyTimeout = 2 * time.Minute
	// maxRenewInterval bounds how long a pool waits between renewals of its Lease (and
	// looks for dead pools' leftovers): a restarted sandboxd removes what its previous
	// run left within a lease period or so.
	maxRenewInterval = 5 * time.Second
	// minLeaseDuration is the shortest lease a pool takes: a live pool's Lease must not
	// look expired to another replica for a slow renewal or a skewed clock.
	minLeaseDuration = 10 * time.Second
	poolNamePrefix   = "sandboxd-pool-"
)

// pool is the Runtime's warm pool: the refill loops, the ready lists, the claims and the
// instruments are poolset's; making, checking, handing out and removing Pods and claims,
// and the Lease, are here. It is safe for concurrent use.
type pool struct {
	// The members are known by name: each Pod with its claim of the same name.
	*poolset.Pool[string]
	rt       *Runtime
	owner    string
	interval time.Duration // how often the Pods are checked
	renewal  time.Duration // how often the Lease is renewed and dead pools looked for
	lease    time.Duration // how long the Lease holds without a renewal
	leased   atomic.Bool   // the Lease was made (StartPool)
	log      *slog.Logger
}

// profilePool is one profile's share of the pool.
type profilePool = poolset.Profile[string]

// missReasons are the reasons a pooled profile's create was cold.
var missReasons = []string{"claim_exists", "empty", "error"}

func newPool(r *Runtime, cfg Config, mp metric.MeterProvider, log *slog.Logger) (*pool, error) {
	p := &pool{rt: r, owner: randomHex(8), interval: cfg.PoolCheckInterval, log: log}
	if p.interval <= 0 {
		p.interval = DefaultPoolCheckInterval
	}
	p.renewal = min(p.interval, maxRenewInterval)
	p.lease = max(3*p.renewal, minLeaseDuration)
	var err error
	p.Pool, err = poolset.NewPool(poolset.Config[string]{
		Profiles:    r.profiles,
		Meter:       mp.Meter("github.com/sandboxd/sandboxd/internal/kube"),
		MissReasons: missReasons,
		Interval:    p.interval,
		Log:         log,
		ID:          func(name string) string { return name },
		Make:        p.make,
		Dead:        p.dead,
		Destroy:     p.destroy,
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// PoolFill is how full one profile's warm pool is.
type PoolFill = poolset.Fill

// PoolFill reports every pooled profile's fill, in configuration order.
func (r *Runtime) PoolFill() []PoolFill { return r.pool.Fill() }

// StartPool starts the warm pool: it takes the pool's Lease, removes what pools of this
// instance whose Lease expired (previous runs) left, then fills every pooled profile in
// the background, checks its Pods every Config.PoolCheckInterval and renews the Lease,
// until DrainPool. With no profile pooled it only removes the leftovers. An error making
// the Lease means no pool (the error says why); an error removing leftovers is returned
// but the pool runs.
func (r *Runtime) StartPool(ctx context.Context) error {
	p := r.pool
	if err := p.Start(); err != nil {
		return fmt.Errorf("kube: pool: %w", err)
	}
	if !p.Pooled() {
		return p.removeLeftovers(ctx, false)
	}
	if err := p.renew(ctx); err != nil {
		return fmt.Errorf("kube: pool: %w", err)
	}
	p.leased.Store(true)
	leftovers := p.removeLeftovers(ctx, false)
	p.Run(ctx, p.keepLease) // nothing when drained while we cleaned up
	return leftovers
}

// DrainPool stops the pool and removes every Pod and claim it has not handed out, and its
// Lease, waiting for claims in progress first. Creates after it are cold. It is
// idempotent.
func (r *Runtime) DrainPool(ctx context.Context) error {
	p := r.pool
	if !p.Stop() || !p.leased.Load() {
		return nil
	}
	return p.removeLeftovers(ctx, true)
}

// poolLabels are the labels of a pooled Pod or claim of pp.
func (p *pool) poolLabels(pp *profilePool) map[string]string {
	return map[string]string{
		LabelManagedBy: ManagedBy, LabelInstance: p.rt.instance, LabelPool: labelValue(pp.Name), LabelPoolOwner: p.owner,
	}
}

// make creates one pooled Pod of pp's profile, with its claim, and waits until it is
// ready. On failure it removes both. The Pod is made for ctx, which DrainPool ends, but
// removed whatever ctx says.
func (p *pool) make(ctx context.Context, pp *profilePool) (string, error) {
	r := p.rt
	name := poolNamePrefix + p.owner + "-" + randomHex(6)
	if err := r.makeClaim(ctx, name, p.poolLabels(pp), map[string]string{AnnotationPoolProfile: pp.Name}); err != nil {
		return "", errors.Join(fmt.Errorf("kube: pool: %w", err), p.destroy(ctx, name))
	}
	pod := r.podFor(lifecycle.CreateSpec{}, pp.Profile, name)
	pod.Name = name
	pod.Labels = p.poolLabels(pp)
	if r.registry != "" {
		pod.Labels[LabelRegistry] = r.registry
	}
	pod.Annotations = map[string]string{AnnotationPoolProfile: pp.Name}
	pod.Spec.ActiveDeadlineSeconds = nil // set at the claim: the lifetime counts from there
	created, err := r.cs.CoreV1().Pods(r.ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		// The API server may have made it though the answer was lost: removed by name.
		return "", errors.Join(fmt.Errorf("kube: pool: %w", apiError("create pod "+name, err)), p.destroy(ctx, name))
	}
	wctx, cancel := context.WithTimeout(ctx, poolReadyTimeout)
	defer cancel()
	if err := r.waitReady(wctx, created); err != nil {
		return "", errors.Join(fmt.Errorf("kube: pool: %w", err), p.destroy(ctx, name))
	}
	return name, nil
}

// dead returns the ready Pods that no longer run (or are gone).
func (p *pool) dead(ctx context.Context, _ *profilePool, ready []string) []string {
	sel := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy, LabelInstance: p.rt.instance, LabelPoolOwner: p.owner})
	list, err := p.rt.cs.CoreV1().Pods(p.rt.ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil // the cluster is unwell: judge nothing
	}
	pods := make(map[string]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		pods[list.Items[i].Name] = &list.Items[i]
	}
	var dead []string
	for _, name := range ready {
		if pod, ok := pods[name]; !ok || !serving(pod) {
			dead = append(dead, name)
		}
	}
	return dead
}

// serving tells whether a Pod runs, is ready and is not being deleted.
func serving(pod *corev1.Pod) bool {
	if pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range pod.Status.ContainerStatuses {
		if c.Name == containerName {
			return c.Ready && c.State.Running != nil
		}
	}
	return false
}

// destroy removes a pooled Pod and its claim, even when ctx has ended.
func (p *pool) destroy(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
	defer cancel()
	return errors.Join(p.rt.remove(ctx, name, 0), p.rt.deleteClaim(ctx, name, nil))
}

// claim hands out a ready pooled Pod as the RUNNING sandbox of spec, or reports false:
// then a cold create must follow, on the chat's claim if it has one now (a claim that
// failed half-way may have made the pooled claim the chat's). hasWorkspace says the chat
// has a workspace claim already: its files are on it, so no pooled Pod will do.
func (p *pool) claim(ctx context.Context, spec lifecycle.CreateSpec, hasWorkspace bool) (sandbox.Session, bool) {
	cold := func() string {
		if hasWorkspace {
			return "claim_exists"
		}
		return ""
	}
	return p.Claim(ctx, spec, cold, func(ctx context.Context, _ *profilePool, name string) error {
		claimTaken, err := p.handOut(ctx, name, spec)
		if err != nil && claimTaken {
			return poolset.Final(err) // the chat has a claim now: no second one
		}
		return err
	})
}

// jsonPatch is one operation of a JSON patch (RFC 6902).
type jsonPatch struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// handOut makes the pooled Pod name (and its claim) the sandbox of spec: it checks that
// the Pod serves, relabels the claim as the chat's, then the Pod as the session's. On
// failure the Pod is removed; claimTaken says the claim is the chat's by then (it stays:
// the cold create that follows mounts it).
func (p *pool) handOut(ctx context.Context, name string, spec lifecycle.CreateSpec) (claimTaken bool, err error) {
	r := p.rt
	pod, err := r.cs.CoreV1().Pods(r.ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case err != nil:
		err = apiError("get pod "+name, err)
	case !serving(pod):
		err = fmt.Errorf("kube: pool: pod %s does not serve (%s)", name, pod.Status.Phase)
	}
	if err != nil {
		return false, errors.Join(err, p.destroy(ctx, name))
	}
	// Both carry AnnotationPoolProfile until now, so their annotations exist and are
	// added to, never replaced (the cluster keeps its own there).
	owner := jsonPatch{Op: "test", Path: "/metadata/labels/" + LabelPoolOwner, Value: p.owner}
	unpool := jsonPatch{Op: "remove", Path: "/metadata/annotations/" + AnnotationPoolProfile}
	claimLabels, claimAnnotations := r.chatClaimMeta(spec.Tenant, spec.ChatID)
	claimAnnotations[AnnotationLastUsed] = time.Now().UTC().Format(time.RFC3339Nano) // for the retention: in use from now
	ops := []jsonPatch{owner, {Op: "replace", Path: "/metadata/labels", Value: claimLabels}, unpool}
	for k, v := range claimAnnotations {
		ops = append(ops, jsonPatch{Op: "add", Path: "/metadata/annotations/" + k, Value: v})
	}
	if err := r.patch(ctx, "persistentvolumeclaims", name, ops...); err != nil {
		return false, errors.Join(err, p.destroy(ctx, name))
	}

	podLabels := map[string]string{
		LabelManagedBy: ManagedBy, LabelInstance: r.instance,
		LabelChatID: spec.ChatID.String(), LabelSessionID: spec.SessionID.String(),
	}
	if r.registry != "" {
		podLabels[LabelRegistry] = r.registry
	}
	ops = []jsonPatch{owner, {Op: "replace", Path: "/metadata/labels", Value: podLabels}, unpool}
	for k, v := range sessionAnnotations(spec) {
		ops = append(ops, jsonPatch{Op: "add", Path: "/metadata/annotations/" + k, Value: v})
	}
	if r.deadline > 0 {
		// The cluster counts a Pod's deadline from its start: it ends this one
		// max_lifetime after the claim.
		started := pod.CreationTimestamp.Time
		if pod.Status.StartTime != nil {
			started = pod.Status.StartTime.Time
		}
		age := int64(time.Since(started)/time.Second) + 1
		ops = append(ops, jsonPatch{Op: "add", Path: "/spec/activeDeadlineSeconds", Value: age + r.deadline})
	}
	if err := r.patch(ctx, "pods", name, ops...); err != nil {
		// The Pod goes whatever its labels say now; the claim is the chat's.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
		defer cancel()
		return true, errors.Join(err, r.remove(ctx, name, 0))
	}
	return true, nil
}

// patch applies a JSON patch to the Pod or claim name.
func (r *Runtime) patch(ctx context.Context, resource, name string, ops ...jsonPatch) error {
	body, err := json.Marshal(ops)
	if err != nil {
		return fmt.Errorf("kube: patch %s: %w", name, err)
	}
	switch resource {
	case "pods":
		_, err = r.cs.CoreV1().Pods(r.ns).Patch(ctx, name, types.JSONPatchType, body, metav1.PatchOptions{})
	default:
		_, err = r.cs.CoreV1().PersistentVolumeClaims(r.ns).Patch(ctx, name, types.JSONPatchType, body, metav1.PatchOptions{})
	}
	if err != nil {
		return apiError("relabel "+resource+" "+name, err)
	}
	return nil
}

// leaseName is the name of the Lease of the pool owner.
func leaseName(owner string) string { return poolNamePrefix + owner }

// renew makes or renews this pool's Lease.
func (p *pool) renew(ctx context.Context) error {
	r := p.rt
	leases := r.cs.CoordinationV1().Leases(r.ns)
	now := metav1.NowMicro()
	body, err := json.Marshal(map[string]any{"spec": map[string]any{"renewTime": now}})
	if err != nil {
		return err
	}
	_, err = leases.Patch(ctx, leaseName(p.owner), types.MergePatchType, body, metav1.PatchOptions{})
	if !apierrors.IsNotFound(err) {
		if err != nil {
			return apiError("renew lease "+leaseName(p.owner), err)
		}
		return nil
	}
	seconds := int32(p.lease / time.Second)
	holder := p.owner
	_, err = leases.Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: leaseName(p.owner), Labels: map[string]string{
			LabelManagedBy: ManagedBy, LabelInstance: r.instance, LabelPoolOwner: p.owner,
		}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &seconds, AcquireTime: &now, RenewTime: &now},
	}, metav1.CreateOptions{})
	if err != nil {
		return apiError("create lease "+leaseName(p.owner), err)
	}
	return nil
}

// keepLease renews the Lease, and removes the leftovers of dead pools (a pool that died
// just before this one started is judged once its Lease has expired), every renewal
// interval (the leftovers at most once a second).
func (p *pool) keepLease(ctx context.Context) {
	tick := time.NewTicker(p.renewal)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := p.renew(ctx); err != nil && ctx.Err() == nil {
			p.log.WarnContext(ctx, "sandbox_pool_lease_failed", slog.String("error", err.Error()))
		}
		if time.Since(last) >= max(p.renewal, time.Second) {
			last = time.Now()
			if err := p.removeLeftovers(ctx, false); err != nil && ctx.Err() == nil {
				p.log.WarnContext(ctx, "sandbox_pool_remove_failed", slog.String("error", err.Error()))
			}
		}
	}
}

// removeLeftovers removes the pooled Pods and claims of this instance that were never
// claimed and belong to pools whose Lease is missing or expired (dead pools: their
// Leases go too) or, when own is set, to this pool (and its Lease). Those of a dead pool
// are deleted only if unchanged since they were listed, so that a pool judged dead
// wrongly (its renewals late) never loses a Pod it is handing out.
func (p *pool) removeLeftovers(ctx context.Context, own bool) error {
	r := p.rt
	ctx = context.WithoutCancel(ctx) // a drain that started finishes
	ctx, cancel := context.WithTimeout(ctx, 2*teardownTimeout)
	defer cancel()
	inst := labels.Set{LabelManagedBy: ManagedBy, LabelInstance: r.instance}
	leases, err := r.cs.CoordinationV1().Leases(r.ns).List(ctx, metav1.ListOptions{LabelSelector: inst.String()})
	if err != nil {
		return fmt.Errorf("kube: pool: remove leftovers: %w", apiError("list leases", err))
	}
	alive := map[string]bool{}
	var deadLeases []string
	for _, l := range leases.Items {
		owner := l.Labels[LabelPoolOwner]
		if owner == "" {
			continue
		}
		if owner == p.owner {
			alive[owner] = true
			continue
		}
		if l.Spec.RenewTime != nil && l.Spec.LeaseDurationSeconds != nil &&
			time.Since(l.Spec.RenewTime.Time) < time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second {
			alive[owner] = true
			continue
		}
		deadLeases = append(deadLeases, l.Name)
	}
	doomed := func(m metav1.ObjectMeta) bool {
		owner := m.Labels[LabelPoolOwner]
		if owner == p.owner {
			return own
		}
		return !alive[owner]
	}
	pooled, err := labels.NewRequirement(LabelPool, selection.Exists, nil)
	if err != nil {
		return err
	}
	sel := labels.SelectorFromSet(inst).Add(*pooled).String()

	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	pods, err := r.cs.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		fail(apiError("list pool pods", err))
	} else {
		sem := make(chan struct{}, 8)
		for _, pod := range pods.Items {
			if !doomed(pod.ObjectMeta) {
				continue
			}
			pre := metav1.Preconditions{UID: &pod.UID}
			if pod.Labels[LabelPoolOwner] != p.owner {
				pre.ResourceVersion = &pod.ResourceVersion
			}
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				if err := r.removeIf(ctx, pod.Name, pre); err != nil {
					fail(err)
				}
			})
		}
		wg.Wait()
	}
	claims, err := r.cs.CoreV1().PersistentVolumeClaims(r.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		fail(apiError("list pool claims", err))
	} else {
		for _, c := range claims.Items {
			if !doomed(c.ObjectMeta) || c.DeletionTimestamp != nil {
				continue
			}
			pre := &metav1.Preconditions{UID: &c.UID}
			if c.Labels[LabelPoolOwner] != p.owner {
				pre.ResourceVersion = &c.ResourceVersion
			}
			if err := r.deleteClaim(ctx, c.Name, pre); err != nil {
				fail(err)
			}
		}
	}
	if own {
		deadLeases = append(deadLeases, leaseName(p.owner))
	}
	for _, name := range deadLeases {
		err := r.cs.CoordinationV1().Leases(r.ns).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			fail(apiError("delete lease "+name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kube: pool: remove leftovers: %w", err)
	}
	return nil
}

// removeIf deletes the Pod at once if it still is what pre says, and waits until it is
// gone. A Pod that changed since (a Conflict) or is gone is no error: what changed is
// judged again next time.
func (r *Runtime) removeIf(ctx context.Context, name string, pre metav1.Preconditions) error {
	zero := int64(0)
	err := r.cs.CoreV1().Pods(r.ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &pre})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return nil
	case err != nil:
		return apiError("delete pod "+name, err)
	}
	return r.remove(ctx, name, 0)
}

// deleteClaim deletes the claim name (if it still is what pre says, when given). It does
// not wait: the cluster removes a claim once no Pod uses it. A claim that is gone, or
// changed since (a Conflict), is no error.
func (r *Runtime) deleteClaim(ctx context.Context, name string, pre *metav1.Preconditions) error {
	err := r.cs.CoreV1().PersistentVolumeClaims(r.ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: pre})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return apiError("delete claim "+name, err)
	}
	return nil
}

var notLabelChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// labelValue makes s a label value: other characters become '_', at most 63 of them,
// beginning and ending with a letter or digit.
func labelValue(s string) string {
	s = notLabelChars.ReplaceAllString(s, "_")
	if len(s) > 63 {
		s = s[:63]
	}
	s = strings.Trim(s, "_.-")
	if s == "" {
		return "profile"
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
