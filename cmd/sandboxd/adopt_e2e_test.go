package main

// The registry and the engine recognise each other (issue 12, §1): a sandboxd on a fresh
// registry never removes the sandboxes another registry recorded; it refuses to start, or
// adopts them when told to; and a reconciliation never removes most of an instance's
// sandboxes at once. On the real binary, engine and SQLite files.

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	dockerclient "github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/sqlitestore"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

// createSandboxes makes n sandboxes through srv and returns them. Each create has a
// connection of its own: a request sent on a kept-alive connection right after a slow
// create was seen answered 499 at once (its context already cancelled), which is not
// what these tests are about.
func createSandboxes(t *testing.T, srv *server, n int) []client.Session {
	t.Helper()
	api, err := client.New(srv.base, token, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}})
	if err != nil {
		t.Fatal(err)
	}
	var out []client.Session
	for range n {
		s, _, err := api.Create(context.Background(), newChat(), client.CreateBody{})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		out = append(out, s)
	}
	return out
}

// refused runs sandboxd with extra settings and expects it to exit with an error before
// it listens; it returns what the process wrote.
func (w *world) refused(extra ...string) string {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := w.cfg
	cfg.Settings = append(append([]string(nil), cfg.Settings...), extra...)
	cmd := exec.CommandContext(ctx, cfg.Binary)
	cmd.Env, cmd.Dir = cfg.Env(), cfg.Dir
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		w.t.Fatalf("sandboxd did not refuse to start (err %v):\n%s", err, out)
	}
	if strings.Contains(string(out), `"msg":"listening"`) {
		w.t.Fatalf("sandboxd listened before refusing:\n%s", out)
	}
	return string(out)
}

// The scenario: three sandboxes made on registry A; sandboxd started again, same
// instance, on an empty registry B, with a short grace. It refuses to start, saying what
// it found, and removes nothing. Adopting rebuilds their records: each is reachable again,
// exec runs in it, and the next start needs no adopt.
func TestAFreshRegistryRefusesThenAdoptsAnotherRegistrysSandboxes(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "SANDBOXD_RECONCILE_GRACE=1s")
	srv := w.start()
	ctx := context.Background()
	made := createSandboxes(t, srv, 3)
	srv.stop(syscall.SIGTERM)
	regA := w.label(t, made[0].ContainerID, docker.LabelRegistry)
	if regA == "" {
		t.Fatalf("container %s carries no %s label", made[0].ContainerID, docker.LabelRegistry)
	}

	w.cfg.Registry = "sqlite:" + filepath.Join(w.dataDir, "registry-b.db")
	time.Sleep(1500 * time.Millisecond) // older than the grace
	out := w.refused()
	for _, want := range []string{"3 sandboxes", "3 of registry " + regA, "adopt"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, out)
		}
	}
	for _, s := range made {
		if !w.running(s.ContainerID) {
			t.Fatalf("the refused start touched the sandbox of chat %s", s.ChatID)
		}
	}

	srv = w.start2("SANDBOXD_ADOPT=true")
	for _, s := range made {
		got, err := srv.api.Get(ctx, s.ChatID)
		if err != nil || got.SessionID != s.SessionID || got.ContainerID != s.ContainerID || got.VolumeHostPath != s.VolumeHostPath {
			t.Fatalf("adopted chat %s: %+v, %v; want %+v", s.ChatID, got, err, s)
		}
		res, err := srv.api.Exec(ctx, s.ChatID, client.ExecBody{Cmd: []string{"sh", "-c", "echo adopted > /workspace/a && cat /workspace/a"}})
		if err != nil || res.ExitCode != 0 || res.Stdout != "adopted\n" {
			t.Fatalf("exec in adopted chat %s: %+v, %v", s.ChatID, res, err)
		}
		if again, result, err := srv.api.Create(ctx, s.ChatID, client.CreateBody{}); err != nil || result != client.Reused || again.ContainerID != s.ContainerID {
			t.Fatalf("create of adopted chat %s: %v %v %+v, want it reused", s.ChatID, result, err, again)
		}
	}
	if !strings.Contains(srv.log(), `"msg":"registry_adopted"`) {
		t.Errorf("no registry_adopted record:\n%s", srv.log())
	}
	srv.stop(syscall.SIGTERM)

	srv = w.start() // without adopt: they are registry B's now
	for _, s := range made {
		if !w.running(s.ContainerID) {
			t.Errorf("the sandbox of chat %s was removed after its adoption", s.ChatID)
		}
	}
	srv.stop(syscall.SIGTERM)
}

// A registry that lost its records (rows deleted behind its back) would see every sandbox
// as an orphan: a reconciliation that would remove more than 10 and more than half of the
// instance's sandboxes removes none, logs why and counts it; reconcile.force removes them.
func TestReconcileRefusesToRemoveMostSandboxesAtOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "SANDBOXD_RECONCILE_GRACE=1s", "SANDBOXD_RECONCILE_INTERVAL=1h")
	srv := w.start()
	made := createSandboxes(t, srv, 12)
	srv.stop(syscall.SIGTERM)

	st, err := sqlitestore.Open(context.Background(), filepath.Join(w.dataDir, "sandboxd.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range made {
		if err := st.Remove(context.Background(), uuid.MustParse(s.SessionID)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // older than the grace

	srv = w.start()
	if !strings.Contains(srv.log(), `"msg":"reconcile_mass_removal_refused"`) || !strings.Contains(srv.log(), `"orphans":12`) {
		t.Fatalf("no reconcile_mass_removal_refused record for 12 orphans:\n%s", srv.log())
	}
	counted := regexp.MustCompile(`(?m)^sandbox_reconcile_total\{[^}]*result="mass_removal_refused"[^}]*\} 1$`)
	if m := metrics(t, srv); !counted.MatchString(m) {
		t.Errorf("the refusal is not counted once in /metrics:\n%s", m)
	}
	for _, s := range made {
		if !w.running(s.ContainerID) {
			t.Fatalf("the braked reconciliation removed the sandbox of chat %s", s.ChatID)
		}
	}
	srv.stop(syscall.SIGTERM)

	srv = w.start2("SANDBOXD_RECONCILE_FORCE=true")
	waitfor.True(t, 30*time.Second, "the forced reconciliation removes the orphans", func() bool {
		return len(w.labelled()) == 0
	})
	srv.stop(syscall.SIGTERM)
}

// start2 starts sandboxd with extra settings for this run only.
func (w *world) start2(extra ...string) *server {
	w.t.Helper()
	settings := w.cfg.Settings
	w.cfg.Settings = append(append([]string(nil), settings...), extra...)
	defer func() { w.cfg.Settings = settings }()
	return w.start()
}

// label returns a label of container id.
func (w *world) label(t *testing.T, id, key string) string {
	t.Helper()
	res, err := w.docker.ContainerInspect(context.Background(), id, dockerclient.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(fmt.Errorf("inspect %s: %w", id, err))
	}
	return res.Container.Config.Labels[key]
}
