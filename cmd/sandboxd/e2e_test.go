package main

// End-to-end tests: the real sandboxd binary, on a real SQLite file and the real Docker
// engine, driven only through its HTTP API (package client). Each test has its own
// instance id, data folder and volume root; dockertest removes its containers.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/google/uuid"
	dockerclient "github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
	"github.com/sandboxd/sandboxd/internal/testing/pgtest"
	"github.com/sandboxd/sandboxd/internal/testing/sandboxdproc"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

const token = "e2e-secret-token"

// binary is the sandboxd built by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sandboxd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if binary, err = sandboxdproc.Build(context.Background(), dir, raceBuild); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := pgtest.Main(m).Run() // stops a throwaway PostgreSQL the tests started
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// world is what one test's sandboxd runs on; it outlives restarts of the server.
type world struct {
	t        *testing.T
	docker   *dockerclient.Client
	instance string
	dataDir  string
	cfg      sandboxdproc.Config
}

func newWorld(t *testing.T, settings ...string) *world {
	t.Helper()
	cli := dockertest.Client(t)
	image := dockertest.Image(t, cli)
	w := &world{t: t, docker: cli, instance: dockertest.Instance(t, cli), dataDir: t.TempDir()}
	w.cfg = sandboxdproc.Config{
		Binary:     binary,
		Dir:        w.dataDir,
		Token:      token,
		Registry:   "sqlite:" + filepath.Join(w.dataDir, "sandboxd.db"),
		Instance:   w.instance,
		VolumeRoot: filepath.Join(w.dataDir, "volumes"),
		Image:      image,
		LogLevel:   "debug",
		Settings:   append([]string{"SANDBOXD_SHUTDOWN_TIMEOUT=30s"}, settings...),
	}
	return w
}

// server is one run of the binary.
type server struct {
	t    *testing.T
	proc *sandboxdproc.Proc
	api  *client.Client
	base string
	logs syncbuf.Buffer
}

// start runs sandboxd and waits until it listens.
func (w *world) start() *server {
	t := w.t
	t.Helper()
	s := &server{t: t}
	proc, err := sandboxdproc.Start(context.Background(), w.cfg.Command(), &s.logs)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	s.proc, s.base = proc, proc.Base
	t.Cleanup(func() {
		proc.Kill()
		if t.Failed() {
			t.Logf("sandboxd pid %d log:\n%s", proc.Pid(), s.log())
		}
	})
	s.api, err = client.New(s.base, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// stop sends sig and waits for the process to end; SIGTERM must end it cleanly.
func (s *server) stop(sig syscall.Signal) {
	s.t.Helper()
	err := s.proc.Stop(sig)
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		s.t.Fatal(err)
	}
	if sig == syscall.SIGTERM && err != nil {
		s.t.Errorf("sandboxd exited with %v after SIGTERM", err)
	}
}

func (s *server) log() string { return s.logs.String() }

// labelled returns the ids of the containers of this test's instance.
func (w *world) labelled() []string {
	w.t.Helper()
	return dockertest.Containers(w.t, w.docker, dockertest.LabelInstance+"="+w.instance)
}

// running reports whether container id exists and runs; false when it is gone.
func (w *world) running(id string) bool {
	w.t.Helper()
	res, err := w.docker.ContainerInspect(context.Background(), id, dockerclient.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return false
	}
	if err != nil {
		w.t.Fatalf("inspect %s: %v", id, err)
	}
	return res.Container.State != nil && res.Container.State.Running
}

func newChat() string { return uuid.NewString() }

// oneSession makes n creates of chat at once, spread over apis, and returns the one
// session they all answer (it fails the test when they answer several, or an error).
func oneSession(t *testing.T, chat string, n int, apis ...*client.Client) string {
	t.Helper()
	sessions := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, _, err := apis[i%len(apis)].Create(context.Background(), chat, client.CreateBody{})
			sessions[i], errs[i] = s.SessionID, err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || sessions[i] != sessions[0] {
			t.Fatalf("create %d: session %s, %v; create 0: %s", i, sessions[i], errs[i], sessions[0])
		}
	}
	return sessions[0]
}

