package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/testing/kubetest"
	"github.com/sandboxd/sandboxd/internal/testing/pgtest"
	"github.com/sandboxd/sandboxd/internal/testing/sandboxdproc"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

// kubeWorld is one test's sandboxd on the Kubernetes test cluster (scripts/kube/up.sh):
// a namespace of its own, an instance id, a registry.
type kubeWorld struct {
	*world
	cs       kubernetes.Interface
	ns       string
	selector string
}

func newKubeWorld(t *testing.T, registry string, settings ...string) *kubeWorld {
	t.Helper()
	cs := kubetest.Admin(t)
	ns := kubetest.Namespace(t, cs)
	dir := t.TempDir()
	if registry == "" {
		registry = "sqlite:" + filepath.Join(dir, "sandboxd.db")
	}
	instance := "e2e-" + strings.ToLower(strings.ReplaceAll(newChat()[:8], "-", ""))
	w := &world{t: t, dataDir: dir, instance: instance}
	w.cfg = sandboxdproc.Config{
		Binary:   binary,
		Dir:      dir,
		Token:    token,
		Registry: registry,
		Instance: instance,
		// The image the test cluster imported (scripts/kube/images).
		Image:    "sandboxd-sandbox:latest",
		LogLevel: "debug",
		Settings: append([]string{
			"SANDBOXD_RUNTIME=kubernetes",
			"SANDBOXD_KUBERNETES_KUBECONFIG=" + kubetest.Kubeconfig(t),
			"SANDBOXD_KUBERNETES_NAMESPACE=" + ns,
			"SANDBOXD_KUBERNETES_INSTANCE=" + instance,
			"SANDBOXD_KUBERNETES_WORKSPACE_BYTES=67108864",
			"SANDBOXD_KUBERNETES_STOP_TIMEOUT=1s",
			"SANDBOXD_SHUTDOWN_TIMEOUT=30s",
		}, settings...),
	}
	return &kubeWorld{world: w, cs: cs, ns: ns, selector: kube.LabelInstance + "=" + instance}
}

// pods lists the names of this test's sandbox Pods.
func (w *kubeWorld) pods() []string { return kubetest.Pods(w.t, w.cs, w.ns, w.selector) }

