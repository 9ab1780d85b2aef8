package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"

	sbclient "github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
)

// kubeRows is the registry column of the Kubernetes rows: sandboxd on SQLite with
// runtime: kubernetes.
const kubeRows = "kubernetes"

// kubeProfile is the default profile of the Kubernetes measurements: small, so that
// -parallel sandboxes fit on a small node (a Pod asks the scheduler for a tenth of its
// CPU and a quarter of its memory).
const kubeProfile = `agents:
  default:
    memory: 128m
    cpus: 0.25
    tmpfs: 16m
`

// kubeBench is what the Kubernetes measurements share: the cluster's admin client, the
// run's namespace, the baseline's runtime (only for the objects it would make) and the
// settings of a sandboxd on the cluster.
type kubeBench struct {
	cs       kubernetes.Interface
	rc       *rest.Config
	ns       string
	direct   *kube.Runtime
	settings []string
}

// kube: sandboxd with runtime: kubernetes on a real cluster (-kubeconfig), in a namespace
// of the run's own, against the same objects made straight through the API:
//
//   - cold create: PUT until sandboxd answers, against the chat's claim and Pod (the very
//     objects the runtime makes, kube.Runtime.ColdObjects) created through the API and
//     watched until the Pod runs and its container is ready; each proven exec-ready by an
//     exec of `true` over pods/exec right after (untimed; "+ first exec" times it too);
//   - -parallel distinct creates at once, against as many claim+Pod creates at once;
//   - warm pool: creates served by a pool (-pool-env) against the cold creates through
//     sandboxd of the same run;
//   - exec of `true` through sandboxd on the cluster, against sandboxd on Docker (the
//     in-sandbox agent) in the same run, and against a bare pods/exec of the same
//     command in the same Pod.
func (b *bench) kube(ctx context.Context) (err error) {
	fmt.Fprintf(b.log, "%s:\n", kubeRows)
	rc, err := clientcmd.BuildConfigFromFlags("", b.opts.kubeconfig)
	if err != nil {
		return err
	}
	rc.WarningHandler = rest.NoWarnings{}
	rc.QPS, rc.Burst = 200, 400 // as sandboxd's client: the baseline must not queue in client-go
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	ns := strings.ToLower(b.runID)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	defer func() { // everything of the run goes with its namespace
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		zero := int64(0)
		_ = cs.CoreV1().Pods(ns).DeleteCollection(cctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
		err = errors.Join(err, cs.CoreV1().Namespaces().Delete(cctx, ns, metav1.DeleteOptions{}))
	}()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if _, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s: no default service account after a minute", ns)
		}
	}
	cfgFile := filepath.Join(b.tmp, "kube-profile.yaml")
	if err := os.WriteFile(cfgFile, []byte(kubeProfile), 0o644); err != nil {
		return err
	}
	set, err := profile.New(profile.Agents{Default: profile.Spec{Image: b.image, Memory: "128m", CPUs: 0.25, Tmpfs: "16m"}})
	if err != nil {
		return err
	}
	const workspaceBytes = 64 << 20
	k := &kubeBench{cs: cs, rc: rc, ns: ns, settings: []string{
		"SANDBOXD_CONFIG=" + cfgFile,
		"SANDBOXD_RUNTIME=kubernetes",
		"SANDBOXD_KUBERNETES_KUBECONFIG=" + b.opts.kubeconfig,
		"SANDBOXD_KUBERNETES_NAMESPACE=" + ns,
		"SANDBOXD_KUBERNETES_WORKSPACE_BYTES=" + strconv.Itoa(workspaceBytes),
		"SANDBOXD_TTL=1h",
	}}
	// The baseline's objects: those of a runtime like sandboxd's (same profile, claim
	// size, stop timeout and lifetime), under an instance of its own.
	k.direct, err = kube.New(kube.Config{Kubeconfig: b.opts.kubeconfig, Namespace: ns, Instance: b.runID + "-direct",
		Profiles: set, WorkspaceBytes: workspaceBytes, StopTimeout: kube.DefaultStopTimeout, MaxLifetime: lifecycle.DefaultMaxLifetime})
	if err != nil {
		return err
	}

	w, err := b.newWorld(ctx, sqliteRegistry(), "kube")
	if err != nil {
		return err
	}
	defer w.drop()
	srv, api, err := b.start(ctx, w, append(k.settings, "SANDBOXD_KUBERNETES_INSTANCE="+w.instance)...)
	if err != nil {
		return err
	}
	defer srv.kill()
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\nsandboxd's last log lines:\n%s", err, srv.logTail())
		}
	}()

	cold, err := b.kubeCold(ctx, k, api)
	if err != nil {
		return fmt.Errorf("%s: cold create: %w", kubeRows, err)
	}
	if err := b.kubeParallel(ctx, k, api); err != nil {
		return fmt.Errorf("%s: parallel creates: %w", kubeRows, err)
	}
	if err := b.kubeExec(ctx, k, api); err != nil {
		return fmt.Errorf("%s: exec: %w", kubeRows, err)
	}
	if err := srv.stop(); err != nil {
		return err
	}
	if len(b.opts.PoolEnv) > 0 {
		if err := b.kubePool(ctx, k, cold); err != nil {
			return fmt.Errorf("%s: warm pool: %w", kubeRows, err)
		}
	}
	return nil
}

