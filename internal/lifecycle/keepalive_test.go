package lifecycle_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

func TestKeepaliveExtendsUpToTheMaximumLifetime(t *testing.T) {
	session := liveSession() // created a minute ago, expires in 4
	e := newAgentEnv(t, &scriptedExecutor{}, lifecycle.Config{MaxLifetime: time.Hour}, session)

	got, err := e.svc.Keepalive(context.Background(), chatID, 30*time.Minute)
	if err != nil {
		t.Fatalf("Keepalive: %v", err)
	}
	assertEqual(t, "expiry", got.ExpiresAt, now.Add(30*time.Minute))
	assertEqual(t, "stored expiry", mustGet(t, e.store, chatID).ExpiresAt, now.Add(30*time.Minute))

	got, err = e.svc.Keepalive(context.Background(), chatID, 10*time.Hour)
	if err != nil {
		t.Fatalf("Keepalive: %v", err)
	}
	assertEqual(t, "capped expiry", got.ExpiresAt, session.CreatedAt.Add(time.Hour))
	assertEqual(t, "stored capped expiry", mustGet(t, e.store, chatID).ExpiresAt, session.CreatedAt.Add(time.Hour))
	if n := e.tel.counter(t, "sandbox.keepalive.total", map[string]any{"result": "extended"}); n != 2 {
		t.Fatalf("keepalive count = %d, want 2", n)
	}
}

func TestKeepaliveRefusals(t *testing.T) {
	expired := liveSession()
	expired.ExpiresAt = now
	e := newAgentEnv(t, &scriptedExecutor{}, lifecycle.Config{}, expired)
	if _, err := e.svc.Keepalive(context.Background(), chatID, time.Minute); !errors.Is(err, sandbox.ErrExpired) {
		t.Fatalf("keepalive of an expired sandbox: err = %v, want ErrExpired", err)
	}
	assertEqual(t, "expiry untouched", mustGet(t, e.store, chatID).ExpiresAt, now)
	if _, err := e.svc.Keepalive(context.Background(), uuid.New(), time.Minute); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("keepalive of no sandbox: err = %v, want ErrNotFound", err)
	}
	if _, err := e.svc.Keepalive(context.Background(), chatID, 0); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("keepalive with ttl 0: err = %v, want ErrInvalid", err)
	}
}

func TestActivityExtendsOnlyWhenTheProfileSaysSo(t *testing.T) {
	for _, extend := range []bool{false, true} {
		session := liveSession()
		e := newAgentEnv(t, &scriptedExecutor{}, lifecycle.Config{
			ExtendOnActivity: func(agent string) bool { return extend && agent == agentID },
		}, session)
		if _, err := e.svc.Exec(context.Background(), lifecycle.ExecRequest{ChatID: chatID, Cmd: []string{"true"}}); err != nil {
			t.Fatal(err)
		}
		want := session.ExpiresAt
		if extend {
			want = now.Add(ttl)
		}
		assertEqual(t, "expiry after exec", mustGet(t, e.store, chatID).ExpiresAt, want)
	}
}