// The cycle a client goes through: create, reuse, conflict, replace after expiry, delete.
func TestCreateReuseConflictReplaceDelete(t *testing.T) {
	t.Parallel()
	// The sweep is slow so that the expired session is still there to be replaced.
	w := newWorld(t, "SANDBOXD_TTL=5s", "SANDBOXD_SWEEP_INTERVAL=1h")
	srv := w.start()
	ctx := context.Background()
	api := srv.api
	chat := newChat()

	for _, probe := range []string{"/healthz", "/readyz"} {
		res, err := http.Get(srv.base + probe)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", probe, res.StatusCode)
		}
	}

	first, result, err := api.Create(ctx, chat, client.CreateBody{})
	if err != nil || result != client.Created {
		t.Fatalf("create: %v %v", result, err)
	}
	if first.ChatID != chat || first.Status != "RUNNING" || !w.running(first.ContainerID) {
		t.Fatalf("created %+v; container running: %v", first, w.running(first.ContainerID))
	}

	again, result, err := api.Create(ctx, strings.ToUpper(strings.ReplaceAll(chat, "-", "")), client.CreateBody{})
	if err != nil || result != client.Reused || again.SessionID != first.SessionID || again.ContainerID != first.ContainerID {
		t.Fatalf("second create: %v %v %+v, want the first session reused", result, err, again)
	}

	_, _, err = api.Create(ctx, chat, client.CreateBody{AgentID: "another-agent"})
	if !errors.Is(err, client.ErrConflict) {
		t.Fatalf("create for another agent: %v, want a conflict", err)
	}
	if !w.running(first.ContainerID) {
		t.Fatal("a refused create stopped the live sandbox")
	}

	// The behaviour under test: the TTL passes on the binary's real clock.
	time.Sleep(time.Until(first.ExpiresAt) + 100*time.Millisecond)
	got, err := api.Get(ctx, chat)
	if err != nil || !got.Expired {
		t.Fatalf("get after the TTL: %+v %v, want the expired session", got, err)
	}
	third, result, err := api.Create(ctx, chat, client.CreateBody{AgentID: "another-agent"})
	if err != nil || result != client.Replaced || third.SessionID == first.SessionID || third.ContainerID == first.ContainerID {
		t.Fatalf("create after expiry: %v %v %+v, want a replacement", result, err, third)
	}
	if w.running(first.ContainerID) || !w.running(third.ContainerID) {
		t.Errorf("old container running %v, new running %v", w.running(first.ContainerID), w.running(third.ContainerID))
	}

	del, err := api.Delete(ctx, chat)
	if err != nil || del.Result != client.Deleted || del.SessionID != third.SessionID || del.ContainerID != third.ContainerID {
		t.Fatalf("delete: %+v %v", del, err)
	}
	if ids := w.labelled(); len(ids) != 0 {
		t.Errorf("containers left after delete: %v", ids)
	}
	if _, err := api.Get(ctx, chat); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("get after delete: %v, want not found", err)
	}
	del, err = api.Delete(ctx, chat)
	if err != nil || del.Result != client.NotFound || del.SessionID != "" {
		t.Errorf("second delete: %+v %v, want not_found", del, err)
	}
	srv.stop(syscall.SIGTERM)
}

// A session past its TTL is cleaned by the background sweep: record and container gone.
func TestExpiredSandboxIsSwept(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "SANDBOXD_TTL=2s", "SANDBOXD_SWEEP_INTERVAL=250ms")
	srv := w.start()
	ctx := context.Background()
	chat := newChat()

	s, _, err := srv.api.Create(ctx, chat, client.CreateBody{})
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 20*time.Second, "the sweep forgets the expired session", func() bool {
		_, err := srv.api.Get(ctx, chat)
		return errors.Is(err, client.ErrNotFound)
	})
	if time.Now().Before(s.ExpiresAt) {
		t.Errorf("swept before its expiry %s", s.ExpiresAt)
	}
	// The record goes first, then the sandbox is stopped (within docker.stop_timeout)
	// and removed.
	waitfor.True(t, 20*time.Second, "the swept sandbox's container to be gone", func() bool {
		return !w.running(s.ContainerID) && len(w.labelled()) == 0
	})
	waitfor.True(t, 5*time.Second, "sandbox_cleaned in the log", func() bool {
		return strings.Contains(srv.log(), `"msg":"sandbox_cleaned"`)
	})
	srv.stop(syscall.SIGTERM)
}

