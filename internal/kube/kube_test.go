package kube_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/kubetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// client-go's and klog's process-wide background goroutines.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreAnyFunction("k8s.io/apimachinery/pkg/util/wait.BackoffUntil"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*ClientConn).readLoop"),
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"),
		// A closed SPDY connection (exec's fallback) lets its peer finish for a while
		// before it ends its last goroutine by itself.
		goleak.IgnoreTopFunction("github.com/moby/spdystream.(*Connection).shutdown"),
		// A WebSocket exec that the client closed keeps its ping ticker until the next
		// ping fails (client-go stops it early only on the server's Close): a run of one
		// test (-run TestFiles) ended before it.
		goleak.IgnoreTopFunction("k8s.io/client-go/tools/remotecommand.(*heartbeat).start"),
	)
}

func kubeconfig(t *testing.T) string                         { return kubetest.Kubeconfig(t) }
func admin(t *testing.T) kubernetes.Interface                { return kubetest.Admin(t) }
func namespace(t *testing.T, cs kubernetes.Interface) string { return kubetest.Namespace(t, cs) }

// testProfile is small: the test node is small.
func testProfile() profile.Spec {
	return profile.Spec{Memory: "64m", CPUs: 0.5, Tmpfs: "8m"}
}

type fixture struct {
	rt  *kube.Runtime
	cs  kubernetes.Interface
	ns  string
	cfg kube.Config
}

// newRuntime returns a Runtime on a fresh namespace of the test cluster, with agents as
// its profiles (a zero Default gets testProfile).
func newRuntime(t *testing.T, agents profile.Agents, edit ...func(*kube.Config)) fixture {
	t.Helper()
	cs := admin(t)
	ns := namespace(t, cs)
	if agents.Default.Memory == "" {
		agents.Default = testProfile()
	}
	set, err := profile.New(agents)
	if err != nil {
		t.Fatal(err)
	}
	cfg := kube.Config{
		Kubeconfig:     kubeconfig(t),
		Namespace:      ns,
		Instance:       "test-" + strings.ToLower(rand.Text()[:8]),
		Profiles:       set,
		WorkspaceBytes: 64 << 20,
		StopTimeout:    time.Second,
		MaxLifetime:    time.Hour,
	}
	for _, e := range edit {
		e(&cfg)
	}
	rt, err := kube.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{rt: rt, cs: cs, ns: ns, cfg: cfg}
}

func spec(agent string) lifecycle.CreateSpec {
	now := time.Now().UTC().Truncate(time.Second)
	return lifecycle.CreateSpec{SessionID: uuid.New(), ChatID: uuid.New(), AgentID: agent, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
}

func (f fixture) create(t *testing.T, s lifecycle.CreateSpec) sandbox.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	got, err := f.rt.Create(ctx, s)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { _ = f.rt.Delete(context.Background(), got.ContainerID) })
	return got
}

// sh runs script in the sandbox and returns its stdout, stderr and exit code.
func (f fixture) sh(t *testing.T, pod, script string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code, err := f.rt.Exec(ctx, pod, lifecycle.ExecCommand{Cmd: []string{"sh", "-c", script}, Stdout: &out, Stderr: &errOut})
	if err != nil {
		t.Fatalf("Exec %q: %v", script, err)
	}
	return strings.TrimSpace(out.String()), strings.TrimSpace(errOut.String()), code
}