// The cycle a client goes through, on Pods: create, reuse, exec, files, keepalive,
// replace after a delete, and a host folder refused with 422; the workspace claim outlives
// the sandboxes.
func TestKubernetesThroughTheBinary(t *testing.T) {
	t.Parallel()
	w := newKubeWorld(t, "")
	srv := w.start()
	defer srv.stop(syscall.SIGTERM)
	ctx := context.Background()
	chat := newChat()

	s, res, err := srv.api.Create(ctx, chat, client.CreateBody{})
	if err != nil || res != client.Created || s.ContainerID != kube.PodName(uuid.MustParse(chat), uuid.MustParse(s.SessionID)) {
		t.Fatalf("create = %+v %s %v", s, res, err)
	}
	if pods := w.pods(); len(pods) != 1 || pods[0] != s.ContainerID {
		t.Fatalf("pods %v after the create, want [%s]", pods, s.ContainerID)
	}
	again, res, err := srv.api.Create(ctx, chat, client.CreateBody{})
	if err != nil || res != client.Reused || again.SessionID != s.SessionID {
		t.Fatalf("second create = %+v %s %v, want reused", again, res, err)
	}
	if _, _, err := srv.api.Create(ctx, newChat(), client.CreateBody{VolumeHostPath: "/srv/x"}); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("create with a host folder: %v, want 422 invalid", err)
	}
	if pods := w.pods(); len(pods) != 1 {
		t.Fatalf("pods %v after a refused create, want one", pods)
	}

	out, err := srv.api.Exec(ctx, chat, client.ExecBody{Cmd: []string{"sh", "-c", "id -u; pwd; echo hi > note"}})
	if err != nil || out.ExitCode != 0 || out.Stdout != "1000\n/workspace\n" {
		t.Fatalf("exec = %+v %v", out, err)
	}
	if _, err := srv.api.Upload(ctx, chat, "dir/up.txt", strings.NewReader("uploaded")); err != nil {
		t.Fatalf("upload: %v", err)
	}
	var got bytes.Buffer
	if _, err := srv.api.Download(ctx, chat, "note", &got); err != nil || got.String() != "hi\n" {
		t.Fatalf("download = %q %v", got.String(), err)
	}
	if out, err := srv.api.Exec(ctx, chat, client.ExecBody{Cmd: []string{"cat", "dir/up.txt"}}); err != nil || out.Stdout != "uploaded" {
		t.Fatalf("the uploaded file in the sandbox: %+v %v", out, err)
	}
	kept, err := srv.api.Keepalive(ctx, chat, 2*time.Hour)
	if err != nil || !kept.ExpiresAt.After(s.ExpiresAt) {
		t.Fatalf("keepalive = %+v %v, want a later expiry than %s", kept, err, s.ExpiresAt)
	}

	del, err := srv.api.Delete(ctx, chat)
	if err != nil || del.Result != client.Deleted {
		t.Fatalf("delete = %+v %v", del, err)
	}
	if pods := w.pods(); len(pods) != 0 {
		t.Fatalf("pods %v after the delete", pods)
	}
	if _, err := w.cs.CoreV1().PersistentVolumeClaims(w.ns).Get(ctx, kube.ClaimName("", uuid.MustParse(chat)), metav1.GetOptions{}); err != nil {
		t.Fatalf("the workspace claim did not outlive the sandbox: %v", err)
	}
	next, res, err := srv.api.Create(ctx, chat, client.CreateBody{})
	if err != nil || res != client.Created || next.SessionID == s.SessionID {
		t.Fatalf("create after delete = %+v %s %v", next, res, err)
	}
	if out, err := srv.api.Exec(ctx, chat, client.ExecBody{Cmd: []string{"cat", "note"}}); err != nil || out.Stdout != "hi\n" {
		t.Fatalf("the workspace after a new sandbox: %+v %v", out, err)
	}

	// The workspace goes on request, once the chat has no sandbox; the next one is empty.
	if _, err := srv.api.DeleteWorkspace(ctx, chat); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("delete workspace while a sandbox runs: %v, want 409", err)
	}
	if _, err := srv.api.Delete(ctx, chat); err != nil {
		t.Fatal(err)
	}
	if ws, err := srv.api.DeleteWorkspace(ctx, chat); err != nil || ws.Result != "removed" {
		t.Fatalf("delete workspace = %+v %v", ws, err)
	}
	if _, _, err := srv.api.Create(ctx, chat, client.CreateBody{}); err != nil {
		t.Fatalf("create after the workspace went: %v", err)
	}
	if out, err := srv.api.Exec(ctx, chat, client.ExecBody{Cmd: []string{"ls", "-A"}}); err != nil || out.Stdout != "" {
		t.Fatalf("a new workspace after the old one went: %+v %v, want empty", out, err)
	}
}

// On PostgreSQL, two replicas on the same cluster serialise a chat: twenty creates spread
// over both make one Pod.
func TestKubernetesPostgresReplicas(t *testing.T) {
	t.Parallel()
	w := newKubeWorld(t, pgtest.DSN(t))
	a, b := w.start(), w.start()
	defer a.stop(syscall.SIGTERM)
	defer b.stop(syscall.SIGTERM)
	chat := newChat()
	oneSession(t, chat, 20, a.api, b.api)
	if pods := w.pods(); len(pods) != 1 {
		t.Errorf("pods %v, want one", pods)
	}
	if del, err := b.api.Delete(context.Background(), chat); err != nil || del.Result != client.Deleted {
		t.Fatalf("delete on the other replica: %+v %v", del, err)
	}
	if pods := w.pods(); len(pods) != 0 {
		t.Errorf("pods %v after the delete", pods)
	}
}

