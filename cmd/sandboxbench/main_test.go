package main

// A smoke test of the benchmark: a -quick run against the real engine and SQLite must
// produce every row with a positive figure, baseline and ratio. It asserts no timing:
// speed is measured, not asserted.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/client"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
	"github.com/sandboxd/sandboxd/internal/testing/kubetest"
)

func TestMain(m *testing.M) {
	// The bench runs its own binary again as the trivial server: here, the test binary.
	if os.Getenv(roleEnv) == "trivial" {
		if err := serveTrivial(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestQuickRunProducesEveryRow(t *testing.T) {
	cli := dockertest.Client(t)
	image := dockertest.Image(t, cli)
	out := filepath.Join(t.TempDir(), "bench.json")
	var stdout, stderr bytes.Buffer
	runID := "sbench-test-" + randomHex(4)
	err := run(context.Background(), []string{"-quick", "-registries", "sqlite", "-image", image, "-json", out, "-run-id", runID}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"reuse throughput", "reuse p50", "reuse p99", "context: reuse throughput vs bare handler",
		"cold create p50 (answered, exec-ready)", "cold create p99 (answered, exec-ready)",
		"cold create p50 + first exec", "cold create p99 + first exec", "exec of true",
		"distinct creates at once", "sweep drain", "RSS with",
		"hot chat reuse throughput", "hot chat reuse p99", "restart drain", "stop grace",
		"pool create p50 (answered, exec-ready)", "pool create p99 (answered, exec-ready)",
		"pool create p50 + first exec", "pool create p99 + first exec",
		"registry Save", "registry Get", "registry ListExpired", "registry Remove",
		"density: idle sandboxes held", "density: memory per sandbox (sandboxd + engine)",
		"density: sandboxd memory per tracked session",
		"egress create p50 (answered, exec-ready)", "egress create p99 (answered, exec-ready)",
		"egress download of 10 MB through the proxy",
		"exec `true` p50", "exec `true` p99", "concurrent execs of `true`", "streamed exec: time to first byte",
	}
	for _, name := range want {
		found := false
		for _, r := range rep.Rows {
			if r.Registry == "sqlite" && strings.Contains(r.Name, name) {
				found = true
			}
		}
		if !found {
			t.Errorf("no sqlite row %q", name)
		}
	}
	for _, r := range rep.Rows {
		// sandboxd's growth over a quick run's two sessions is within the noise of its heap.
		growth := strings.HasPrefix(r.Name, "density: sandboxd memory per tracked session")
		if !((r.Value > 0 || growth) && r.Baseline > 0 && (r.Ratio > 0 || growth)) || r.BaselineName == "" || r.Samples < 1 {
			t.Errorf("row %s/%s: value %g, baseline %g (%q), ratio %g, samples %d: want all positive",
				r.Registry, r.Name, r.Value, r.Baseline, r.BaselineName, r.Ratio, r.Samples)
		}
		if len(r.Targets) > 0 && r.Met == nil {
			t.Errorf("row %s: targets without a verdict", r.Name)
		}
	}
	if rep.Machine.CPUs < 1 || rep.Machine.Kernel == "" || rep.Machine.DockerVersion == "" {
		t.Errorf("machine %+v: want CPUs, kernel and Docker version", rep.Machine)
	}
	if !strings.Contains(stdout.String(), "cold create p50 (answered, exec-ready)") {
		t.Errorf("the table lacks the cold create row:\n%s", stdout.String())
	}
	if left := dockertest.Containers(t, cli, "sandboxd.managed-by=sandboxd"); len(left) > 0 {
		res, err := cli.ContainerList(context.Background(), client.ContainerListOptions{
			All: true, Filters: client.Filters{}.Add("label", "sandboxd.instance"),
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range res.Items {
			if strings.HasPrefix(c.Labels["sandboxd.instance"], runID) {
				t.Errorf("container %s (%s) of the bench left behind", c.ID, c.Labels["sandboxd.instance"])
			}
		}
	}
}

// A quick run of the Kubernetes measurements on the test cluster: every row, with a
// positive figure, baseline and ratio, and the run's namespace removed.
func TestQuickKubernetesRun(t *testing.T) {
	kubeconfig := kubetest.Kubeconfig(t)
	cli := dockertest.Client(t)
	image := dockertest.Image(t, cli)
	out := filepath.Join(t.TempDir(), "bench.json")
	var stdout, stderr bytes.Buffer
	runID := "sbench-test-" + randomHex(4)
	err := run(context.Background(), []string{"-quick", "-only", "kube", "-registries", "sqlite", "-kubeconfig", kubeconfig,
		"-image", image, "-json", out, "-run-id", runID}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"cold create p50 (answered, exec-ready)", "cold create p99 (answered, exec-ready)", "cold create p50 + first exec",
		"distinct creates at once", "exec `true` p50", "exec `true` p99", "exec `true` p50 vs a bare pods/exec",
		"pool create p50 (answered, exec-ready)", "pool create p99 (answered, exec-ready)", "pool create p50 + first exec",
	}
	for _, name := range want {
		if !slices.ContainsFunc(rep.Rows, func(r Row) bool { return r.Registry == "kubernetes" && strings.Contains(r.Name, name) }) {
			t.Errorf("no kubernetes row %q", name)
		}
	}
	for _, r := range rep.Rows {
		if r.Value <= 0 || r.Baseline <= 0 || r.Ratio <= 0 || r.BaselineName == "" || r.Samples < 1 {
			t.Errorf("row %s/%s: value %g, baseline %g (%q), ratio %g, samples %d: want all positive",
				r.Registry, r.Name, r.Value, r.Baseline, r.BaselineName, r.Ratio, r.Samples)
		}
	}
	ns, err := kubetest.Admin(t).CoreV1().Namespaces().Get(context.Background(), runID, metav1.GetOptions{})
	if err == nil && ns.DeletionTimestamp == nil {
		t.Errorf("the run's namespace %s is still there", runID)
	}
}