func TestCreateMakesAHardenedPod(t *testing.T) {
	f := newRuntime(t, profile.Agents{})
	s := f.create(t, spec("agent-a"))
	if s.Status != sandbox.StatusRunning || !strings.HasPrefix(s.ContainerID, "sandboxd-"+s.ChatID.String()) {
		t.Fatalf("session = %+v", s)
	}

	// Read back from the API server.
	pod, err := f.cs.CoreV1().Pods(f.ns).Get(context.Background(), s.ContainerID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ps, c := pod.Spec, pod.Spec.Containers[0]
	sc, psc := c.SecurityContext, ps.SecurityContext
	checks := map[string]bool{
		"scheduled by the scheduler (no nodeName asked)": pod.Spec.NodeName != "" && pod.Spec.SchedulerName == corev1.DefaultSchedulerName,
		"automountServiceAccountToken false":             ps.AutomountServiceAccountToken != nil && !*ps.AutomountServiceAccountToken,
		"enableServiceLinks false":                       ps.EnableServiceLinks != nil && !*ps.EnableServiceLinks,
		"no host namespaces":                             !ps.HostNetwork && !ps.HostPID && !ps.HostIPC,
		"runAsNonRoot, uid and gid 1000":                 *psc.RunAsNonRoot && *psc.RunAsUser == 1000 && *psc.RunAsGroup == 1000,
		"seccomp RuntimeDefault":                         psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault,
		"read-only root":                                 *sc.ReadOnlyRootFilesystem,
		"no privilege escalation":                        !*sc.AllowPrivilegeEscalation && !*sc.Privileged,
		"capabilities drop ALL":                          len(sc.Capabilities.Drop) == 1 && sc.Capabilities.Drop[0] == "ALL" && len(sc.Capabilities.Add) == 0,
		"memory limit 64Mi":                              c.Resources.Limits.Memory().Value() == 64<<20,
		"cpu limit 500m":                                 c.Resources.Limits.Cpu().MilliValue() == 500,
		"grace period = stop timeout":                    ps.TerminationGracePeriodSeconds != nil && *ps.TerminationGracePeriodSeconds == 1,
		"activeDeadlineSeconds = max lifetime":           ps.ActiveDeadlineSeconds != nil && *ps.ActiveDeadlineSeconds == 3600,
		"labels":                                         pod.Labels[kube.LabelManagedBy] == "sandboxd" && pod.Labels[kube.LabelInstance] == f.cfg.Instance && pod.Labels[kube.LabelChatID] == s.ChatID.String() && pod.Labels[kube.LabelSessionID] == s.ID.String(),
		"agent annotation":                               pod.Annotations[kube.AnnotationAgentID] == "agent-a",
	}
	for _, v := range ps.Volumes {
		switch {
		case v.HostPath != nil:
			checks["no hostPath volume"] = false
		case v.Name == "tmp":
			checks["/tmp a memory emptyDir of 8Mi"] = v.EmptyDir != nil && v.EmptyDir.Medium == corev1.StorageMediumMemory && v.EmptyDir.SizeLimit.Value() == 8<<20
		case v.Name == "workspace":
			checks["workspace is the chat's claim"] = v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == kube.ClaimName("", s.ChatID)
		}
	}
	for what, ok := range checks {
		if !ok {
			t.Errorf("pod spec: not %s", what)
		}
	}

	// Probed inside.
	probes := []struct{ script, want string }{
		{"id -u; id -g", "1000\n1000"},
		{"grep CapEff /proc/self/status | cut -f2", "0000000000000000"},
		{"grep NoNewPrivs /proc/self/status | cut -f2", "1"},
		{"grep ^Seccomp: /proc/self/status | cut -f2", "2"},
		{"touch /x 2>/dev/null && echo writable || echo read-only", "read-only"},
		{"ls /var/run/secrets/kubernetes.io 2>/dev/null || echo no token", "no token"},
		{"echo hi > /workspace/a && cat /workspace/a", "hi"},
		{"echo hi > /tmp/a && cat /tmp/a && grep ' /tmp ' /proc/mounts | cut -d' ' -f3", "hi\ntmpfs"},
		{"cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max", "67108864"},
		{"hostname", "sandbox"},
	}
	for _, p := range probes {
		if out, errOut, code := f.sh(t, s.ContainerID, p.script); out != p.want || code != 0 {
			t.Errorf("%s: got %q (exit %d, stderr %q), want %q", p.script, out, code, errOut, p.want)
		}
	}
	// The memory limit is enforced: the command that goes past it is OOM-killed.
	if _, _, code := f.sh(t, s.ContainerID, "head -c 200m /dev/zero | tail"); code != 137 {
		t.Errorf("200 MiB in a 64 MiB sandbox: exit %d, want 137 (OOM-killed)", code)
	}
}

func TestCreateThatCannotStartFailsAndLeavesNothing(t *testing.T) {
	f := newRuntime(t, profile.Agents{Profiles: map[string]profile.Spec{
		"missing-image": {Image: "sandboxd-no-such-image:never"},
		"greedy":        {CPUs: 64},
	}})
	for _, tc := range []struct{ agent, why string }{
		{"missing-image", "ErrImage"},
		{"greedy", "nschedulable"},
	} {
		t.Run(tc.agent, func(t *testing.T) {
			s := spec(tc.agent)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_, err := f.rt.Create(ctx, s)
			if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("Create: %v; want ErrUnavailable saying %q", err, tc.why)
			}
			if _, err := f.cs.CoreV1().Pods(f.ns).Get(ctx, kube.PodName(s.ChatID, s.SessionID), metav1.GetOptions{}); err == nil {
				t.Fatal("the pod that could not start is still there")
			}
			if got, err := f.rt.Managed(ctx); err != nil || len(got) != 0 {
				t.Fatalf("Managed = %v, %v; want none", got, err)
			}
		})
	}
}

