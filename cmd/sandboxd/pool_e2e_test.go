package main

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dockerclient "github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

// pooled returns the ids of the running, unclaimed pool containers of this test's instance.
func (w *world) pooled() []string {
	w.t.Helper()
	res, err := w.docker.ContainerList(context.Background(), dockerclient.ContainerListOptions{
		Filters: dockerclient.Filters{}.Add("label", dockertest.LabelInstance+"="+w.instance, docker.LabelPool),
	})
	if err != nil {
		w.t.Fatal(err)
	}
	var ids []string
	for _, c := range res.Items {
		if strings.HasPrefix(c.Names[0], "/sandboxd-pool-") {
			ids = append(ids, c.ID)
		}
	}
	return ids
}

// The warm pool through the binary: a create is served from it, it refills, a SIGKILL's
// leftovers are removed by the next start, and SIGTERM drains it.
func TestWarmPool(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "SANDBOXD_AGENTS_DEFAULT_POOL_MIN=2")
	srv := w.start()
	ctx := context.Background()
	// Ready once the pool holds them (its gauge), not merely once the engine runs them.
	waitfor.True(t, time.Minute, "pool of 2", func() bool {
		return len(w.pooled()) == 2 && poolSize(t, srv) == "2"
	})
	before := w.pooled()

	chat := newChat()
	s, result, err := srv.api.Create(ctx, chat, client.CreateBody{})
	if err != nil || result != client.Created {
		t.Fatalf("create: %v %v", result, err)
	}
	if !slices.Contains(before, s.ContainerID) {
		t.Fatalf("container %s is not one of the pool's %v", s.ContainerID, before)
	}
	folder := filepath.Join(w.dataDir, "volumes", chat)
	if out, code := dockertest.Exec(t, w.docker, s.ContainerID, "sh", "-c", "echo pooled > /workspace/f"); code != 0 {
		t.Fatalf("exec: %q (exit %d)", out, code)
	}
	if b, err := os.ReadFile(filepath.Join(folder, "f")); err != nil || string(b) != "pooled\n" {
		t.Errorf("chat folder sees %q, %v", b, err)
	}
	waitfor.True(t, time.Minute, "pool refilled to 2", func() bool {
		ids := w.pooled()
		return len(ids) == 2 && !slices.Contains(ids, s.ContainerID)
	})
	if m := metrics(t, srv); !strings.Contains(m, `sandbox_pool_hits_total{`) || !strings.Contains(m, `sandbox_pool_size{`) {
		t.Errorf("no pool metrics in /metrics:\n%s", m)
	}

	// A crash: the pool is not drained. The next start removes what it left.
	srv.stop(syscall.SIGKILL)
	left := w.pooled()
	pool := filepath.Join(w.dataDir, "volumes", ".pool")
	leftFolders, err := os.ReadDir(pool)
	if err != nil || len(leftFolders) == 0 {
		t.Fatalf(".pool after SIGKILL: %v, %v; want the killed run's folders", leftFolders, err)
	}
	srv = w.start()
	waitfor.True(t, time.Minute, "a new pool of 2", func() bool {
		ids := w.pooled()
		return len(ids) == 2 && !slices.ContainsFunc(ids, func(id string) bool { return slices.Contains(left, id) })
	})
	for _, id := range left {
		if w.running(id) {
			t.Errorf("pool container %s of the killed run still runs", id)
		}
	}
	// Nor do its folders (and its lock file) outlive it.
	for _, e := range leftFolders {
		if _, err := os.Lstat(filepath.Join(pool, e.Name())); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf(".pool/%s of the killed run is still there (%v)", e.Name(), err)
		}
	}
	if got, err := srv.api.Get(ctx, chat); err != nil || got.ContainerID != s.ContainerID || !w.running(s.ContainerID) {
		t.Errorf("claimed sandbox after restart: %+v, %v", got, err)
	}

	// SIGTERM drains: only the chat's sandbox is left, and no pool folder.
	srv.stop(syscall.SIGTERM)
	if ids := w.labelled(); !slices.Equal(ids, []string{s.ContainerID}) {
		t.Errorf("containers after SIGTERM = %v, want the chat's %s only", ids, s.ContainerID)
	}
	if entries, err := os.ReadDir(filepath.Join(w.dataDir, "volumes", ".pool")); err != nil || len(entries) != 0 {
		t.Errorf(".pool after SIGTERM: %v, %v", entries, err)
	}
}

// poolSize is the value of the sandbox_pool_size gauge in /metrics ("" when absent).
func poolSize(t *testing.T, srv *server) string {
	t.Helper()
	for _, line := range strings.Split(metrics(t, srv), "\n") {
		if strings.HasPrefix(line, "sandbox_pool_size{") {
			return line[strings.LastIndexByte(line, ' ')+1:]
		}
	}
	return ""
}

func metrics(t *testing.T, srv *server) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}
