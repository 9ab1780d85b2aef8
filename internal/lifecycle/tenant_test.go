package lifecycle_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Another tenant's chat is, to every use case, a chat without a sandbox: nothing of it is
// shown, run, written, extended, replaced or deleted.
func TestAnotherTenantsChatIsAsIfItHadNoSandbox(t *testing.T) {
	own := liveSession()
	own.Tenant = "acme"
	expired := expiredSession()
	expired.ChatID, expired.Tenant = uuid.New(), "acme"
	e := newAgentEnv(t, &scriptedExecutor{}, lifecycle.Config{}, own, expired)
	acme := sandbox.WithTenant(context.Background(), "acme")
	other := sandbox.WithTenant(context.Background(), "globex")

	for _, ctx := range []context.Context{other, context.Background()} { // globex, and the default tenant
		if _, err := e.svc.Get(ctx, chatID); !errors.Is(err, sandbox.ErrNotFound) {
			t.Fatalf("Get: err = %v, want ErrNotFound", err)
		}
		unknown := uuid.New()
		_, errUnknown := e.svc.Get(ctx, unknown)
		if _, err := e.svc.Get(ctx, chatID); strings.ReplaceAll(err.Error(), chatID.String(), "X") != strings.ReplaceAll(errUnknown.Error(), unknown.String(), "X") {
			t.Fatalf("Get answers another tenant's chat (%v) in other words than a chat without sandbox (%v)", err, errUnknown)
		}
		if _, err := e.svc.Exec(ctx, lifecycle.ExecRequest{ChatID: chatID, Cmd: []string{"true"}}); !errors.Is(err, sandbox.ErrNotFound) {
			t.Fatalf("Exec: err = %v, want ErrNotFound", err)
		}
		if _, err := e.svc.Keepalive(ctx, chatID, time.Hour); !errors.Is(err, sandbox.ErrNotFound) {
			t.Fatalf("Keepalive: err = %v, want ErrNotFound", err)
		}
		for _, chat := range []uuid.UUID{chatID, expired.ChatID} {
			_, outcome, err := e.svc.Create(ctx, lifecycle.CreateRequest{ChatID: chat, AgentID: agentID, VolumeHostPath: volumeHostPath})
			if !errors.Is(err, sandbox.ErrNotFound) || outcome != lifecycle.NotFound {
				t.Fatalf("Create of another tenant's chat: %s, %v; want not_found", outcome, err)
			}
		}
		if res, err := e.svc.Delete(ctx, chatID); err != nil || res.Result != lifecycle.NotFound {
			t.Fatalf("Delete: %+v, %v; want not_found", res, err)
		}
		if page, err := e.svc.List(ctx, lifecycle.ListFilter{}); err != nil || len(page) != 0 {
			t.Fatalf("List: %d sessions, %v; want none", len(page), err)
		}
	}
	assertEqual(t, "registry", mustGet(t, e.store, chatID), own)
	assertEqual(t, "expired one kept", mustGet(t, e.store, expired.ChatID), expired)
	if page, err := e.svc.List(acme, lifecycle.ListFilter{}); err != nil || len(page) != 2 {
		t.Fatalf("List of acme: %d sessions, %v; want 2", len(page), err)
	}
	if _, err := e.svc.Exec(acme, lifecycle.ExecRequest{ChatID: chatID, Cmd: []string{"true"}}); err != nil {
		t.Fatalf("Exec of its own tenant: %v", err)
	}
	if res, err := e.svc.Delete(acme, chatID); err != nil || res.Result != lifecycle.Deleted {
		t.Fatalf("Delete of its own tenant: %+v, %v", res, err)
	}
}