func TestAdmitRefusesAHostFolder(t *testing.T) {
	f := newRuntime(t, profile.Agents{})
	if got, err := f.rt.Admit(context.Background(), "", uuid.New(), "", ""); err != nil || got != "" {
		t.Fatalf("Admit without folder = %q, %v", got, err)
	}
	if _, err := f.rt.Admit(context.Background(), "", uuid.New(), "", "/srv/x"); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("Admit with a host folder: %v; want ErrInvalid", err)
	}
}

func TestStopAndDeleteKeepTheWorkspace(t *testing.T) {
	f := newRuntime(t, profile.Agents{})
	ctx := context.Background()
	first := spec("")
	s := f.create(t, first)
	if _, _, code := f.sh(t, s.ContainerID, "echo kept > /workspace/note"); code != 0 {
		t.Fatal("write failed")
	}
	if err := f.rt.Stop(ctx, s.ContainerID); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := f.cs.CoreV1().Pods(f.ns).Get(ctx, s.ContainerID, metav1.GetOptions{}); err == nil {
		t.Fatal("Stop returned with the pod still there")
	}
	if err := f.rt.Stop(ctx, s.ContainerID); err != nil {
		t.Fatalf("Stop of a gone pod: %v", err)
	}
	// The chat's next sandbox finds its workspace.
	next := spec("")
	next.ChatID = first.ChatID
	s2 := f.create(t, next)
	if out, _, _ := f.sh(t, s2.ContainerID, "cat /workspace/note"); out != "kept" {
		t.Fatalf("workspace after replace: %q", out)
	}
	beforeDelete := time.Now().Add(-time.Second) // the API server's clock is this host's
	if err := f.rt.Delete(ctx, s2.ContainerID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := f.rt.Delete(ctx, s2.ContainerID); err != nil {
		t.Fatalf("Delete of a gone pod: %v", err)
	}
	if _, err := f.cs.CoreV1().PersistentVolumeClaims(f.ns).Get(ctx, kube.ClaimName("", first.ChatID), metav1.GetOptions{}); err != nil {
		t.Fatalf("the workspace claim is gone: %v", err)
	}
	// The workspace life cycle sees the claim, marked used when its last sandbox ended,
	// and removes it on request.
	folders, err := f.rt.Folders(ctx)
	if err != nil || len(folders) != 1 || folders[0].ChatID != first.ChatID || folders[0].Path != f.rt.Derive("", first.ChatID) ||
		folders[0].LastUsed.Before(beforeDelete) {
		t.Fatalf("Folders = %+v, %v; want the chat's claim, last used at its delete (after %s)", folders, err, beforeDelete)
	}
	if removed, err := f.rt.RemoveFolder(ctx, folders[0].Path); err != nil || !removed {
		t.Fatalf("RemoveFolder = %v, %v", removed, err)
	}
	if removed, err := f.rt.RemoveFolder(ctx, folders[0].Path); err != nil || removed {
		t.Fatalf("RemoveFolder of a removed claim = %v, %v; want false, nil", removed, err)
	}
	if _, err := f.rt.RemoveFolder(ctx, "/srv/elsewhere"); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("RemoveFolder of a host path: %v; want ErrInvalid", err)
	}
}

