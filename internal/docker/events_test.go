package docker_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/moby/moby/client"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/memstore"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
	"github.com/sandboxd/sandboxd/internal/testing/sockproxy"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

// following is a lifecycle on the real runtime that follows the engine's events.
type following struct {
	env
	svc    *lifecycle.Service
	store  *memstore.Store
	log    *syncbuf.Buffer
	reader *sdkmetric.ManualReader
}

func newFollowing(t *testing.T, tweak func(*docker.Config)) following {
	t.Helper()
	f := following{env: newEnv(t, tweak), store: memstore.New(), log: &syncbuf.Buffer{}, reader: sdkmetric.NewManualReader()}
	svc, err := lifecycle.New(lifecycle.Config{
		Store: f.store, Locker: keylock.New(), Runtime: f.rt, Admitter: f.rt, Inventory: f.rt,
		TTL:           time.Hour,
		Logger:        slog.New(slog.NewJSONHandler(f.log, nil)),
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.reader)),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	follower := svc.Follow(context.Background(), f.rt, 20*time.Millisecond, 200*time.Millisecond)
	t.Cleanup(follower.Stop)
	f.waitLogged(t, `"msg":"event_stream_connected"`, 1)
	return f
}

// waitLogged waits until the log holds n records containing s.
func (f following) waitLogged(t *testing.T, s string, n int) {
	t.Helper()
	waitfor.True(t, 10*time.Second, "log record "+s, func() bool { return strings.Count(f.log.String(), s) >= n })
}

func (f following) create(t *testing.T, chatID uuid.UUID) (sandbox.Session, lifecycle.Outcome) {
	t.Helper()
	s, outcome, err := f.svc.Create(context.Background(), lifecycle.CreateRequest{ChatID: chatID})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { _, _ = f.svc.Delete(context.Background(), chatID) })
	return s, outcome
}

// assertRepairedByTheEvent: the dead sandbox's record is forgotten by the repair that
// follows its death event, and the chat's next create makes a fresh sandbox on the same
// workspace. "At once" is asserted by cause, not by a stopwatch on a loaded machine: no
// periodic reconciliation runs here, the only other repair is the reconciliation that
// follows a (re)connect of the stream, and that one neither logs sandbox_died nor
// counts it, so sandbox.died.total{reason} reaching wantDied proves the event did it.
// The wall-clock bound is only there to end the test if nothing repairs it.
func (f following) assertRepairedByTheEvent(t *testing.T, old sandbox.Session, reason string, wantDied int64) {
	t.Helper()
	waitfor.True(t, time.Minute, "the dead sandbox's record forgotten", func() bool {
		_, err := f.store.Get(context.Background(), old.ChatID)
		return errors.Is(err, sandbox.ErrNotFound)
	})
	if n := f.died(t, reason); n != wantDied {
		t.Fatalf("sandbox.died.total{reason=%s} = %d, want %d: the record was not forgotten by the event's repair", reason, n, wantDied)
	}
	fresh, outcome := f.create(t, old.ChatID)
	if outcome != lifecycle.Created || fresh.ContainerID == old.ContainerID {
		t.Fatalf("create after the death: %s %s, want a fresh sandbox", outcome, fresh.ContainerID)
	}
	if fresh.VolumeHostPath != old.VolumeHostPath {
		t.Errorf("fresh sandbox's workspace = %s, want the old one %s", fresh.VolumeHostPath, old.VolumeHostPath)
	}
	if !f.inspect(t, fresh.ContainerID).State.Running {
		t.Errorf("fresh sandbox does not run")
	}
	f.assertGone(t, old.ContainerID)
}

// died returns the sandbox_died counter for reason.
func (f following) died(t *testing.T, reason string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := f.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "sandbox.died.total" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				if v, _ := dp.Attributes.Value("reason"); v.AsString() == reason {
					return dp.Value
				}
			}
		}
	}
	return 0
}

