package docker_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
)

// buildImage builds an image from the sandbox image with the Dockerfile lines more, and
// removes it at the test's end.
func buildImage(t *testing.T, cli *client.Client, more string) string {
	t.Helper()
	base := dockertest.Image(t, cli)
	tag := "sandboxd-test-" + uuid.NewString()[:8] + ":latest"
	cmd := exec.Command("docker", "build", "--quiet", "-t", tag, "-")
	cmd.Stdin = strings.NewReader("FROM " + base + "\n" + more + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", tag).Run() })
	return tag
}

// The image's own entrypoint and command, which the engine does not run with the agent
// as the entrypoint, run as the agent's child: with the command's arguments, as the
// sandbox's user, without sandboxd's variable, beside the commands the agent runs; the
// stop's SIGTERM reaches them within the grace. An image command that ends leaves the
// sandbox serving.
func TestTheImagesOwnCommandRunsUnderTheAgent(t *testing.T) {
	cli := dockertest.Client(t)
	entry := buildImage(t, cli, `ENTRYPOINT ["/bin/sh", "-c", "echo \"$0 $* uid=$(id -u) parent=$(tr '\\0' ' ' </proc/$PPID/cmdline)var=${SANDBOXD_AGENT_COMMAND:-none}\" > /tmp/entry; trap 'echo term > /workspace/term; exit 0' TERM; while :; do sleep 0.1; done", "entry"]
CMD ["a", "b"]`)
	e := newEnv(t, func(c *docker.Config) {
		c.Profiles = testProfiles(t, profile.Agents{Default: profile.Spec{Image: entry}})
		c.StopTimeout = 10 * time.Second
	})
	s := e.create(t, newSpec(""))
	var out string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, out = run(t, e, s.ContainerID, "sh", "-c", "cat /tmp/entry 2>/dev/null")
		if out != "" || time.Now().After(deadline) {
			break
		}
	}
	if want := "entry a b uid=1000 parent=" + docker.AgentTarget + " var=none\n"; out != want {
		t.Errorf("the image's command wrote %q, want %q", out, want)
	}
	if got := parentOf(t, e, s.ContainerID); got != docker.AgentTarget {
		t.Errorf("a command's parent is %q, want the agent", got)
	}
	if _, env := run(t, e, s.ContainerID, "sh", "-c", "echo ${SANDBOXD_AGENT_COMMAND:-none}"); env != "none\n" {
		t.Errorf("a command sees SANDBOXD_AGENT_COMMAND=%q", env)
	}
	if err := e.rt.Stop(context.Background(), s.ContainerID); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(s.VolumeHostPath, "term")); err != nil || string(b) != "term\n" {
		t.Errorf("after a graceful stop the image's command's trap wrote %q (%v), want term", b, err)
	}

	// An image whose command ends at once: the sandbox lives on, its commands run.
	quick := buildImage(t, cli, `CMD ["sh", "-c", "exit 3"]`)
	e = newEnv(t, func(c *docker.Config) {
		c.Profiles = testProfiles(t, profile.Agents{Default: profile.Spec{Image: quick}})
	})
	s = e.create(t, newSpec(""))
	time.Sleep(500 * time.Millisecond)
	if code, out := runThroughAgent(t, e, s.ContainerID, "echo", "alive"); code != 0 || out != "alive\n" {
		t.Errorf("after the image's command ended: exit %d, %q", code, out)
	}
}

// What the engine logs of an agent's sandbox: nothing while the agent's stdout carries
// the frames (attached); the profile's bounded log when each replica has an agent of its
// own, which keeps the image's command's output and none of the commands' frames.
func TestAgentSandboxLogs(t *testing.T) {
	cli := dockertest.Client(t)
	img := buildImage(t, cli, `CMD ["sh", "-c", "echo from-the-image; exec sleep 1000"]`)
	for _, tc := range []struct {
		name   string
		shared bool
		driver string
	}{{"attached", false, "none"}, {"replicas", true, "json-file"}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *docker.Config) {
				c.Profiles = testProfiles(t, profile.Agents{Default: profile.Spec{Image: img}})
				c.SharedSandboxes = tc.shared
			})
			s := e.create(t, newSpec(""))
			c := e.inspect(t, s.ContainerID)
			if got := c.HostConfig.LogConfig.Type; got != tc.driver {
				t.Fatalf("log driver %q, want %q", got, tc.driver)
			}
			if code, out := run(t, e, s.ContainerID, "echo", "secret-of-a-command"); code != 0 || out != "secret-of-a-command\n" {
				t.Fatalf("exec: %d %q", code, out)
			}
			if !tc.shared {
				return
			}
			var logs string
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				b, _ := exec.Command("docker", "logs", s.ContainerID).CombinedOutput()
				if logs = string(b); strings.Contains(logs, "from-the-image") || time.Now().After(deadline) {
					break
				}
			}
			if !strings.Contains(logs, "from-the-image") || strings.Contains(logs, "secret-of-a-command") {
				t.Errorf("docker logs: %q, want the image's output and no command's", logs)
			}
		})
	}
}