// A chat id used by two tenants names two claims: neither reaches the other's files.
func TestClaimsAreTheTenants(t *testing.T) {
	chat := uuid.New()
	if kube.ClaimName("", chat) != kube.ClaimName(sandbox.DefaultTenant, chat) {
		t.Errorf("the default tenant's claim has two names: %s, %s", kube.ClaimName("", chat), kube.ClaimName(sandbox.DefaultTenant, chat))
	}
	names := map[string]bool{}
	for _, tenant := range []string{"", "acme", "acme_2", "acme-2"} {
		name := kube.ClaimName(tenant, chat)
		if names[name] || len(validation.IsDNS1123Subdomain(name)) > 0 {
			t.Errorf("tenant %q: claim %q is shared or no object name", tenant, name)
		}
		names[name] = true
	}
	f := newRuntime(t, profile.Agents{})
	a, b := spec(""), spec("")
	b.ChatID, b.Tenant = a.ChatID, "acme_2"
	sa, sb := f.create(t, a), f.create(t, b)
	f.sh(t, sa.ContainerID, "echo default > /workspace/who")
	if out, _, _ := f.sh(t, sb.ContainerID, "cat /workspace/who 2>&1 || true"); strings.Contains(out, "default") {
		t.Fatalf("tenant acme_2 reads the default tenant's workspace of the same chat id: %q", out)
	}
}

func TestStopAndDeleteRefuseForeignPods(t *testing.T) {
	f := newRuntime(t, profile.Agents{})
	ctx := context.Background()
	foreign := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "not-sandboxd"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "c", Image: "sandboxd-sandbox:latest", ImagePullPolicy: corev1.PullIfNotPresent,
		}}},
	}
	if _, err := f.cs.CoreV1().Pods(f.ns).Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, op := range map[string]func(context.Context, string) error{"Stop": f.rt.Stop, "Delete": f.rt.Delete} {
		if err := op(ctx, "not-sandboxd"); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("%s of a foreign pod: %v; want ErrInvalid", name, err)
		}
	}
	if _, err := f.cs.CoreV1().Pods(f.ns).Get(ctx, "not-sandboxd", metav1.GetOptions{}); err != nil {
		t.Fatalf("the foreign pod was removed: %v", err)
	}
}

func TestManagedListsThisInstanceOnly(t *testing.T) {
	f := newRuntime(t, profile.Agents{})
	ctx := context.Background()
	s := f.create(t, spec(""))
	cfg := f.cfg
	cfg.Instance = "other"
	other, err := kube.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.rt.Managed(ctx)
	if err != nil || len(got) != 1 || got[0].ID != s.ContainerID || got[0].ChatID != s.ChatID || got[0].SessionID != s.ID || !got[0].Running {
		t.Fatalf("Managed = %+v, %v", got, err)
	}
	if got, err := other.Managed(ctx); err != nil || len(got) != 0 {
		t.Fatalf("another instance's Managed = %+v, %v; want none", got, err)
	}
	id, err := f.rt.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sys, err := f.cs.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("kubernetes cluster %s, namespace %s, instance %s", sys.UID, f.ns, f.cfg.Instance)
	if otherID, _ := other.Identity(ctx); id != want || otherID == id {
		t.Fatalf("Identity = %q (other instance %q); want %q", id, otherID, want)
	}
}

