// Package sandboxdtest runs a real sandboxd for the tests of its clients (the Go
// client's examples, the MCP server, sandboxctl mcp): the binary (sandboxdproc) on its
// own SQLite file, volume root and instance id of the real Docker engine, stopped with
// every container of that instance removed.
//
// It is imported by _test.go files only.
package sandboxdtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/testing/sandboxdproc"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
)

// Token is the bearer token every server started here accepts.
const Token = "sandboxdtest-token"

const imageRef = "sandboxd-sandbox:latest"

// Build builds cmd/sandboxd into a temporary folder and returns the binary's path and a
// function that removes it.
func Build(ctx context.Context) (binary string, remove func(), err error) {
	dir, err := os.MkdirTemp("", "sandboxdtest-")
	if err != nil {
		return "", nil, err
	}
	binary, err = sandboxdproc.Build(ctx, dir, false)
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, err
	}
	return binary, func() { _ = os.RemoveAll(dir) }, nil
}

// Engine returns a client of the Docker engine the environment names, once it answers
// and the sandbox image is there (built with scripts/build-image.sh when missing).
func Engine(ctx context.Context) (*client.Client, error) {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("sandboxdtest: docker client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("sandboxdtest: no Docker engine: %w", err)
	}
	if _, err := cli.ImageInspect(ctx, imageRef); err != nil {
		out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		if err == nil {
			script := filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), "scripts", "build-image.sh")
			out, err = exec.CommandContext(ctx, script).CombinedOutput()
		}
		if err != nil {
			_ = cli.Close()
			return nil, fmt.Errorf("sandboxdtest: build the sandbox image: %v\n%s", err, out)
		}
	}
	return cli, nil
}

// Server is one run of the binary.
type Server struct {
	URL      string // http://127.0.0.1:port
	Instance string // its docker.instance

	engine  *client.Client
	proc    *sandboxdproc.Proc
	dataDir string
	logs    syncbuf.Buffer
}

// Start runs binary with Token, a fresh instance id and data folder, and the settings
// (KEY=VALUE environment entries) after them, and returns once it listens.
func Start(ctx context.Context, engine *client.Client, binary string, settings ...string) (*Server, error) {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	dataDir, err := os.MkdirTemp("", "sandboxdtest-data-")
	if err != nil {
		return nil, err
	}
	s := &Server{Instance: "test-" + hex.EncodeToString(b), engine: engine, dataDir: dataDir}
	cmd := sandboxdproc.Config{
		Binary: binary, Dir: dataDir, Token: Token,
		Registry:   "sqlite:" + filepath.Join(dataDir, "sandboxd.db"),
		Instance:   s.Instance,
		VolumeRoot: filepath.Join(dataDir, "volumes"),
		Image:      imageRef,
		LogLevel:   "info",
		Settings:   settings,
	}.Command()
	s.proc, err = sandboxdproc.Start(ctx, cmd, &s.logs)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("sandboxdtest: %w\n%s", err, s.logs.String()), s.cleanup())
	}
	s.URL = s.proc.Base
	return s, nil
}

// Stop ends the server (SIGTERM), removes every container of its instance and its data
// folder.
func (s *Server) Stop() error {
	err := s.proc.Stop(syscall.SIGTERM)
	if err != nil {
		err = fmt.Errorf("sandboxdtest: stop: %w", err)
	}
	return errors.Join(err, s.cleanup())
}

func (s *Server) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	res, err := s.engine.ContainerList(ctx, client.ContainerListOptions{
		All: true, Filters: client.Filters{}.Add("label", "sandboxd.instance="+s.Instance),
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("sandboxdtest: list containers: %w", err))
	} else {
		for _, c := range res.Items {
			if _, err := s.engine.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
				errs = append(errs, fmt.Errorf("sandboxdtest: remove %s: %w", c.ID, err))
			}
		}
	}
	if err := os.RemoveAll(s.dataDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Log returns what the server logged so far.
func (s *Server) Log() string { return s.logs.String() }

// StartT starts a server for test t, stopped when the test ends (its log shown when the
// test failed). Without a Docker engine the test is skipped, or fails when CI=true.
func StartT(t testing.TB, binary string, settings ...string) *Server {
	t.Helper()
	ctx := context.Background()
	engine, err := Engine(ctx)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	t.Cleanup(func() { _ = engine.Close() })
	s, err := Start(ctx, engine, binary, settings...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("sandboxd log:\n%s", s.Log())
		}
	})
	return s
}