// Twenty clients asking at once for one chat's sandbox get one session and one container.
func TestParallelCreatesMakeOneSandbox(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	srv := w.start()
	chat := newChat()

	const n = 20
	type answer struct {
		s      client.Session
		result client.Result
		err    error
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			s, r, err := srv.api.Create(context.Background(), chat, client.CreateBody{})
			answers[i] = answer{s, r, err}
		})
	}
	close(start)
	wg.Wait()

	var results []string
	for i, a := range answers {
		if a.err != nil {
			t.Fatalf("create %d: %v", i, a.err)
		}
		if a.s.SessionID != answers[0].s.SessionID || a.s.ContainerID != answers[0].s.ContainerID {
			t.Errorf("create %d answered session %s, create 0 %s", i, a.s.SessionID, answers[0].s.SessionID)
		}
		results = append(results, string(a.result))
	}
	slices.Sort(results)
	if results[0] != "created" || results[1] != "reused" || results[n-1] != "reused" {
		t.Errorf("results %v, want one created and %d reused", results, n-1)
	}
	if ids := w.labelled(); len(ids) != 1 || !strings.HasPrefix(answers[0].s.ContainerID, ids[0]) && ids[0] != answers[0].s.ContainerID {
		t.Errorf("containers %v, want just %s", ids, answers[0].s.ContainerID)
	}
	srv.stop(syscall.SIGTERM)
}

// Sessions live in the registry, not the process: a restarted server knows them and
// their sandboxes keep running across the restart.
func TestRestartKeepsSessions(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	srv := w.start()
	ctx := context.Background()
	chats := []string{newChat(), newChat()}
	var before []client.Session
	for _, chat := range chats {
		s, _, err := srv.api.Create(ctx, chat, client.CreateBody{})
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, s)
	}
	srv.stop(syscall.SIGTERM)
	for _, s := range before {
		if !w.running(s.ContainerID) {
			t.Errorf("shutdown stopped the sandbox of chat %s", s.ChatID)
		}
	}

	srv = w.start()
	for i, chat := range chats {
		got, err := srv.api.Get(ctx, chat)
		if err != nil || got.SessionID != before[i].SessionID || got.ContainerID != before[i].ContainerID {
			t.Errorf("after restart, chat %s: %+v %v; want session %s", chat, got, err, before[i].SessionID)
		}
		s, result, err := srv.api.Create(ctx, chat, client.CreateBody{})
		if err != nil || result != client.Reused || s.SessionID != before[i].SessionID {
			t.Errorf("create after restart: %v %v, want the session reused", result, err)
		}
	}
	if ids := w.labelled(); len(ids) != len(chats) {
		t.Errorf("%d containers after restart, want %d", len(ids), len(chats))
	}
	if !strings.Contains(srv.log(), `"msg":"reconciled"`) {
		t.Error("no start-up reconciliation in the log")
	}
	srv.stop(syscall.SIGTERM)
}