// kubeCold: one create at a time, sandboxd and the API alternating.
func (b *bench) kubeCold(ctx context.Context, k *kubeBench, api *sbclient.Client) (createTimes, error) {
	var d createTimes
	viaAPI := func(record bool) error {
		claim, pod, err := k.objects()
		if err != nil {
			return err
		}
		t := time.Now()
		err = k.createReady(ctx, claim, pod)
		answer := time.Since(t)
		if err == nil {
			err = k.provenReady(ctx, pod.Name)
		}
		firstExec := time.Since(t)
		if err := errors.Join(err, k.remove(ctx, claim, pod)); err != nil {
			return err
		}
		if record {
			d.add(answer, firstExec)
		}
		return nil
	}
	s, err := coldCreates(ctx, b.opts.KubeN, k.sandboxd(api), viaAPI)
	if err != nil {
		return s, err
	}
	base := "claim + Pod through the API until ready"
	note := "the chat's claim (provisioned on create) and Pod, made as sandboxd's runtime makes them (kube.Runtime.ColdObjects), " +
		"watched until the Pod runs and its container is ready; every create is proven exec-ready by a pods/exec of `true` right after"
	b.add(newRow(kubeRows, "cold create p50 (answered, exec-ready)", "ms", quantile(s.answer, 0.5), quantile(d.answer, 0.5), base, len(s.answer)))
	b.rows[len(b.rows)-1].Note = note
	b.add(newRow(kubeRows, "cold create p99 (answered, exec-ready)", "ms", quantile(s.answer, 0.99), quantile(d.answer, 0.99), base, len(s.answer)))
	b.add(newRow(kubeRows, "cold create p50 + first exec", "ms", quantile(s.firstExec, 0.5), quantile(d.firstExec, 0.5), base+" + first exec", len(s.firstExec)))
	return s, nil
}

// kubeParallel: -parallel distinct chats at once against as many claim+Pod creates at
// once, wall time until every one answered (or was ready); the median of -kube-rounds
// rounds, the sides alternating first.
func (b *bench) kubeParallel(ctx context.Context, k *kubeBench, api *sbclient.Client) error {
	n := b.opts.Parallel
	sWalls, dWalls, err := createsAtOnce(ctx, b.opts.KubeRounds, n, k.sandboxd(api), func() (time.Duration, error) {
		claims := make([]*corev1.PersistentVolumeClaim, n)
		pods := make([]*corev1.Pod, n)
		for i := range n {
			var err error
			if claims[i], pods[i], err = k.objects(); err != nil {
				return 0, err
			}
		}
		return atOnce(ctx, n, func(ctx context.Context, i int) error {
			return k.createReady(ctx, claims[i], pods[i])
		}, func(ctx context.Context, i int) error {
			return k.remove(ctx, claims[i], pods[i])
		})
	})
	if err != nil {
		return err
	}
	b.add(newRow(kubeRows, fmt.Sprintf("%d distinct creates at once, wall", n), "ms", median(sWalls), median(dWalls),
		fmt.Sprintf("%d claim + Pod creates at once until ready", n), len(sWalls)))
	return nil
}