func TestExec(t *testing.T) {
	f := newRuntime(t, profile.Agents{})
	s := f.create(t, spec(""))
	ctx := context.Background()

	t.Run("output, exit code, env, workdir, stdin", func(t *testing.T) {
		for _, spdy := range []bool{false, true} {
			kube.SetSPDYOnly(f.rt, spdy)
			var out, errOut bytes.Buffer
			_, err := f.rt.Exec(ctx, s.ContainerID, lifecycle.ExecCommand{
				Cmd:     []string{"sh", "-c", `pwd; echo "$GREETING"; cat; echo oops >&2; exit 3`},
				Env:     map[string]string{"GREETING": "hello\nworld"},
				Workdir: "sub",
				Stdin:   strings.NewReader("from stdin\n"),
				Stdout:  &out, Stderr: &errOut,
			})
			if !errors.Is(err, sandbox.ErrInvalid) {
				t.Fatalf("Exec in a missing folder: %v; want ErrInvalid", err)
			}
			f.sh(t, s.ContainerID, "mkdir -p /workspace/sub")
			out.Reset()
			errOut.Reset()
			code, err := f.rt.Exec(ctx, s.ContainerID, lifecycle.ExecCommand{
				Cmd:     []string{"sh", "-c", `pwd; echo "$GREETING"; cat; echo oops >&2; exit 3`},
				Env:     map[string]string{"GREETING": "hello\nworld"},
				Workdir: "sub",
				Stdin:   strings.NewReader("from stdin\n"),
				Stdout:  &out, Stderr: &errOut,
			})
			if err != nil || code != 3 || out.String() != "/workspace/sub\nhello\nworld\nfrom stdin\n" || errOut.String() != "oops\n" {
				t.Fatalf("spdy=%v: Exec = %d, %v; stdout %q, stderr %q", spdy, code, err, out.String(), errOut.String())
			}
			f.sh(t, s.ContainerID, "rm -r /workspace/sub") // missing again for the next transport
		}
		kube.SetSPDYOnly(f.rt, false)
	})

	t.Run("refused", func(t *testing.T) {
		for name, cmd := range map[string]lifecycle.ExecCommand{
			"no such command": {Cmd: []string{"no-such-command"}},
			"empty":           {},
			"token variable":  {Cmd: []string{"true"}, Env: map[string]string{"SANDBOXD_EXEC": "x"}},
			"bad name":        {Cmd: []string{"true"}, Env: map[string]string{"A-B": "x"}},
		} {
			if _, err := f.rt.Exec(ctx, s.ContainerID, cmd); !errors.Is(err, sandbox.ErrInvalid) {
				t.Errorf("%s: %v; want ErrInvalid", name, err)
			}
		}
		if _, err := f.rt.Exec(ctx, "sandboxd-no-such-pod", lifecycle.ExecCommand{Cmd: []string{"true"}}); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("missing pod: %v; want ErrNotFound", err)
		}
	})

	t.Run("streamed as it comes", func(t *testing.T) {
		first := make(chan struct{})
		w := &signalWriter{on: "one", ch: first}
		done := make(chan error, 1)
		go func() {
			_, err := f.rt.Exec(ctx, s.ContainerID, lifecycle.ExecCommand{Cmd: []string{"sh", "-c", "echo one; sleep 3; echo two"}, Stdout: w})
			done <- err
		}()
		select {
		case <-first:
		case err := <-done:
			t.Fatalf("the command ended (%v) before its first line was seen", err)
		case <-time.After(2500 * time.Millisecond):
			t.Fatal("the first line did not come while the command ran")
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})

	t.Run("timeout kills the command and what it started", func(t *testing.T) {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := f.rt.Exec(tctx, s.ContainerID, lifecycle.ExecCommand{Cmd: []string{"sh", "-c", "sleep 1000 & setsid sleep 1001 & sleep 1002"}})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Exec: %v; want DeadlineExceeded", err)
		}
		if out, _, _ := f.sh(t, s.ContainerID, "ps -o args | grep 'sleep 100[0-2]' | grep -v grep || true"); out != "" {
			t.Fatalf("left running after the kill:\n%s", out)
		}
	})
}

// signalWriter closes ch when what it has been written contains on.
type signalWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
	on  string
	ch  chan struct{}
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.ch != nil && strings.Contains(w.buf.String(), w.on) {
		close(w.ch)
		w.ch = nil
	}
	return len(p), nil
}

