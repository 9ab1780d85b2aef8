package profile

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Set is every agent's resolved profile: what New makes of the agents section. It is
// immutable, so safe for concurrent use.
type Set struct {
	def           Profile
	byAgent       map[string]Profile
	refuseUnknown bool
}

// New resolves a: every listed profile merged over the default one (Spec.Over), unset
// fields given their Default... value, and every profile checked. The error names each
// wrong profile by its configuration key (agents.default, agents.profiles.<id>) and says
// everything wrong with it.
func New(a Agents) (*Set, error) {
	var errs []error
	s := &Set{byAgent: make(map[string]Profile, len(a.Profiles)), refuseUnknown: a.RefuseUnknown}
	var err error
	if s.def, err = resolve(a.Default); err != nil {
		errs = append(errs, fmt.Errorf("agents.default: %w", err))
	}
	for _, id := range slices.Sorted(maps.Keys(a.Profiles)) {
		if id == "" {
			errs = append(errs, errors.New("agents.profiles: an agent id is empty"))
			continue
		}
		p, err := resolve(a.Profiles[id].Over(a.Default))
		if err != nil {
			errs = append(errs, fmt.Errorf("agents.profiles.%s: %w", id, err))
		}
		s.byAgent[id] = p
	}
	if a.RefuseUnknown && len(a.Profiles) == 0 {
		errs = append(errs, errors.New("agents.refuse_unknown: is set but no agents.profiles are configured: every create would be refused"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// Lookup returns the profile a new sandbox of agentID gets: its own, or the default
// profile for an empty or unlisted agent id. An unlisted one is refused, with an error
// wrapping sandbox.ErrInvalid, when the agents section says refuse_unknown.
func (s *Set) Lookup(agentID string) (Profile, error) {
	if agentID == "" {
		return s.def, nil
	}
	if p, ok := s.byAgent[agentID]; ok {
		return p, nil
	}
	if s.refuseUnknown {
		return Profile{}, fmt.Errorf("unknown agent %q: %w", agentID, sandbox.ErrInvalid)
	}
	return s.def, nil
}

// Of returns the profile of a sandbox that exists: the agent's, or the default one when
// the agent has none. Only creates refuse unknown agents (Lookup): a sandbox that exists
// was admitted.
func (s *Set) Of(agentID string) Profile {
	if p, ok := s.byAgent[agentID]; ok {
		return p
	}
	return s.def
}

// Default returns the default profile.
func (s *Set) Default() Profile { return s.def }

// Listed reports whether agentID has a profile of its own.
func (s *Set) Listed(agentID string) bool {
	_, ok := s.byAgent[agentID]
	return ok
}

// Agents returns the agent ids with a profile of their own, sorted.
func (s *Set) Agents() []string { return slices.Sorted(maps.Keys(s.byAgent)) }

// ExtendsOnActivity reports whether exec and file calls extend the TTL of the agent's
// sandboxes (lifecycle.Config.ExtendOnActivity).
func (s *Set) ExtendsOnActivity(agentID string) bool { return s.Of(agentID).ExtendOnActivity }

// WorkspaceMount returns where the agent's sandboxes see their workspace folder
// (hostfiles.Config.MountPoint).
func (s *Set) WorkspaceMount(agentID string) string { return s.Of(agentID).Workspace }

// SandboxUser returns the uid and gid the agent's sandboxes run as, which should own the
// files written into their workspaces.
func (s *Set) SandboxUser(agentID string) (uid, gid int) {
	p := s.Of(agentID)
	return p.UID, p.GID
}

// BoundsWorkspaces reports whether any profile bounds its workspaces
// (WorkspaceMaxBytes), which the host must then be able to enforce.
func (s *Set) BoundsWorkspaces() bool {
	if s.def.WorkspaceMaxBytes > 0 {
		return true
	}
	for _, p := range s.byAgent {
		if p.WorkspaceMaxBytes > 0 {
			return true
		}
	}
	return false
}