// A sandboxd killed (SIGKILL) while a create is in flight leaves nothing untracked once it
// has started again: the reconciler removes a Pod whose record was never saved.
func TestKubernetesKillDuringCreate(t *testing.T) {
	t.Parallel()
	w := newKubeWorld(t, "", "SANDBOXD_RECONCILE_GRACE=1ms")
	srv := w.start()
	chat := newChat()
	answered := make(chan error, 1)
	go func() {
		_, _, err := srv.api.Create(context.Background(), chat, client.CreateBody{})
		answered <- err
	}()
	waitfor.True(t, time.Minute, "the create makes a pod", func() bool { return len(w.pods()) > 0 })
	srv.stop(syscall.SIGKILL)
	<-answered

	srv = w.start()
	defer srv.stop(syscall.SIGTERM)
	ctx := context.Background()
	got, err := srv.api.Get(ctx, chat)
	switch {
	case err == nil:
		waitfor.True(t, time.Minute, "only the recorded pod is left", func() bool {
			pods := w.pods()
			return len(pods) == 1 && pods[0] == got.ContainerID
		})
	case errors.Is(err, client.ErrNotFound):
		waitfor.True(t, time.Minute, "the unrecorded pod is removed", func() bool { return len(w.pods()) == 0 })
	default:
		t.Fatal(err)
	}
	s, _, err := srv.api.Create(ctx, chat, client.CreateBody{})
	if err != nil {
		t.Fatalf("create after restart: %v", err)
	}
	if pods := w.pods(); len(pods) != 1 || pods[0] != s.ContainerID {
		t.Errorf("pods %v after restart and create, want [%s]", pods, s.ContainerID)
	}
}

// pooled lists this test's unclaimed pool Pods and the pool's claims (being deleted or not).
func (w *kubeWorld) pooled() (pods, claims []string) {
	w.t.Helper()
	sel := w.selector + "," + kube.LabelPool
	pods = kubetest.Pods(w.t, w.cs, w.ns, sel)
	list, err := w.cs.CoreV1().PersistentVolumeClaims(w.ns).List(context.Background(), metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		w.t.Fatal(err)
	}
	for _, c := range list.Items {
		claims = append(claims, c.Name)
	}
	slices.Sort(pods)
	slices.Sort(claims)
	return pods, claims
}

// kubeEventually asks cond every 200 ms (each ask lists objects) until it holds.
func kubeEventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
	}
}

