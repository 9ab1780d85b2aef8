package docker_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/hostfiles"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// hostFiles is the file API from the host, as cmd/sandboxd wires it.
func hostFiles(e env) *hostfiles.Files {
	return hostfiles.New(hostfiles.Config{
		Open:       e.rt.OpenWorkspace,
		OpenTmp:    e.rt.OpenTmp,
		MountPoint: e.profiles.WorkspaceMount,
		Owner: func(agentID string) *hostfiles.Owner {
			uid, gid := e.profiles.SandboxUser(agentID)
			return &hostfiles.Owner{UID: uid, GID: gid}
		},
	})
}

// noHost is the host's way for a test of the agent's: any call is a failure.
type noHost struct{ t *testing.T }

var errNoHost = errors.New("the host's way was taken")

func (h noHost) WriteFile(context.Context, sandbox.Session, string, io.Reader, int64) (lifecycle.FileInfo, error) {
	h.t.Error(errNoHost)
	return lifecycle.FileInfo{}, errNoHost
}

func (h noHost) OpenFile(context.Context, sandbox.Session, string) (io.ReadCloser, lifecycle.FileInfo, error) {
	h.t.Error(errNoHost)
	return nil, lifecycle.FileInfo{}, errNoHost
}

func (h noHost) ListDir(context.Context, sandbox.Session, string) ([]lifecycle.FileInfo, error) {
	h.t.Error(errNoHost)
	return nil, errNoHost
}

// filesWays are the ways to a sandbox's files: the host's, and the agent's (attached, and
// a replica's own), which must never take the host's.
var filesWays = []struct {
	name  string
	tweak func(*docker.Config)
	files func(t *testing.T, e env) lifecycle.Files
}{
	{"host", nil, func(_ *testing.T, e env) lifecycle.Files { return hostFiles(e) }},
	{"agent", nil, func(t *testing.T, e env) lifecycle.Files { return e.rt.Files(noHost{t}, docker.FilesAgent) }},
	{"agent-replica", func(c *docker.Config) { c.SharedSandboxes = true },
		func(t *testing.T, e env) lifecycle.Files { return e.rt.Files(noHost{t}, docker.FilesAgent) }},
}

// The conformance suite of the file API in real sandboxes, on every way.
func TestFilesConformance(t *testing.T) {
	for _, way := range filesWays {
		t.Run(way.name, func(t *testing.T) {
			e := newEnv(t, way.tweak)
			lifecycletest.TestFiles(t, func(t *testing.T) lifecycletest.FilesFixture {
				s := e.create(t, newSpec(""))
				return lifecycletest.FilesFixture{Files: way.files(t, e), Session: s, Dir: s.VolumeHostPath, UID: 1000}
			})
		})
	}
}
