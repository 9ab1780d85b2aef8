package docker_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/hostfiles"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// tmpWays are the ways of the file API to a sandbox's /tmp: the host's (/proc/<pid>/root),
// the agent's, and cmd/sandboxd's (FilesHost: the agent's to /tmp, the host's to the
// workspace).
var tmpWays = []string{"host", "agent", "sandboxd"}

// newTmpEnv is an agentEnv whose file API, on way, reaches the sandbox's /tmp when tmp
// is set.
func newTmpEnv(t *testing.T, tmp bool, way string) agentEnv {
	t.Helper()
	ps := testProfiles(t, profile.Agents{Default: profile.Spec{FilesTmp: &tmp}})
	return newAgentEnv(t, func(c *lifecycle.Config) {
		rt := c.Runtime.(*docker.Runtime)
		host := hostfiles.New(hostfiles.Config{
			Open:       rt.OpenWorkspace,
			OpenTmp:    rt.OpenTmp,
			MountPoint: ps.WorkspaceMount,
			Owner: func(agentID string) *hostfiles.Owner {
				uid, gid := ps.SandboxUser(agentID)
				return &hostfiles.Owner{UID: uid, GID: gid}
			},
		})
		switch way {
		case "host":
			c.Files = host
		case "agent":
			c.Files = rt.Files(noHost{t}, docker.FilesAgent)
		default:
			c.Files = rt.Files(host, docker.FilesHost)
		}
	}, func(c *docker.Config) { c.Profiles = ps })
}

// forEachTmpWay runs f once per way to /tmp.
func forEachTmpWay(t *testing.T, f func(t *testing.T, way string)) {
	for _, way := range tmpWays {
		t.Run(way, func(t *testing.T) { f(t, way) })
	}
}

func TestFilesReachTheSandboxTmpWhenTheProfileSaysSo(t *testing.T) {
	forEachTmpWay(t, testFilesReachTheSandboxTmp)
}

func testFilesReachTheSandboxTmp(t *testing.T, way string) {
	a := newTmpEnv(t, true, way)
	ctx := context.Background()
	chat := a.session.ChatID

	a.sh(t, "mkdir -p /tmp/out && printf from-sandbox > /tmp/out/a.txt")
	rc, fi, err := a.svc.OpenFile(ctx, chat, "/tmp/out/a.txt")
	if err != nil {
		t.Fatalf("OpenFile /tmp/out/a.txt: %v", err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "from-sandbox" || fi.Path != "/tmp/out/a.txt" {
		t.Fatalf("read %q as %q", got, fi.Path)
	}

	data := []byte{0, 1, 2, 255, 'x'}
	if _, err := a.svc.WriteFile(ctx, chat, "/tmp/in/b.bin", bytes.NewReader(data)); err != nil {
		t.Fatalf("WriteFile /tmp/in/b.bin: %v", err)
	}
	if out := a.sh(t, "od -An -tu1 /tmp/in/b.bin | tr -s ' '; stat -c %u /tmp/in/b.bin; rm /tmp/in/b.bin"); !strings.Contains(out, "0 1 2 255 120") || !strings.Contains(out, "1000") {
		t.Fatalf("inside the sandbox the uploaded file reads %q", out)
	}
	list, err := a.svc.ListDir(ctx, chat, "/tmp/out")
	if err != nil || len(list) != 1 || list[0].Path != "/tmp/out/a.txt" {
		t.Fatalf("ListDir /tmp/out = %+v, %v", list, err)
	}
	// The workspace is still the workspace.
	if _, err := a.svc.WriteFile(ctx, chat, "notes.txt", strings.NewReader("ws")); err != nil {
		t.Fatal(err)
	}
	if out := a.sh(t, "cat /workspace/notes.txt"); out != "ws" {
		t.Fatalf("workspace file reads %q", out)
	}
}

func TestLinksPlantedInTmpLeadNowhere(t *testing.T) {
	forEachTmpWay(t, testLinksPlantedInTmpLeadNowhere)
}

func testLinksPlantedInTmpLeadNowhere(t *testing.T, way string) {
	a := newTmpEnv(t, true, way)
	ctx := context.Background()
	chat := a.session.ChatID
	a.sh(t, "ln -s / /tmp/root && ln -s /etc/passwd /tmp/pw && ln -s ../workspace /tmp/ws && ln -s ../etc /tmp/up")
	for _, p := range []string{"/tmp/root/etc/passwd", "/tmp/pw", "/tmp/ws/anything", "/tmp/up/passwd", "/tmp/../etc/passwd"} {
		if rc, _, err := a.svc.OpenFile(ctx, chat, p); !errors.Is(err, sandbox.ErrInvalid) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("OpenFile(%q): err = %v, want ErrInvalid", p, err)
		}
	}
	for _, p := range []string{"/tmp/root/tmp/evil", "/tmp/up/evil", "/tmp/ws/evil"} {
		if _, err := a.svc.WriteFile(ctx, chat, p, strings.NewReader("evil")); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("WriteFile(%q): err = %v, want ErrInvalid", p, err)
		}
	}
	if _, err := a.svc.ListDir(ctx, chat, "/tmp/root"); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("ListDir through a link to /: err = %v, want ErrInvalid", err)
	}
	if _, err := os.Stat("/tmp/evil"); err == nil {
		t.Error("a file was written on the host's /tmp")
	}
	if out := a.sh(t, "ls /etc /workspace"); strings.Contains(out, "evil") {
		t.Errorf("a file was written outside the sandbox's /tmp: %s", out)
	}
}

func TestTmpIsClosedUnlessTheProfileOpensIt(t *testing.T) {
	forEachTmpWay(t, testTmpIsClosedUnlessTheProfileOpensIt)
}

func testTmpIsClosedUnlessTheProfileOpensIt(t *testing.T, way string) {
	a := newTmpEnv(t, false, way)
	a.sh(t, "echo secret > /tmp/s")
	if _, _, err := a.svc.OpenFile(context.Background(), a.session.ChatID, "/tmp/s"); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("OpenFile /tmp/s with a profile that gives no /tmp: err = %v, want ErrInvalid", err)
	}
}