// kubePool: creates through a sandboxd on the cluster whose warm pool is on (full before
// each create, polled on /metrics, untimed), against the cold creates through sandboxd
// of the same run; only pool hits (sandbox_pool_hits_total grew by one) count.
func (b *bench) kubePool(ctx context.Context, k *kubeBench, cold createTimes) error {
	w, err := b.newWorld(ctx, sqliteRegistry(), "kubepool")
	if err != nil {
		return err
	}
	defer w.drop()
	settings := append(append(k.settings, "SANDBOXD_KUBERNETES_INSTANCE="+w.instance), b.opts.PoolEnv...)
	srv, api, err := b.start(ctx, w, settings...)
	if err != nil {
		return err
	}
	defer srv.kill()
	want := poolMin(b.opts.PoolEnv)
	hit, creates, err := b.poolCreates(ctx, srv.base, k.sandboxd(api), b.opts.KubeN, want,
		poolWait{within: 2 * time.Minute, words: "two minutes", poll: 50 * time.Millisecond, what: "Pods"})
	if err != nil {
		return err
	}
	base := "cold create via sandboxd on the cluster"
	b.add(newRow(kubeRows, "pool create p50 (answered, exec-ready)", "ms", quantile(hit.answer, 0.5), quantile(cold.answer, 0.5), base, len(hit.answer)))
	b.rows[len(b.rows)-1].Note = fmt.Sprintf("%d of %d creates were pool hits (sandbox_pool_hits_total deltas); only hits are counted. The pool held %d ready Pods before each create (polled on /metrics, untimed); a claim is two JSON patches (the claim, then the Pod)",
		len(hit.answer), creates, want)
	b.add(newRow(kubeRows, "pool create p99 (answered, exec-ready)", "ms", quantile(hit.answer, 0.99), quantile(cold.answer, 0.99), base, len(hit.answer)))
	b.add(newRow(kubeRows, "pool create p50 + first exec", "ms", quantile(hit.firstExec, 0.5), quantile(cold.firstExec, 0.5), base+" + first exec", len(hit.firstExec)))
	return srv.stop()
}

// kubeExec: `true` in one live sandbox on the cluster through sandboxd's exec API,
// against the same through a sandboxd on Docker in the same run (the in-sandbox agent),
// and against a bare pods/exec in the same Pod; the three alternate, one command each.
func (b *bench) kubeExec(ctx context.Context, k *kubeBench, api *sbclient.Client) error {
	dw, err := b.newWorld(ctx, sqliteRegistry(), "kubexec-docker")
	if err != nil {
		return err
	}
	defer dw.drop()
	dsrv, dapi, err := b.start(ctx, dw, "SANDBOXD_TTL=1h")
	if err != nil {
		return err
	}
	defer dsrv.kill()
	chat, dchat := uuid.NewString(), uuid.NewString()
	s, _, err := api.Create(ctx, chat, sbclient.CreateBody{})
	if err != nil {
		return err
	}
	defer func() { _ = k.forget(context.WithoutCancel(ctx), api, chat) }()
	if _, _, err := dapi.Create(ctx, dchat, sbclient.CreateBody{}); err != nil {
		return err
	}
	defer func() { _, _ = dapi.Delete(context.WithoutCancel(ctx), dchat) }()
	through := func(api *sbclient.Client, chat string) func(context.Context) error {
		return func(ctx context.Context) error {
			res, err := api.Exec(ctx, chat, sbclient.ExecBody{Cmd: []string{"true"}})
			if err == nil && res.ExitCode != 0 {
				err = fmt.Errorf("true through sandboxd: exit %d", res.ExitCode)
			}
			return err
		}
	}
	sides := []func(context.Context) error{
		through(api, chat),
		through(dapi, dchat),
		func(ctx context.Context) error { return k.exec(ctx, s.ContainerID, "true") },
	}
	for range 20 { // warm every side: connections, the agent's attach
		for _, op := range sides {
			if err := op(ctx); err != nil {
				return err
			}
		}
	}
	lat := make([][]time.Duration, len(sides))
	for range b.opts.Execs {
		for i, op := range sides {
			t := time.Now()
			if err := op(ctx); err != nil {
				return err
			}
			lat[i] = append(lat[i], time.Since(t))
		}
	}
	onDocker := "sandboxd on Docker, same run"
	b.add(newRow(kubeRows, "exec `true` p50", "ms", quantile(lat[0], 0.5), quantile(lat[1], 0.5), onDocker, len(lat[0])))
	b.rows[len(b.rows)-1].Note = "sandboxd: POST /v1/chats/{chat}/sandbox/exec over HTTP; on the cluster over pods/exec (WebSocket) through execwrap's wrapper, " +
		"on Docker through the in-sandbox agent"
	b.add(newRow(kubeRows, "exec `true` p99", "ms", quantile(lat[0], 0.99), quantile(lat[1], 0.99), onDocker, len(lat[0])))
	b.add(newRow(kubeRows, "exec `true` p50 vs a bare pods/exec", "ms", quantile(lat[0], 0.5), quantile(lat[2], 0.5), "pods/exec of `true` from this process, same Pod", len(lat[0])))
	return dsrv.stop()
}

