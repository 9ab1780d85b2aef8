package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

func TestRunRefusesBadConfig(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"open API on every interface", []string{"--listen", "0.0.0.0:0"}, "no tokens"},
		{"unknown registry", []string{"--registry", "mysql://db"}, "registry"},
		{"stray argument", []string{"serve"}, "unexpected arguments"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, nil, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run = %v, want an error about %q", err, tc.want)
			}
		})
	}
}

// A profile whose OCI runtime (gVisor's runsc, say) the engine lacks stops sandboxd at
// start-up, with the runtime's name, before it listens: every create of that profile
// would fail otherwise.
func TestRunRefusesARuntimeTheEngineLacks(t *testing.T) {
	cli := dockertest.Client(t)
	image := dockertest.Image(t, cli)
	dir := t.TempDir()
	env := []string{
		"SANDBOXD_LISTEN=127.0.0.1:0",
		"SANDBOXD_REGISTRY=sqlite:" + filepath.Join(dir, "sandboxd.db"),
		"SANDBOXD_DOCKER_INSTANCE=" + dockertest.Instance(t, cli),
		"SANDBOXD_DOCKER_VOLUME_ROOT=" + filepath.Join(dir, "volumes"),
		"SANDBOXD_AGENTS_DEFAULT_IMAGE=" + image,
		"SANDBOXD_AGENTS_DEFAULT_RUNTIME=sandboxd-no-such-runtime",
	}
	logs := &syncbuf.Buffer{}
	err := run(context.Background(), nil, env, logs, logs)
	if err == nil || !strings.Contains(err.Error(), `runtime "sandboxd-no-such-runtime"`) {
		t.Fatalf("run = %v, want a refusal naming the runtime", err)
	}
	if strings.Contains(logs.String(), `"msg":"listening"`) {
		t.Errorf("sandboxd listened before refusing:\n%s", logs.String())
	}
}

func TestRunHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, nil, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "--registry") {
		t.Errorf("usage lacks the flags:\n%s", stderr.String())
	}
}

// run in-process: it serves, and returns nil once its context ends, leaving no goroutine
// behind (the HTTP server, the jobs, the Docker client and the registry are all closed).
func TestRunServesAndStopsInProcess(t *testing.T) {
	cli := dockertest.Client(t)
	image := dockertest.Image(t, cli)
	instance := dockertest.Instance(t, cli)
	dir := t.TempDir()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	env := []string{
		"SANDBOXD_LISTEN=127.0.0.1:0",
		"SANDBOXD_REGISTRY=sqlite:" + filepath.Join(dir, "sandboxd.db"),
		"SANDBOXD_DOCKER_INSTANCE=" + instance,
		"SANDBOXD_DOCKER_VOLUME_ROOT=" + filepath.Join(dir, "volumes"),
		"SANDBOXD_AGENTS_DEFAULT_IMAGE=" + image,
		"SANDBOXD_SWEEP_INTERVAL=100ms",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncbuf.Buffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, env, logs, logs) }()

	var addr string
	waitfor.True(t, 30*time.Second, "run listens", func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				addr = rec.Addr
				return true
			}
		}
		return false
	})
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	api, err := client.New("http://"+addr, "", &http.Client{Transport: transport})
	if err != nil {
		t.Fatal(err)
	}
	s, result, err := api.Create(context.Background(), uuid.NewString(), client.CreateBody{})
	if err != nil || result != client.Created {
		t.Fatalf("create: %v %v", result, err)
	}
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var metrics bytes.Buffer
	_, _ = metrics.ReadFrom(res.Body)
	res.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if !strings.Contains(metrics.String(), `sandbox_create_total{`) {
		t.Errorf("/metrics lacks sandbox_create_total:\n%s", metrics.String())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run returned %v after its context ended", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("run did not return within 60s of its context ending")
	}
	if !strings.Contains(logs.String(), `"msg":"shutting_down"`) {
		t.Errorf("no shutting_down in the log:\n%s", logs.String())
	}
	transport.CloseIdleConnections()
	dockertest.Remove(t, cli, s.ContainerID)
}

// The registry is tied to the engine and instance sandboxd first ran with: started on
// another (here another instance on the same engine), sandboxd refuses before it
// listens, naming both; adopt takes the registry over, after which the first
// is refused in turn.
func TestRunRefusesARegistryOfAnotherRuntime(t *testing.T) {
	cli := dockertest.Client(t)
	image := dockertest.Image(t, cli)
	dir := t.TempDir()
	first, second := dockertest.Instance(t, cli), dockertest.Instance(t, cli)
	env := func(instance string, extra ...string) []string {
		return append([]string{
			"SANDBOXD_LISTEN=127.0.0.1:0",
			"SANDBOXD_REGISTRY=sqlite:" + filepath.Join(dir, "sandboxd.db"),
			"SANDBOXD_DOCKER_INSTANCE=" + instance,
			"SANDBOXD_DOCKER_VOLUME_ROOT=" + filepath.Join(dir, "volumes"),
			"SANDBOXD_AGENTS_DEFAULT_IMAGE=" + image,
		}, extra...)
	}
	serveOnce := func(env []string) string {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		logs := &syncbuf.Buffer{}
		done := make(chan error, 1)
		go func() { done <- run(ctx, nil, env, logs, logs) }()
		waitfor.True(t, 30*time.Second, "run listens", func() bool {
			select {
			case err := <-done:
				t.Fatalf("run ended before listening: %v\n%s", err, logs.String())
			default:
			}
			return strings.Contains(logs.String(), `"msg":"listening"`)
		})
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run: %v", err)
		}
		return logs.String()
	}
	refused := func(env []string, bound string) {
		t.Helper()
		logs := &syncbuf.Buffer{}
		err := run(context.Background(), nil, env, logs, logs)
		if err == nil || !strings.Contains(err.Error(), "instance "+bound) || !strings.Contains(err.Error(), "adopt") {
			t.Fatalf("run = %v, want a refusal naming instance %s and adopt", err, bound)
		}
		if strings.Contains(logs.String(), `"msg":"listening"`) {
			t.Fatalf("sandboxd listened before refusing:\n%s", logs.String())
		}
	}

	serveOnce(env(first))
	serveOnce(env(first)) // the same runtime again: fine
	refused(env(second), first)
	if logs := serveOnce(env(second, "SANDBOXD_ADOPT=true")); !strings.Contains(logs, `"msg":"registry_rebound"`) {
		t.Errorf("no registry_rebound record:\n%s", logs)
	}
	refused(env(first), second)
}