// The warm pool on Kubernetes through the binary: a create is served from it (faster
// than a cold one) and it refills, the operator's page shows its fill, a SIGKILL's
// leftovers are removed by the next run, a chat that has a workspace gets a cold create
// on it, and SIGTERM drains the pool (Pods, claims, Lease) and nothing else.
func TestKubernetesWarmPool(t *testing.T) {
	t.Parallel()
	w := newKubeWorld(t, "", "SANDBOXD_AGENTS_DEFAULT_POOL_MIN=2")
	srv := w.start()
	ctx := context.Background()
	var pool []string
	kubeEventually(t, 2*time.Minute, "a pool of 2", func() bool {
		var claims []string
		pool, claims = w.pooled()
		return len(pool) == 2 && slices.Equal(pool, claims) && poolSize(t, srv) == "2"
	})
	var overview struct {
		Pools []struct {
			Profile string `json:"profile"`
			Ready   int    `json:"ready"`
		} `json:"pools"`
	}
	if err := json.Unmarshal([]byte(getUI(t, srv, "/v1/ui/overview")), &overview); err != nil {
		t.Fatal(err)
	}
	if len(overview.Pools) != 1 || overview.Pools[0].Profile != "default" || overview.Pools[0].Ready != 2 {
		t.Errorf("the operator's page shows pools %+v, want default with 2 ready", overview.Pools)
	}

	chat := newChat()
	t0 := time.Now()
	s, res, err := srv.api.Create(ctx, chat, client.CreateBody{})
	warm := time.Since(t0)
	if err != nil || res != client.Created || !slices.Contains(pool, s.ContainerID) {
		t.Fatalf("create = %+v %s %v; want one of the pool's %v", s, res, err, pool)
	}
	if out, err := srv.api.Exec(ctx, chat, client.ExecBody{Cmd: []string{"sh", "-c", "id -u; echo pooled > f"}}); err != nil || out.Stdout != "1000\n" {
		t.Fatalf("exec in the claimed pod = %+v %v", out, err)
	}
	kubeEventually(t, 2*time.Minute, "the pool refilled", func() bool {
		now, claims := w.pooled()
		return len(now) == 2 && slices.Equal(now, claims) && !slices.Contains(now, s.ContainerID)
	})
	// Faster than a cold create (of a chat with a workspace, while the pool is full).
	coldChat := newChat()
	if _, err := w.cs.CoreV1().PersistentVolumeClaims(w.ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: kube.ClaimName("", uuid.MustParse(coldChat)), Labels: map[string]string{
			kube.LabelManagedBy: kube.ManagedBy, kube.LabelInstance: w.instance, kube.LabelChatID: coldChat,
		}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	cold, _, err := srv.api.Create(ctx, coldChat, client.CreateBody{})
	coldTook := time.Since(t0)
	if err != nil || strings.HasPrefix(cold.ContainerID, "sandboxd-pool-") {
		t.Fatalf("create of a chat with a claim = %+v %v; want a cold pod", cold, err)
	}
	t.Logf("create from the pool %s, cold create on an existing claim %s", warm, coldTook)
	if warm >= coldTook {
		t.Errorf("a create from the pool took %s, a cold one %s", warm, coldTook)
	}

	// A crash: the pool is not drained. The next run removes what it left once its Lease
	// has expired, and keeps the claimed sandbox.
	srv.stop(syscall.SIGKILL)
	left, _ := w.pooled()
	srv = w.start()
	kubeEventually(t, 2*time.Minute, "the killed run's pool removed, a new one made", func() bool {
		now, claims := w.pooled()
		return len(now) == 2 && slices.Equal(now, claims) && !slices.ContainsFunc(now, func(n string) bool { return slices.Contains(left, n) })
	})
	if got, err := srv.api.Get(ctx, chat); err != nil || got.ContainerID != s.ContainerID {
		t.Fatalf("the claimed sandbox after the restart: %+v %v", got, err)
	}

	// A chat that has a workspace keeps its files: a cold create on its claim.
	if _, err := srv.api.Delete(ctx, chat); err != nil {
		t.Fatal(err)
	}
	again, _, err := srv.api.Create(ctx, chat, client.CreateBody{})
	if err != nil || strings.HasPrefix(again.ContainerID, "sandboxd-pool-") {
		t.Fatalf("create of a chat with a workspace = %+v %v; want a cold pod", again, err)
	}
	if out, err := srv.api.Exec(ctx, chat, client.ExecBody{Cmd: []string{"cat", "f"}}); err != nil || out.Stdout != "pooled\n" {
		t.Fatalf("the chat's file after a cold create = %+v %v", out, err)
	}

	// SIGTERM drains: the pool's Pods, claims and Lease go; the chats' sandboxes and
	// claims stay.
	srv.stop(syscall.SIGTERM)
	kubeEventually(t, time.Minute, "the pool drained", func() bool {
		pods, claims := w.pooled()
		return len(pods) == 0 && len(claims) == 0
	})
	if pods := w.pods(); len(pods) != 2 || !slices.Contains(pods, again.ContainerID) {
		t.Errorf("pods after SIGTERM %v, want the two chats' (one of them %s)", pods, again.ContainerID)
	}
	if leases, err := w.cs.CoordinationV1().Leases(w.ns).List(ctx, metav1.ListOptions{}); err != nil || len(leases.Items) != 0 {
		t.Errorf("leases after SIGTERM: %v %v", leases, err)
	}
	if _, err := w.cs.CoreV1().PersistentVolumeClaims(w.ns).Get(ctx, s.ContainerID, metav1.GetOptions{}); err != nil {
		t.Errorf("the chat's claim (made by the pool) after SIGTERM: %v", err)
	}
}

// getUI is the body of a GET of the operator page's data at path.
func getUI(t *testing.T, srv *server, path string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", path, res.Status, b)
	}
	return string(b)
}