// objects are a new chat's claim and Pod as sandboxd's runtime would make them.
func (k *kubeBench) objects() (*corev1.PersistentVolumeClaim, *corev1.Pod, error) {
	now := time.Now()
	return k.direct.ColdObjects(lifecycle.CreateSpec{SessionID: uuid.New(), ChatID: uuid.New(), CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
}

// createReady creates the claim, then the Pod, and waits until the Pod runs and its
// container is ready (or fails, or two minutes pass).
func (k *kubeBench) createReady(ctx context.Context, claim *corev1.PersistentVolumeClaim, pod *corev1.Pod) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := k.cs.CoreV1().PersistentVolumeClaims(k.ns).Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create claim %s: %w", claim.Name, err)
	}
	created, err := k.cs.CoreV1().Pods(k.ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create pod %s: %w", pod.Name, err)
	}
	w, err := k.cs.CoreV1().Pods(k.ns).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", pod.Name).String(), ResourceVersion: created.ResourceVersion,
	})
	if err != nil {
		return fmt.Errorf("watch pod %s: %w", pod.Name, err)
	}
	defer w.Stop()
	for p := created; ; {
		switch {
		case p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded:
			return fmt.Errorf("pod %s ended: %s %s", p.Name, p.Status.Reason, p.Status.Message)
		case p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].Ready:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %s not ready: %w", pod.Name, ctx.Err())
		case ev, ok := <-w.ResultChan():
			if !ok || ev.Type == watch.Error || ev.Type == watch.Deleted {
				return fmt.Errorf("watch pod %s: ended (%s)", pod.Name, ev.Type)
			}
			if next, ok := ev.Object.(*corev1.Pod); ok {
				p = next
			}
		}
	}
}

// remove deletes a baseline's Pod at once, then its claim, and waits until the Pod is
// gone (as sandboxd's delete does).
func (k *kubeBench) remove(ctx context.Context, claim *corev1.PersistentVolumeClaim, pod *corev1.Pod) error {
	zero := int64(0)
	err := k.cs.CoreV1().Pods(k.ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	err = k.cs.CoreV1().PersistentVolumeClaims(k.ns).Delete(ctx, claim.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		_, err := k.cs.CoreV1().Pods(k.ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s still there a minute after its delete (%v)", pod.Name, err)
		}
	}
}

// forget deletes the chat's sandbox and then its workspace (the claim), untimed.
func (k *kubeBench) forget(ctx context.Context, api *sbclient.Client, chat string) error {
	if _, err := api.Delete(ctx, chat); err != nil {
		return err
	}
	_, err := api.DeleteWorkspace(ctx, chat)
	return err
}

// sandboxd: proven exec-ready by a pods/exec of `true`, forgotten with its workspace.
func (k *kubeBench) sandboxd(api *sbclient.Client) viaSandboxd {
	return viaSandboxd{
		api:    api,
		ready:  k.provenReady,
		forget: func(ctx context.Context, chat string) error { return k.forget(ctx, api, chat) },
	}
}

// provenReady is the exec-readiness check after a timed create: one pods/exec of `true`
// at once, without retry.
func (k *kubeBench) provenReady(ctx context.Context, pod string) error {
	if err := k.exec(ctx, pod, "true"); err != nil {
		return fmt.Errorf("pod %s was not exec-ready when it answered: %w", pod, err)
	}
	return nil
}

// exec runs cmd in the Pod over pods/exec (WebSocket, as kubectl does), its output
// discarded unless it fails.
func (k *kubeBench) exec(ctx context.Context, pod string, cmd ...string) error {
	req := k.cs.CoreV1().RESTClient().Post().Namespace(k.ns).Resource("pods").Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewWebSocketExecutor(k.rc, "GET", req.URL().String())
	if err != nil {
		return err
	}
	var out, errOut bytes.Buffer // two: the streams are copied at once
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut}); err != nil {
		return fmt.Errorf("pods/exec %v in %s: %w (%s%s)", cmd, pod, err, out.String(), strings.TrimSpace(errOut.String()))
	}
	return nil
}