func TestTenantLimits(t *testing.T) {
	e := newAgentEnv(t, &scriptedExecutor{}, lifecycle.Config{Tenants: map[string]lifecycle.TenantLimits{
		"acme": {MaxSandboxes: 2, Agents: []string{"coder", "default"}},
	}})
	acme := sandbox.WithTenant(context.Background(), "acme")
	var chats []uuid.UUID
	for range 2 {
		chat := uuid.New()
		if s, _, err := e.svc.Create(acme, lifecycle.CreateRequest{ChatID: chat, AgentID: "coder"}); err != nil || s.Tenant != "acme" {
			t.Fatalf("Create under the limit: tenant %q, %v", s.Tenant, err)
		}
		chats = append(chats, chat)
	}
	if _, outcome, err := e.svc.Create(acme, lifecycle.CreateRequest{ChatID: uuid.New()}); !errors.Is(err, sandbox.ErrLimit) || outcome != "limit_exceeded" {
		t.Fatalf("Create over max_sandboxes: %s, %v; want ErrLimit", outcome, err)
	}
	if _, outcome, err := e.svc.Create(acme, lifecycle.CreateRequest{ChatID: chats[0], AgentID: "coder"}); err != nil || outcome != lifecycle.Reused {
		t.Fatalf("reuse at the limit: %s, %v; want reused", outcome, err)
	}
	if _, _, err := e.svc.Create(context.Background(), lifecycle.CreateRequest{ChatID: uuid.New()}); err != nil {
		t.Fatalf("another tenant is not bound by acme's limit: %v", err)
	}
	if _, err := e.svc.Delete(acme, chats[1]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.Create(acme, lifecycle.CreateRequest{ChatID: uuid.New(), AgentID: "hacker"}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("Create for an agent the tenant may not use: %v; want ErrInvalid", err)
	}
	if _, _, err := e.svc.Create(acme, lifecycle.CreateRequest{ChatID: uuid.New()}); err != nil {
		t.Fatalf("Create with the default agent, below the limit again: %v", err)
	}
	if n, _ := e.store.CountTenant(context.Background(), "acme"); n != 2 {
		t.Fatalf("acme holds %d sandboxes, want 2", n)
	}
}

// Creates of many chats of one tenant at once never pass its limit.
func TestTenantLimitHoldsUnderConcurrentCreates(t *testing.T) {
	e := newAgentEnv(t, &scriptedExecutor{}, lifecycle.Config{Tenants: map[string]lifecycle.TenantLimits{"acme": {MaxSandboxes: 3}}})
	acme := sandbox.WithTenant(context.Background(), "acme")
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { _, _, _ = e.svc.Create(acme, lifecycle.CreateRequest{ChatID: uuid.New()}) })
	}
	wg.Wait()
	if n, _ := e.store.CountTenant(context.Background(), "acme"); n != 3 {
		t.Fatalf("acme holds %d sandboxes after 20 concurrent creates, want its limit 3", n)
	}
}

// holdingExecutor runs every command until its caller leaves, and says when one started.
type holdingExecutor struct{ started chan struct{} }

func (h holdingExecutor) Exec(ctx context.Context, _ string, _ lifecycle.ExecCommand) (int, error) {
	h.started <- struct{}{}
	<-ctx.Done()
	return 0, ctx.Err()
}

func TestTenantExecLimit(t *testing.T) {
	exec := holdingExecutor{started: make(chan struct{}, 4)}
	one, two := liveSession(), liveSession()
	one.Tenant = "acme"
	two.ID, two.ChatID, two.ContainerID, two.Tenant = uuid.New(), uuid.New(), "container-2", "acme"
	st := storeWith(t, one, two)
	svc, err := lifecycle.New(lifecycle.Config{
		Store: st, Locker: keylock.New(), Runtime: &lifecycletest.Runtime{}, TTL: ttl, Clock: lifecycletest.NewClock(now),
		Executor: exec, Tenants: map[string]lifecycle.TenantLimits{"acme": {MaxExecConcurrent: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	acme := sandbox.WithTenant(context.Background(), "acme")
	ctx, cancel := context.WithCancel(acme)
	done := make(chan error, 1)
	go func() {
		_, err := svc.Exec(ctx, lifecycle.ExecRequest{ChatID: one.ChatID, Cmd: []string{"sleep"}})
		done <- err
	}()
	<-exec.started
	if _, err := svc.Exec(acme, lifecycle.ExecRequest{ChatID: two.ChatID, Cmd: []string{"true"}}); !errors.Is(err, sandbox.ErrLimit) {
		t.Fatalf("a second command of the tenant while one runs: %v; want ErrLimit", err)
	}
	// Another tenant's commands are not counted against acme's.
	other := sandbox.WithTenant(context.Background(), "globex")
	if _, err := svc.Exec(other, lifecycle.ExecRequest{ChatID: two.ChatID, Cmd: []string{"true"}}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("globex on acme's chat: %v; want ErrNotFound", err)
	}
	cancel()
	<-done
	ctx2, cancel2 := context.WithTimeout(acme, 50*time.Millisecond)
	defer cancel2()
	if _, err := svc.Exec(ctx2, lifecycle.ExecRequest{ChatID: two.ChatID, Cmd: []string{"true"}}); errors.Is(err, sandbox.ErrLimit) {
		t.Fatalf("once the first command ended: %v; want the slot free", err)
	}
}