func TestFiles(t *testing.T) {
	f := newRuntime(t, profile.Agents{})
	s := f.create(t, spec(""))
	ctx := context.Background()

	info, err := f.rt.WriteFile(ctx, s, "/workspace/dir/a.txt", strings.NewReader("hello"), 10)
	if err != nil || info.Path != "dir/a.txt" || info.Size != 5 || !info.Mode.IsRegular() {
		t.Fatalf("WriteFile = %+v, %v", info, err)
	}
	if out, _, _ := f.sh(t, s.ContainerID, "stat -c '%u:%g %s' /workspace/dir/a.txt"); out != "1000:1000 5" {
		t.Fatalf("written file: %q; want the sandbox user's, 5 bytes", out)
	}
	rc, info, err := f.rt.OpenFile(ctx, s, "dir/a.txt")
	if err != nil || info.Size != 5 {
		t.Fatalf("OpenFile = %+v, %v", info, err)
	}
	body, err := io.ReadAll(rc)
	_ = rc.Close()
	if err != nil || string(body) != "hello" {
		t.Fatalf("read %q, %v", body, err)
	}
	list, err := f.rt.ListDir(ctx, s, "")
	if err != nil || len(list) != 1 || list[0].Path != "dir" || !list[0].Mode.IsDir() {
		t.Fatalf("ListDir = %+v, %v", list, err)
	}

	if _, err := f.rt.WriteFile(ctx, s, "big", strings.NewReader(strings.Repeat("x", 11)), 10); !errors.Is(err, sandbox.ErrTooLarge) {
		t.Fatalf("WriteFile over the limit: %v; want ErrTooLarge", err)
	}
	if out, _, _ := f.sh(t, s.ContainerID, "ls -A /workspace"); out != "dir" {
		t.Fatalf("a refused write left %q", out)
	}
	if _, _, err := f.rt.OpenFile(ctx, s, "missing"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("OpenFile of a missing file: %v; want ErrNotFound", err)
	}
	if _, err := f.rt.ListDir(ctx, s, "../etc"); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("ListDir ../etc: %v; want ErrInvalid", err)
	}

	// Links the sandbox plants lead nowhere outside its workspace.
	f.sh(t, s.ContainerID, "ln -s /etc /workspace/out && ln -s /etc/passwd /workspace/pw && mkfifo /workspace/fifo")
	for name, call := range map[string]func() error{
		"read through a link":    func() error { _, _, err := f.rt.OpenFile(ctx, s, "pw"); return err },
		"list through a link":    func() error { _, err := f.rt.ListDir(ctx, s, "out"); return err },
		"write through a link":   func() error { _, err := f.rt.WriteFile(ctx, s, "out/x", strings.NewReader("x"), 10); return err },
		"read a pipe":            func() error { _, _, err := f.rt.OpenFile(ctx, s, "fifo"); return err },
		"list a file":            func() error { _, err := f.rt.ListDir(ctx, s, "dir/a.txt"); return err },
		"write over a folder":    func() error { _, err := f.rt.WriteFile(ctx, s, "dir", strings.NewReader("x"), 10); return err },
		"write to the workspace": func() error { _, err := f.rt.WriteFile(ctx, s, "/workspace", strings.NewReader("x"), 10); return err },
	} {
		if err := call(); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("%s: %v; want ErrInvalid", name, err)
		}
	}
}

func TestGVisorRuntimeClass(t *testing.T) {
	f := newRuntime(t, profile.Agents{Profiles: map[string]profile.Spec{"gv": {Runtime: "gvisor", Memory: "128m"}}})
	s := f.create(t, spec("gv"))
	pod, err := f.cs.CoreV1().Pods(f.ns).Get(context.Background(), s.ContainerID, metav1.GetOptions{})
	if err != nil || pod.Spec.RuntimeClassName == nil || *pod.Spec.RuntimeClassName != "gvisor" {
		t.Fatalf("runtimeClassName: %v", err)
	}
	if out, _, _ := f.sh(t, s.ContainerID, "dmesg | head -1"); !strings.Contains(out, "gVisor") {
		t.Fatalf("dmesg = %q; want gVisor's kernel", out)
	}
	if out, _, _ := f.sh(t, s.ContainerID, "id -u; grep CapEff /proc/self/status | cut -f2"); out != "1000\n0000000000000000" {
		t.Fatalf("user and capabilities under gVisor: %q", out)
	}
}

// The scheduler's messages for a workspace claim on the way wait; the others fail the create.
func TestVolumePending(t *testing.T) {
	for msg, want := range map[string]bool{
		`0/1 nodes are available: persistentvolumeclaim "sandboxd-ws-x" not found.`:                                     true,
		`0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims.`:                                    true,
		`0/1 nodes are available: 1 node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s).`:         true,
		`0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available: 1 No preemption victims.`: false,
		`0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }.`:                    false,
	} {
		if got := kube.VolumePending(msg); got != want {
			t.Errorf("VolumePending(%q) = %v, want %v", msg, got, want)
		}
	}
}
