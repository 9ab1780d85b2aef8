package dockertest_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestClientWithoutEngine is run in a child process (see below) with DOCKER_HOST pointing
// nowhere.
func TestClientWithoutEngine(t *testing.T) {
	if os.Getenv("DOCKERTEST_CHILD") != "1" {
		t.Skip("run by TestMissingEngineSkipsButFailsInCI")
	}
	dockertest.Client(t)
	t.Log("reached the engine")
}

func TestMissingEngineSkipsButFailsInCI(t *testing.T) {
	nowhere := "unix://" + filepath.Join(t.TempDir(), "no-docker.sock")
	for _, tc := range []struct {
		ci       string
		wantFail bool
		want     string
	}{
		{ci: "", wantFail: false, want: "--- SKIP: TestClientWithoutEngine"},
		{ci: "false", wantFail: false, want: "--- SKIP: TestClientWithoutEngine"},
		{ci: "true", wantFail: true, want: "--- FAIL: TestClientWithoutEngine"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestClientWithoutEngine$", "-test.v")
		cmd.Env = append(os.Environ(), "DOCKERTEST_CHILD=1", "DOCKER_HOST="+nowhere, "CI="+tc.ci)
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != tc.wantFail || !strings.Contains(string(out), tc.want) {
			t.Errorf("CI=%q: err %v, want failure %v and %q in:\n%s", tc.ci, err, tc.wantFail, tc.want, out)
		}
	}
}

func TestInstanceContainersAreRemovedAtCleanup(t *testing.T) {
	cli := dockertest.Client(t)
	dockertest.Image(t, cli)
	var inst string
	t.Run("inner", func(t *testing.T) {
		inst = dockertest.Instance(t, cli)
		out, err := exec.Command("docker", "create", "--label", dockertest.LabelInstance+"="+inst,
			"--network", "none", dockertest.ImageRef).CombinedOutput()
		if err != nil {
			t.Fatalf("docker create: %v\n%s", err, out)
		}
		if got := dockertest.Containers(t, cli, dockertest.LabelInstance+"="+inst); len(got) != 1 {
			t.Fatalf("containers = %v, want 1", got)
		}
	})
	if got := dockertest.Containers(t, cli, dockertest.LabelInstance+"="+inst); len(got) != 0 {
		t.Errorf("left after cleanup: %v", got)
	}
}

// Test runs of different checkouts share the cache folder: each names its agent by its
// content, so none mounts another's.
func TestAgentIsNamedByItsContent(t *testing.T) {
	path := dockertest.Agent(t)
	bin, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bin)
	if want := "sandboxd-agent-" + hex.EncodeToString(sum[:])[:12]; filepath.Base(path) != want {
		t.Errorf("agent at %s, want it named %s", path, want)
	}
	if filepath.Base(filepath.Dir(path)) != "sandboxd-test" {
		t.Errorf("agent at %s, want it in the cache folder sandboxd-test", path)
	}
	if fi, err := os.Stat(path); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("agent %s of mode %v, not executable", path, fi.Mode())
	}
}
