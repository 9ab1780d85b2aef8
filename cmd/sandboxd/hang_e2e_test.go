package main

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testing/sockproxy"
)

// A Docker engine that hangs (a proxy in front of the real one that accepts every new
// connection and never answers), through the binary: /readyz answers 503 within 2 s, a
// create answers 503 within its deadlines and leaves nothing untracked, and once the
// engine answers again creates work and only recorded sandboxes exist.
func TestAHungEngineThroughTheBinary(t *testing.T) {
	w := newWorld(t)
	host := w.docker.DaemonHost()
	if !strings.HasPrefix(host, "unix://") {
		t.Fatalf("the engine is not on a Unix socket (%s): the proxy cannot stand in front of it", host)
	}
	proxy := sockproxy.Start(t, host)
	w.cfg.Settings = append(w.cfg.Settings, "SANDBOXD_DOCKER_HOST="+proxy.Host(),
		"SANDBOXD_DOCKER_CALL_TIMEOUT=1s", "SANDBOXD_DOCKER_CREATE_TIMEOUT=5s")
	srv := w.start()
	ctx := context.Background()
	first, _, err := srv.api.Create(ctx, newChat(), client.CreateBody{})
	if err != nil {
		t.Fatal(err)
	}

	proxy.SetMode(sockproxy.Hang)
	proxy.Cut()
	start := time.Now()
	resp, _ := srv.raw(http.MethodGet, "/readyz", "", "")
	if took := time.Since(start); resp.StatusCode != http.StatusServiceUnavailable || took > 2*time.Second {
		t.Errorf("/readyz on a hung engine: %d after %s, want 503 within 2s", resp.StatusCode, took)
	}
	chat := newChat()
	start = time.Now()
	_, _, err = srv.api.Create(ctx, chat, client.CreateBody{})
	// The create's own engine call (5 s) and a few reads (1 s each).
	if took := time.Since(start); !errors.Is(err, client.ErrUnavailable) || took > 15*time.Second {
		t.Errorf("create on a hung engine: %v after %s, want 503 unavailable within 15s", err, took)
	}
	if _, err := srv.api.Get(ctx, chat); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("the failed create's chat: %v, want no sandbox", err)
	}

	proxy.SetMode(sockproxy.Pass)
	var second client.Session
	for try := 0; ; try++ { // a start slower than its deadline on a loaded machine is retried
		if second, _, err = srv.api.Create(ctx, chat, client.CreateBody{}); err == nil || try == 3 {
			break
		}
	}
	if err != nil {
		t.Fatalf("create once the engine answers: %v", err)
	}
	page, err := srv.api.List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var recorded []string
	for _, s := range page.Items {
		recorded = append(recorded, s.ContainerID)
	}
	slices.Sort(recorded)
	labelled := w.labelled()
	slices.Sort(labelled)
	if want := []string{first.ContainerID, second.ContainerID}; !slices.Equal(labelled, recorded) || len(recorded) != len(want) {
		t.Errorf("containers %v, records %v: want the same two", labelled, recorded)
	}
	resp, _ = srv.raw(http.MethodGet, "/readyz", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz once the engine answers: %d", resp.StatusCode)
	}
}
