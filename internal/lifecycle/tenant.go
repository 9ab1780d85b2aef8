package lifecycle

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// TenantLimits bounds what the callers of one tenant may hold and do. A zero field sets
// no bound.
type TenantLimits struct {
	// MaxSandboxes bounds the sessions the tenant holds at once, expired ones included
	// until the sweep stops them (their containers still run). A create that would make
	// one more is refused with sandbox.ErrLimit; reuse and replacing an expired sandbox
	// of the same chat make none more.
	MaxSandboxes int
	// MaxExecConcurrent bounds the commands the tenant's sandboxes run at once, per
	// sandboxd process; one more is refused with sandbox.ErrLimit.
	MaxExecConcurrent int
	// Agents lists the agent ids the tenant may create sandboxes for ("default" stands
	// for the empty agent id); nil allows every one.
	Agents []string
}

// allowsAgent reports whether the tenant may create a sandbox for agentID.
func (l TenantLimits) allowsAgent(agentID string) bool {
	if l.Agents == nil {
		return true
	}
	if agentID == "" {
		agentID = "default"
	}
	return slices.Contains(l.Agents, agentID)
}

// pending counts, by tenant, the creates of new sessions this process has admitted and
// not yet finished.
type pending struct {
	mu sync.Mutex
	n  map[string]int
}

// reserveTenant makes room for one more session of tenant under its MaxSandboxes, or
// refuses with sandbox.ErrLimit. Creates of the tenant's other chats run at the same
// time (each holds only its own chat's lock): the count and the reservation are made
// under one mutex, and the creates this process has admitted but not yet recorded count
// with the sessions the registry holds, so this process never lets a tenant pass its
// limit (it may refuse a little early while creates are in flight). Replicas count only
// their own creates in flight: replicas racing on one tenant's creates may together pass
// the limit by the creates the others have in flight at that moment. release gives the
// room back once the session is saved (or not made).
func (s *Service) reserveTenant(ctx context.Context, tenant string) (release func(), err error) {
	limit := s.tenants[tenant].MaxSandboxes
	if limit <= 0 {
		return func() {}, nil
	}
	s.tenantCreate.mu.Lock()
	defer s.tenantCreate.mu.Unlock()
	held, err := s.store.CountTenant(ctx, tenant)
	if err != nil {
		return nil, fmt.Errorf("count the sandboxes of tenant %s: %w", tenant, err)
	}
	inFlight := s.tenantCreate.n[tenant]
	if held+inFlight >= limit {
		return nil, fmt.Errorf("tenant %s holds %d sandboxes (%d more being made), the most it may at once (max_sandboxes %d): %w",
			tenant, held, inFlight, limit, sandbox.ErrLimit)
	}
	s.tenantCreate.n[tenant]++
	return func() {
		s.tenantCreate.mu.Lock()
		defer s.tenantCreate.mu.Unlock()
		if s.tenantCreate.n[tenant]--; s.tenantCreate.n[tenant] <= 0 {
			delete(s.tenantCreate.n, tenant)
		}
	}, nil
}

// recorded is how a session records tenant: the default tenant as none (""), so that a
// setup without tenants records, labels and logs its sessions as it always has.
func recorded(tenant string) string {
	if tenant == sandbox.DefaultTenant {
		return ""
	}
	return tenant
}
