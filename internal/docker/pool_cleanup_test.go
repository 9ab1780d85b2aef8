package docker_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

// newHookedPoolEnv is a pool of min containers whose makes call beforeStart between
// create and start, logging to the returned buffer. The pool is not started.
func newHookedPoolEnv(t *testing.T, min int, beforeStart func(ctx context.Context, id string)) (env, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	e := newEnv(t, func(c *docker.Config) {
		c.Profiles = testProfiles(t, profile.Agents{Default: profile.Spec{Pool: profile.Pool{Min: min}}})
		c.PoolCheckInterval = 200 * time.Millisecond
		c.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	})
	docker.SetBeforeStart(e.rt, beforeStart)
	return e, logs
}

// every lists the instance's pool containers in any state (Created included).
func (e env) everyPooled(t *testing.T) []string {
	t.Helper()
	return dockertest.Containers(t, e.cli, docker.LabelInstance+"="+e.inst, docker.LabelPool)
}

// A pool container whose start fails (its folder vanished) is removed, not left Created,
// and the failure is logged.
func TestPoolContainerWhoseStartFailsIsRemoved(t *testing.T) {
	var e env
	e, logs := newHookedPoolEnv(t, 1, func(_ context.Context, id string) {
		res, err := e.cli.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
		if err != nil {
			t.Error(err)
			return
		}
		for _, m := range res.Container.Mounts {
			if m.Destination == "/workspace" {
				_ = os.RemoveAll(m.Source)
			}
		}
	})
	e.start(t, e.rt)
	waitfor.True(t, 30*time.Second, "a logged fill failure", func() bool {
		return strings.Contains(logs.String(), `"msg":"sandbox_pool_fill_failed"`)
	})
	if !strings.Contains(logs.String(), "pool: start") {
		t.Errorf("the logged failure does not say the start failed:\n%s", logs.String())
	}
	if err := e.rt.DrainPool(context.Background()); err != nil {
		t.Errorf("DrainPool: %v", err)
	}
	if ids := e.everyPooled(t); len(ids) != 0 {
		t.Errorf("pool containers left after failed starts: %v", ids)
	}
}

// A pool container being started when the pool is drained is not left behind.
func TestPoolContainerStartingAtDrainIsRemoved(t *testing.T) {
	// The first container made waits, between its create and its start, until the drain
	// has cancelled the pool's work.
	starting := make(chan struct{}, 1)
	e, _ := newHookedPoolEnv(t, 1, func(ctx context.Context, _ string) {
		select {
		case starting <- struct{}{}:
			<-ctx.Done()
		default:
		}
	})
	e.start(t, e.rt)
	select {
	case <-starting:
	case <-time.After(30 * time.Second):
		t.Fatal("the pool made no container")
	}
	drained := make(chan error, 1)
	go func() { drained <- e.rt.DrainPool(context.Background()) }()
	select {
	case err := <-drained:
		if err != nil {
			t.Errorf("DrainPool: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("DrainPool did not return")
	}
	if ids := e.everyPooled(t); len(ids) != 0 {
		t.Errorf("pool containers left after the drain: %v", ids)
	}
}
