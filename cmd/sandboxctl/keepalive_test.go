package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
)

func TestKeepalive(t *testing.T) {
	srv := newServer(t)
	mustRun(t, srv, "create", chatA)
	var before, after client.Session
	decode(t, mustRun(t, srv, "get", chatA, "--json"), &before)

	decode(t, mustRun(t, srv, "keepalive", chatA, "--ttl", "90m", "--json"), &after)
	if d := after.ExpiresAt.Sub(before.ExpiresAt); d < 29*time.Minute || d > 31*time.Minute {
		t.Errorf("keepalive --ttl 90m moved expiry by %s, want about 30m", d)
	}
	decode(t, mustRun(t, srv, "keepalive", chatA, "--ttl", "10h", "--json"), &after)
	if want := before.CreatedAt.Add(2 * time.Hour); !after.ExpiresAt.Equal(want) {
		t.Errorf("keepalive --ttl 10h: expires %v, want capped at %v", after.ExpiresAt, want)
	}
	if out := mustRun(t, srv, "keepalive", chatA, "--ttl", "1m"); !strings.Contains(out, "EXPIRES    "+after.ExpiresAt.Format(time.RFC3339)) {
		t.Errorf("keepalive table (never shortens):\n%s", out)
	}
	if _, _, err := sandboxctl(t, srv, "keepalive", chatA); err == nil {
		t.Error("keepalive without --ttl: no error")
	}
	if _, _, err := sandboxctl(t, srv, "keepalive", chatB, "--ttl", "1m"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("keepalive of a chat with no sandbox: %v, want 404", err)
	}
}

// The default profile has no network: its sandbox's egress list is empty (refusals are
// listed through the binary in cmd/sandboxd's TestEgress); no sandbox is 404.
func TestEgress(t *testing.T) {
	srv := newServer(t)
	mustRun(t, srv, "create", chatA)
	if out := mustRun(t, srv, "egress", chatA); !strings.HasPrefix(out, "TIME") || strings.Count(out, "\n") != 1 {
		t.Errorf("egress table:\n%s", out)
	}
	var denials []client.Denial
	decode(t, mustRun(t, srv, "egress", chatA, "--json"), &denials)
	if len(denials) != 0 {
		t.Errorf("denials %v", denials)
	}
	if _, _, err := sandboxctl(t, srv, "egress", chatB); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("egress of a chat with no sandbox: %v, want 404", err)
	}
}
