package kube_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/memstore"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// service is the lifecycle on the runtime, with an in-memory registry and a clock the
// test moves.
func service(t *testing.T, rt *kube.Runtime, clk *clock) *lifecycle.Service {
	t.Helper()
	svc, err := lifecycle.New(lifecycle.Config{
		Store: memstore.New(), Locker: keylock.New(), Runtime: rt, Admitter: rt, Inventory: rt,
		Executor: rt, Terminals: rt, Files: rt, Workspaces: rt, TTL: time.Minute, Clock: clk, ReconcileGrace: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// TestLifecycleOnTheCluster runs the use cases on real Pods: create, reuse, replace after
// expiry, delete, the expiry sweep, and reconciliation both ways.
func TestLifecycleOnTheCluster(t *testing.T) {
	f := newRuntime(t, profile.Agents{})
	clk := &clock{now: time.Now()}
	svc := service(t, f.rt, clk)
	ctx := context.Background()
	chat := uuid.New()

	first, outcome, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat})
	if err != nil || outcome != lifecycle.Created {
		t.Fatalf("Create = %v, %v", outcome, err)
	}
	again, outcome, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat})
	if err != nil || outcome != lifecycle.Reused || again.ID != first.ID {
		t.Fatalf("second Create = %v, %v; want the same session reused", outcome, err)
	}
	if _, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: uuid.New(), VolumeHostPath: "/srv/x"}); err == nil {
		t.Fatal("Create with a host folder was accepted")
	}
	res, err := svc.Exec(ctx, lifecycle.ExecRequest{ChatID: chat, Cmd: []string{"sh", "-c", "echo through the service > /workspace/f; cat /workspace/f"}})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Exec = %+v, %v", res, err)
	}

	clk.Add(2 * time.Minute)
	replaced, outcome, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat})
	if err != nil || outcome != lifecycle.Replaced || replaced.ID == first.ID {
		t.Fatalf("Create after expiry = %v, %v; want replaced", outcome, err)
	}
	if podExists(t, f, first.ContainerID) {
		t.Fatal("the expired sandbox's pod is still there after the replace")
	}
	if rc, _, err := svc.OpenFile(ctx, chat, "f"); err != nil {
		t.Fatalf("the workspace did not survive the replace: %v", err)
	} else {
		_ = rc.Close()
	}

	del, err := svc.Delete(ctx, chat)
	if err != nil || del.Result != lifecycle.Deleted || podExists(t, f, replaced.ContainerID) {
		t.Fatalf("Delete = %+v, %v", del, err)
	}

	// The sweep stops what expired.
	swept, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Minute)
	if cleaned, err := svc.CleanupExpired(ctx); err != nil || len(cleaned) != 1 || podExists(t, f, swept.ContainerID) {
		t.Fatalf("CleanupExpired = %v, %v", cleaned, err)
	}

	// Reconcile: a Pod without a record (a crash after the create) is removed once past
	// the grace period; a record whose Pod is gone is forgotten.
	orphan := spec("")
	if _, err := f.rt.Create(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	kept, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	lost, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	if err := f.cs.CoreV1().Pods(f.ns).Delete(ctx, lost.ContainerID, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the grace period
	rep, err := svc.Reconcile(ctx)
	if err != nil || rep.OrphansRemoved != 1 || rep.RecordsRepaired != 1 {
		t.Fatalf("Reconcile = %+v, %v; want one orphan removed, one record repaired", rep, err)
	}
	if podExists(t, f, kube.PodName(orphan.ChatID, orphan.SessionID)) || !podExists(t, f, kept.ContainerID) {
		t.Fatal("reconcile removed the wrong pods")
	}
	if _, err := svc.Get(ctx, lost.ChatID); err == nil {
		t.Fatal("the record of the lost pod is still there")
	}
}

func podExists(t *testing.T, f fixture, name string) bool {
	t.Helper()
	_, err := f.cs.CoreV1().Pods(f.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// TestUnderTheShippedRole runs sandboxd's runtime, its warm pool on, with the service
// account, Role and bindings of deploy/rbac.yaml, and nothing more.
func TestUnderTheShippedRole(t *testing.T) {
	pooled := testProfile()
	pooled.Pool = profile.Pool{Min: 1}
	f := newRuntime(t, profile.Agents{Default: pooled}, func(c *kube.Config) { c.PoolCheckInterval = 200 * time.Millisecond })
	ctx := context.Background()
	applyRBAC(t, f.cs, f.ns)
	tok, err := f.cs.CoreV1().ServiceAccounts(f.ns).CreateToken(ctx, "sandboxd", &authv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kc := tokenKubeconfig(t, tok.Status.Token)
	cfg := f.cfg
	cfg.Kubeconfig = kc
	rt, err := kube.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.StartPool(ctx); err != nil {
		t.Fatalf("StartPool under the Role: %v", err)
	}
	t.Cleanup(func() { _ = rt.DrainPool(context.Background()) })
	waitfor.True(t, 2*time.Minute, "the pool filled under the Role", func() bool { return rt.PoolFill()[0].Ready == 1 })
	clk := &clock{now: time.Now()}
	svc := service(t, rt, clk)
	chat := uuid.New()
	s, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat})
	if err != nil || !strings.HasPrefix(s.ContainerID, "sandboxd-pool-") {
		t.Fatalf("Create under the Role: %+v, %v; want a pooled pod", s, err)
	}
	for _, spdy := range []bool{false, true} {
		kube.SetSPDYOnly(rt, spdy)
		var out strings.Builder
		if res, err := svc.Exec(ctx, lifecycle.ExecRequest{ChatID: chat, Cmd: []string{"id", "-u"}, Stdout: &out}); err != nil || res.ExitCode != 0 || out.String() != "1000\n" {
			t.Fatalf("Exec under the Role (spdy %v): %+v, %q, %v", spdy, res, out.String(), err)
		}
	}
	if _, err := svc.WriteFile(ctx, chat, "a", strings.NewReader("x")); err != nil {
		t.Fatalf("WriteFile under the Role: %v", err)
	}
	if _, err := svc.ListDir(ctx, chat, ""); err != nil {
		t.Fatalf("ListDir under the Role: %v", err)
	}
	if _, err := rt.Identity(ctx); err != nil {
		t.Fatalf("Identity under the Role: %v", err)
	}
	if rep, err := svc.Reconcile(ctx); err != nil || rep.Errors != 0 {
		t.Fatalf("Reconcile under the Role: %+v, %v", rep, err)
	}
	if code, err := svc.Terminal(ctx, lifecycle.TerminalRequest{ChatID: chat, TerminalIO: lifecycle.TerminalIO{Stdin: strings.NewReader("exit 5\n"), Stdout: io.Discard}}); err != nil || code != 5 {
		t.Fatalf("Terminal under the Role: %d, %v", code, err)
	}
	wctx, stop := context.WithCancel(ctx)
	watched := make(chan error, 1)
	go func() { watched <- rt.Watch(wctx, stop, func(lifecycle.Ending) {}) }()
	if err := <-watched; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch under the Role: %v", err)
	}
	if del, err := svc.Delete(ctx, chat); err != nil || del.Result != lifecycle.Deleted || podExists(t, f, s.ContainerID) {
		t.Fatalf("Delete under the Role: %+v, %v", del, err)
	}
	// The chat has a workspace (the pool's claim): a cold create on it; then the
	// workspace goes, the pooled claim with it.
	cold, _, err := svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat})
	if err != nil || strings.HasPrefix(cold.ContainerID, "sandboxd-pool-") {
		t.Fatalf("Create of a chat with a workspace under the Role: %+v, %v; want a cold pod", cold, err)
	}
	if del, err := svc.Delete(ctx, chat); err != nil || del.Result != lifecycle.Deleted {
		t.Fatalf("Delete under the Role: %+v, %v", del, err)
	}
	if ws, err := svc.DeleteWorkspace(ctx, chat); err != nil || ws.Result != lifecycle.Removed {
		t.Fatalf("DeleteWorkspace under the Role: %+v, %v", ws, err)
	}
	eventually(t, time.Minute, "the pooled claim removed", func() bool {
		_, err := f.cs.CoreV1().PersistentVolumeClaims(f.ns).Get(ctx, s.ContainerID, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	if err := rt.DrainPool(ctx); err != nil {
		t.Fatalf("DrainPool under the Role: %v", err)
	}

	// And nothing more: no secrets, nothing in another namespace.
	rc, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	sa := kubernetes.NewForConfigOrDie(rc)
	if _, err := sa.CoreV1().Secrets(f.ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the service account may list secrets: %v", err)
	}
	if _, err := sa.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the service account may list pods in another namespace: %v", err)
	}
	if _, err := sa.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the service account may read namespaces other than kube-system: %v", err)
	}
}

// applyRBAC creates the objects of deploy/rbac.yaml in ns; the cluster-wide ones get
// names of the test's own (and are removed at its end).
func applyRBAC(t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	ctx := context.Background()
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(raw)), 4096)
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			break
		}
		if doc == nil {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(mustJSON(t, doc), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			o.Namespace = ns
			_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			o.Namespace = ns
			_, err = cs.RbacV1().Roles(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			o.Namespace = ns
			o.Subjects[0].Namespace = ns
			_, err = cs.RbacV1().RoleBindings(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			o.Name += "-" + ns
			name := o.Name
			t.Cleanup(func() { _ = cs.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{}) })
			_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			o.Name += "-" + ns
			o.RoleRef.Name += "-" + ns
			o.Subjects[0].Namespace = ns
			name := o.Name
			t.Cleanup(func() {
				_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
			})
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("deploy/rbac.yaml: unexpected %T", obj)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// tokenKubeconfig writes a kubeconfig of the test cluster that authenticates with token.
func tokenKubeconfig(t *testing.T, token string) string {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthority: rc.CAFile, CertificateAuthorityData: rc.CAData, InsecureSkipTLSVerify: rc.Insecure}
	kc.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "sa"}
	kc.CurrentContext = "c"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