// A server stopped while a create is in flight leaves nothing untracked once it has
// started again: SIGTERM lets the create finish; SIGKILL leaves the reconciler to remove
// a container whose record was never saved (or a record whose container was never made).
func TestStopDuringCreateLeavesNothingUntracked(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			// No grace: at start-up, no create of this instance can be in flight.
			w := newWorld(t, "SANDBOXD_RECONCILE_GRACE=1ms")
			srv := w.start()
			chat := newChat()

			type answer struct {
				s      client.Session
				result client.Result
				err    error
			}
			answered := make(chan answer, 1)
			go func() {
				s, r, err := srv.api.Create(context.Background(), chat, client.CreateBody{})
				answered <- answer{s, r, err}
			}()
			// Signal as soon as the container exists: the create is between the engine
			// and the registry.
			waitfor.True(t, 30*time.Second, "the create makes a container", func() bool { return len(w.labelled()) > 0 })
			srv.stop(sig)
			a := <-answered
			if sig == syscall.SIGTERM && (a.err != nil || a.result != client.Created) {
				t.Errorf("the create in flight at SIGTERM answered %v %v, want it finished", a.result, a.err)
			}

			srv = w.start()
			defer srv.stop(syscall.SIGTERM)
			ctx := context.Background()
			got, err := srv.api.Get(ctx, chat)
			switch {
			case err == nil:
				if !w.running(got.ContainerID) {
					t.Errorf("the registry holds session %s whose container %s does not run", got.SessionID, got.ContainerID)
				}
				if a.err == nil && got.SessionID != a.s.SessionID {
					t.Errorf("registry holds %s, the create answered %s", got.SessionID, a.s.SessionID)
				}
			case errors.Is(err, client.ErrNotFound):
				if a.err == nil {
					t.Errorf("the create answered %s, but the registry has nothing", a.s.SessionID)
				}
			default:
				t.Fatal(err)
			}
			for _, id := range w.labelled() {
				if err != nil || !strings.HasPrefix(got.ContainerID, id) && got.ContainerID != id {
					t.Errorf("container %s runs without a record", id)
				}
			}
			// And the chat works: a create now reuses or makes exactly one sandbox.
			s, _, err := srv.api.Create(ctx, chat, client.CreateBody{})
			if err != nil || !w.running(s.ContainerID) {
				t.Fatalf("create after restart: %v", err)
			}
			if ids := w.labelled(); len(ids) != 1 {
				t.Errorf("containers %v after restart and create, want one", ids)
			}
		})
	}
}

// On PostgreSQL, two replicas sharing the registry and the engine serialise a chat
// through advisory locks: twenty creates spread over both make one sandbox, which both
// then report, and which outlives a restart of both.
func TestPostgresReplicas(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "SANDBOXD_REGISTRY="+pgtest.DSN(t))
	a, b := w.start(), w.start()
	chat := newChat()

	sessions := []string{oneSession(t, chat, 20, a.api, b.api)}
	if ids := w.labelled(); len(ids) != 1 {
		t.Errorf("containers %v, want one", ids)
	}

	// A replica answers a chat from memory while it keeps the chat's lock as a lease
	// (lock_linger); a delete on the other recalls the lease, so neither ever serves a
	// session the other removed, nor reuses it.
	session := sessions[0]
	for _, r := range [][2]*server{{a, b}, {b, a}} {
		holder, other := r[0], r[1]
		if got, res, err := holder.api.Create(context.Background(), chat, client.CreateBody{}); err != nil || got.SessionID != session || res != client.Reused {
			t.Fatalf("reuse: %+v %s %v, want session %s reused", got, res, err, session)
		}
		if del, err := other.api.Delete(context.Background(), chat); err != nil || del.Result != client.Deleted {
			t.Fatalf("delete on the other replica: %+v %v", del, err)
		}
		if got, err := holder.api.Get(context.Background(), chat); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("get on the lease holder after the other's delete: %+v %v, want 404", got, err)
		}
		got, res, err := holder.api.Create(context.Background(), chat, client.CreateBody{})
		if err != nil || res != client.Created || got.SessionID == session {
			t.Fatalf("create after the other's delete: %+v %s %v, want a new session", got, res, err)
		}
		session = got.SessionID
	}
	sessions[0] = session
	a.stop(syscall.SIGTERM)
	b.stop(syscall.SIGTERM)

	c := w.start()
	got, err := c.api.Get(context.Background(), chat)
	if err != nil || got.SessionID != sessions[0] || !w.running(got.ContainerID) {
		t.Errorf("after restart: %+v %v, want session %s running", got, err, sessions[0])
	}
	del, err := c.api.Delete(context.Background(), chat)
	if err != nil || del.Result != client.Deleted {
		t.Errorf("delete: %+v %v", del, err)
	}
	if ids := w.labelled(); len(ids) != 0 {
		t.Errorf("containers %v after delete", ids)
	}
	c.stop(syscall.SIGTERM)
}
