package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	dockerclient "github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

// A sandbox killed behind sandboxd's back is known at once: within 2 s the chat's next
// PUT makes a fresh sandbox on the same workspace, instead of reusing the dead one.
func TestKilledSandboxIsReplacedByTheNextPut(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	srv := w.start()
	ctx := context.Background()
	chat := newChat()
	old, result, err := srv.api.Create(ctx, chat, client.CreateBody{})
	if err != nil || result != client.Created {
		t.Fatalf("create: %v %v", result, err)
	}
	waitfor.True(t, time.Minute, "the event stream connected", func() bool {
		return strings.Contains(srv.log(), `"msg":"event_stream_connected"`)
	})

	if _, err := w.docker.ContainerKill(ctx, old.ContainerID, dockerclient.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for {
		s, result, err := srv.api.Create(ctx, chat, client.CreateBody{})
		if err != nil {
			t.Fatalf("create after the kill: %v", err)
		}
		if result == client.Created {
			if s.ContainerID == old.ContainerID || s.VolumeHostPath != old.VolumeHostPath {
				t.Errorf("fresh sandbox %+v, want a new container on %s", s, old.VolumeHostPath)
			}
			if !w.running(s.ContainerID) {
				t.Errorf("the fresh sandbox does not run")
			}
			break
		}
		if time.Since(killed) > 2*time.Second {
			t.Fatalf("2 s after the kill, PUT still answers %s with the dead sandbox", result)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if log := srv.log(); !strings.Contains(log, `"msg":"sandbox_died"`) || !strings.Contains(log, `"exit_code":137`) {
		t.Errorf("no sandbox_died with exit code 137 in the log")
	}
	if w.running(old.ContainerID) {
		t.Errorf("the dead container is still there")
	}
	srv.stop(syscall.SIGTERM)
}
