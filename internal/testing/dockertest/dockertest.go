// Package dockertest gives tests a real Docker engine: a client (or a skip on a machine
// without one, but a failure in CI), the sandbox image, per-test instance ids whose
// containers are removed when the test ends, and commands run inside a container.
//
// It is imported by _test.go files only.
package dockertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
)

// ImageRef is the sandbox image the tests run; scripts/build-image.sh builds it.
const ImageRef = "sandboxd-sandbox:latest"

// LabelInstance is the label that carries a sandboxd instance id (docker.LabelInstance;
// repeated here so that this package needs nothing of the code under test).
const LabelInstance = "sandboxd.instance"

// Client returns a client of the engine the environment names, closed when the test
// ends. When the engine does not answer the test is skipped, or fails if CI=true.
func Client(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatalf("dockertest: client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("dockertest: no Docker engine, and CI=true: %v", err)
		}
		t.Skipf("dockertest: no Docker engine: %v", err)
	}
	return cli
}

// Image makes sure the sandbox image exists, building it with scripts/build-image.sh when
// it is missing, and returns its reference.
func Image(t testing.TB, cli *client.Client) string {
	t.Helper()
	ctx := context.Background()
	if _, err := cli.ImageInspect(ctx, ImageRef); err == nil {
		return ImageRef
	}
	script := filepath.Join(repoRoot(t), "scripts", "build-image.sh")
	out, err := exec.CommandContext(ctx, script).CombinedOutput()
	if err != nil {
		t.Fatalf("dockertest: %s: %v\n%s", script, err, out)
	}
	if _, err := cli.ImageInspect(ctx, ImageRef); err != nil {
		t.Fatalf("dockertest: image %s after build: %v", ImageRef, err)
	}
	return ImageRef
}

// Agent builds the in-sandbox agent (cmd/sandboxd-agent, static) and returns the path of
// its binary, for docker.Config.AgentPath. Each test process builds it once (go's build
// cache makes that quick) into the user's cache folder (sandboxd-test), under a name
// taken from its content, sandboxd-agent-<first 12 hex digits of its SHA-256>: test runs
// of different checkouts, each with its own agent, then never mount one another's. The
// file is built aside and renamed into place, so it is always whole; one of that name
// already there is the same agent, and is kept as it is.
func Agent(t testing.TB) string {
	t.Helper()
	agentOnce.Do(func() { agentPath, agentErr = buildAgent(repoRoot(t)) })
	if agentErr != nil {
		t.Fatalf("dockertest: %v", agentErr)
	}
	return agentPath
}

var (
	agentOnce sync.Once
	agentPath string
	agentErr  error
)

func buildAgent(root string) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "sandboxd-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "building-sandboxd-agent-*")
	if err != nil {
		return "", err
	}
	_ = tmp.Close()
	defer os.Remove(tmp.Name())
	build := exec.Command("go", "build", "-o", tmp.Name(), "./cmd/sandboxd-agent")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the agent: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(tmp.Name())
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(bin)
	path := filepath.Join(dir, "sandboxd-agent-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.Chmod(tmp.Name(), 0o755); err != nil {
		return "", err
	}
	return path, os.Rename(tmp.Name(), path)
}

// Instance returns an instance id unique to this test run and removes, when the test
// ends, every container that carries it.
func Instance(t testing.TB, cli *client.Client) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	id := "test-" + hex.EncodeToString(b)
	RemoveInstanceAtCleanup(t, cli, id)
	return id
}

// RemoveInstanceAtCleanup force-removes, when the test ends, every container whose
// instance label is instance.
func RemoveInstanceAtCleanup(t testing.TB, cli *client.Client, instance string) {
	t.Helper()
	t.Cleanup(func() {
		for _, id := range Containers(t, cli, LabelInstance+"="+instance) {
			Remove(t, cli, id)
		}
	})
}

// RemoveAtCleanup force-removes the container id when the test ends; one that is gone
// already is fine.
func RemoveAtCleanup(t testing.TB, cli *client.Client, id string) {
	t.Helper()
	t.Cleanup(func() { Remove(t, cli, id) })
}

// Remove force-removes the container id; one that is gone already is fine.
func Remove(t testing.TB, cli *client.Client, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		t.Errorf("dockertest: remove %s: %v", id, err)
	}
}

// Containers returns the ids of every container, running or not, that carries all the
// given "key=value" labels.
func Containers(t testing.TB, cli *client.Client, labels ...string) []string {
	t.Helper()
	res, err := cli.ContainerList(context.Background(), client.ContainerListOptions{
		All:     true,
		Filters: client.Filters{}.Add("label", labels...),
	})
	if err != nil {
		t.Fatalf("dockertest: list containers: %v", err)
	}
	ids := make([]string, 0, len(res.Items))
	for _, c := range res.Items {
		ids = append(ids, c.ID)
	}
	return ids
}

// Exec runs cmd in the running container id as its default user and returns what it
// wrote (stdout and stderr together) and its exit code.
func Exec(t testing.TB, cli *client.Client, id string, cmd ...string) (output string, exitCode int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	created, err := cli.ExecCreate(ctx, id, client.ExecCreateOptions{
		Cmd: cmd, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		t.Fatalf("dockertest: exec create %v: %v", cmd, err)
	}
	att, err := cli.ExecAttach(ctx, created.ID, client.ExecAttachOptions{})
	if err != nil {
		t.Fatalf("dockertest: exec attach %v: %v", cmd, err)
	}
	defer att.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, att.Reader); err != nil {
		t.Fatalf("dockertest: exec read %v: %v", cmd, err)
	}
	for {
		res, err := cli.ExecInspect(ctx, created.ID, client.ExecInspectOptions{})
		if err != nil {
			t.Fatalf("dockertest: exec inspect %v: %v", cmd, err)
		}
		if !res.Running {
			return buf.String(), res.ExitCode
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// repoRoot is the folder of the module's go.mod, found from the working directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("dockertest: no go.mod above the working directory")
		}
		dir = parent
	}
}