func TestKilledSandboxIsReplacedAtOnce(t *testing.T) {
	f := newFollowing(t, nil)
	old, _ := f.create(t, uuid.New())

	if _, err := f.cli.ContainerKill(context.Background(), old.ContainerID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	f.assertRepairedByTheEvent(t, old, "exited", 1)
	f.waitLogged(t, `"msg":"sandbox_died"`, 1)
	if log := f.log.String(); !strings.Contains(log, `"reason":"exited","exit_code":137`) {
		t.Errorf("sandbox_died does not give the exit code 137:\n%s", log)
	}
}

func TestOOMKilledSandboxIsReplacedAtOnce(t *testing.T) {
	f := newFollowing(t, func(c *docker.Config) {
		// tmpfs pages count against the memory limit.
		c.Profiles = testProfiles(t, profile.Agents{Default: profile.Spec{Memory: "32m", Tmpfs: "64m"}})
	})
	old, _ := f.create(t, uuid.New())

	// The sandbox fills its /tmp past its memory limit. Its init is made the kernel's
	// first choice, so the OOM kill takes the whole sandbox, not only dd.
	ctx := context.Background()
	ex, err := f.cli.ExecCreate(ctx, old.ContainerID, client.ExecCreateOptions{Cmd: []string{"sh", "-c",
		"echo 1000 > /proc/1/oom_score_adj && dd if=/dev/zero of=/tmp/fill bs=1M count=60"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.cli.ExecStart(ctx, ex.ID, client.ExecStartOptions{Detach: true}); err != nil {
		t.Fatal(err)
	}
	f.assertRepairedByTheEvent(t, old, "oom", 1)
	f.waitLogged(t, `"msg":"sandbox_died"`, 1)
	if log := f.log.String(); !strings.Contains(log, `"reason":"oom"`) {
		t.Errorf("sandbox_died does not say oom:\n%s", log)
	}
}

// The engine's connection drops (a proxy in front of the engine's socket is cut and
// refuses for a while): a sandbox killed meanwhile is missed by the stream, found by the
// reconciliation that follows the reconnect, and the stream works again after it.
func TestEventStreamReconnectsAndReconciles(t *testing.T) {
	proxy := sockproxy.Start(t, dockerHost(t))
	f := newFollowing(t, func(c *docker.Config) { c.Host = proxy.Host() })
	first, _ := f.create(t, uuid.New())
	second, _ := f.create(t, uuid.New())

	proxy.SetMode(sockproxy.Refuse)
	proxy.Cut()
	f.waitLogged(t, `"msg":"event_stream_lost"`, 1)
	if _, err := f.cli.ContainerKill(context.Background(), first.ContainerID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the stream would have reported it by now
	if _, err := f.store.Get(context.Background(), first.ChatID); err != nil {
		t.Fatalf("while the stream is down, the record changed: %v", err)
	}

	proxy.SetMode(sockproxy.Pass)
	f.waitLogged(t, `"msg":"event_stream_connected"`, 2)
	f.waitLogged(t, `"msg":"reconciled","after":"event_stream_connected"`, 2)
	if _, err := f.store.Get(context.Background(), first.ChatID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("after the reconnect's reconciliation, the dead sandbox's record: %v, want gone", err)
	}
	f.assertGone(t, first.ContainerID)

	if _, err := f.cli.ContainerKill(context.Background(), second.ContainerID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	// The first was repaired by the reconciliation (not counted), the second by its event.
	f.assertRepairedByTheEvent(t, second, "exited", 1)
}

// dockerHost is the engine's socket the tests' client talks to.
func dockerHost(t *testing.T) string {
	t.Helper()
	host := dockertest.Client(t).DaemonHost()
	if !strings.HasPrefix(host, "unix://") {
		t.Fatalf("the engine is not on a Unix socket (%s): the proxy cannot stand in front of it", host)
	}
	return host
}
