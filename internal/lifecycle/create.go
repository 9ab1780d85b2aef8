package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// CreateRequest asks for the chat's sandbox.
type CreateRequest struct {
	ChatID         uuid.UUID
	AgentID        string
	VolumeHostPath string
	// Tenant is set by Create from ctx (sandbox.TenantFrom); what the caller sets is
	// ignored.
	Tenant string
}

// resolve is the workspace folder Admit settles on for req, when it can be told without
// Admit (Admitter.Resolve); without an Admitter, the folder asked for.
func (s *Service) resolve(req CreateRequest) (string, bool) {
	if s.admitter == nil {
		return req.VolumeHostPath, true
	}
	return s.admitter.Resolve(req.Tenant, req.ChatID, req.AgentID, req.VolumeHostPath)
}

// with returns the request for the workspace folder volume.
func (r CreateRequest) with(volume string) CreateRequest {
	r.VolumeHostPath = volume
	return r
}

// limitExceeded is the outcome of a create refused for its tenant's limit.
const limitExceeded Outcome = "limit_exceeded"

// Create returns the chat's live sandbox, making one when there is none or the one there
// is has expired. Errors:
//   - sandbox.ErrInvalid: the request was refused before anything happened;
//   - sandbox.ErrConflict: the chat's live sandbox was made for another agent or folder;
//     nothing changed;
//   - sandbox.ErrNotFound: the chat's sandbox is another tenant's (the caller's tenant
//     comes with ctx): chat ids are global, so the chat cannot be the caller's; nothing
//     changed, and the answer says no more than that the caller has no such sandbox;
//   - sandbox.ErrLimit: a new sandbox would pass the tenant's MaxSandboxes; nothing
//     changed;
//   - sandbox.ErrWorkspaceInUse: the folder asked for is another chat's derived folder
//     or another chat's sandbox's (expired or not, until the sweep ends it); nothing
//     changed;
//   - anything else: the runtime or registry failed; nothing is left running untracked.
func (s *Service) Create(ctx context.Context, req CreateRequest) (sandbox.Session, Outcome, error) {
	req.Tenant = sandbox.TenantFrom(ctx)
	ctx, span := s.tracer.Start(ctx, "usecase.create_sandbox",
		trace.WithAttributes(attribute.String("chat.id", req.ChatID.String()), tenantAttr(req.Tenant)))
	defer span.End()

	session, outcome, err := s.create(ctx, span, req)
	if err != nil && outcome != Conflict && outcome != limitExceeded && outcome != NotFound && outcome != AtCapacity {
		outcome = Failed
	}
	s.m.createTotal.Add(ctx, 1, metric.WithAttributes(result(string(outcome)), s.tenantMetric(req.Tenant)))
	span.SetAttributes(attribute.String("sandbox.result", string(outcome)))
	if err != nil {
		if outcome == Conflict || outcome == limitExceeded || outcome == NotFound || outcome == AtCapacity {
			span.RecordError(err)
		} else {
			failSpan(span, err)
			s.eventOf(req.Tenant, req.ChatID, EventCreateFailed, sandbox.ErrorType(err))
		}
		return sandbox.Session{}, outcome, err
	}
	return session, outcome, nil
}

func (s *Service) create(ctx context.Context, span trace.Span, req CreateRequest) (sandbox.Session, Outcome, error) {
	if req.ChatID == uuid.Nil {
		return sandbox.Session{}, Failed, fmt.Errorf("create: chat id is the nil UUID: %w", sandbox.ErrInvalid)
	}
	// Everything that can be refused without side effects is refused before the lock.
	if !s.tenants[req.Tenant].allowsAgent(req.AgentID) {
		return sandbox.Session{}, Failed, fmt.Errorf("create: agent %q is not one tenant %s may use: %w",
			req.AgentID, req.Tenant, sandbox.ErrInvalid)
	}
	// The chat's live session is recognised before Admit when the request's folder can be
	// told without it (Admitter.Resolve): Admit's checks guard what a new sandbox mounts
	// and writes, and a reuse mounts and writes nothing.
	resolved, known := s.resolve(req)
	known = known && s.boundYet()
	if known {
		if session, ok := s.reuseUnlocked(ctx, span, req.with(resolved)); ok {
			return session, Reused, nil
		}
	}
	if s.admitter != nil {
		volume, err := s.admitter.Admit(ctx, req.Tenant, req.ChatID, req.AgentID, req.VolumeHostPath)
		if err != nil {
			return sandbox.Session{}, folderOutcome(err), fmt.Errorf("create: %w", err)
		}
		req.VolumeHostPath = volume
	}
	if err := s.ensureBound(ctx); err != nil {
		return sandbox.Session{}, Failed, fmt.Errorf("create: %w", err)
	}
	if !known || req.VolumeHostPath != resolved {
		if session, ok := s.reuseUnlocked(ctx, span, req); ok {
			return session, Reused, nil
		}
	}
	var (
		session sandbox.Session
		outcome Outcome
	)
	err := s.lockedAs(ctx, req.ChatID, false, func(ctx context.Context) error {
		var err error
		session, outcome, err = s.createLocked(ctx, span, req)
		return err
	})
	return session, outcome, err
}

func (s *Service) createLocked(ctx context.Context, span trace.Span, req CreateRequest) (sandbox.Session, Outcome, error) {
	now := s.clock.Now()
	current, err := s.store.Get(ctx, req.ChatID)
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		releaseFolder, err := s.claimFolder(ctx, req)
		if err != nil {
			return sandbox.Session{}, folderOutcome(err), err
		}
		defer releaseFolder()
		release, err := s.reserve(ctx)
		if err != nil {
			if errors.Is(err, sandbox.ErrBusy) {
				return sandbox.Session{}, AtCapacity, fmt.Errorf("create: %w", err)
			}
			return sandbox.Session{}, Failed, fmt.Errorf("create: %w", err)
		}
		defer release()
		releaseTenant, err := s.reserveTenant(ctx, req.Tenant)
		if err != nil {
			if errors.Is(err, sandbox.ErrLimit) {
				return sandbox.Session{}, limitExceeded, fmt.Errorf("create: %w", err)
			}
			return sandbox.Session{}, Failed, fmt.Errorf("create: %w", err)
		}
		defer releaseTenant()
		sessionID := s.newID()
		span.SetAttributes(attribute.String("session.id", sessionID.String()))
		created, err := s.start(ctx, span, req, sessionID, false)
		return created, Created, err
	case err != nil:
		return sandbox.Session{}, Failed, fmt.Errorf("create: read registry: %w", err)
	}
	if current.TenantOf() != req.Tenant {
		// Neither reused nor replaced, even when expired: it is not the caller's.
		return sandbox.Session{}, NotFound, fmt.Errorf("create: chat %s has no sandbox of yours and cannot be given one: %w",
			req.ChatID, sandbox.ErrNotFound)
	}

	if !current.Expired(now) {
		if !current.SameRequest(req.AgentID, req.VolumeHostPath) {
			return sandbox.Session{}, Conflict, fmt.Errorf(
				"create: chat %s has a live sandbox for agent %q and folder %q: %w",
				req.ChatID, current.AgentID, current.VolumeHostPath, sandbox.ErrConflict)
		}
		s.log.InfoContext(ctx, "sandbox_reused", logAttrs(current)...)
		s.event(current, EventReused, "")
		span.SetAttributes(
			attribute.String("session.id", current.ID.String()),
			attribute.String("container.id", current.ContainerID))
		return current, Reused, nil
	}

	// Replace the expired session: stop its container first; should that fail, the old
	// record stays so that the sweep or the next create tries again.
	defer s.writes.begin(req.ChatID)()
	releaseFolder, err := s.claimFolder(ctx, req)
	if err != nil {
		return sandbox.Session{}, folderOutcome(err), err
	}
	defer releaseFolder()
	sessionID := s.newID()
	span.SetAttributes(
		attribute.String("sandbox.new_session.id", sessionID.String()),
		attribute.String("sandbox.previous_session.id", current.ID.String()),
		attribute.String("sandbox.previous_container.id", current.ContainerID))
	if err := s.runtime.Stop(ctx, current.ContainerID); err != nil {
		return sandbox.Session{}, Failed, fmt.Errorf("create: stop expired sandbox %s: %w", current.ContainerID, err)
	}
	s.log.InfoContext(ctx, "sandbox_replaced", logAttrs(current)...)
	s.event(current, EventReplaced, "expired at "+current.ExpiresAt.UTC().Format(time.RFC3339))
	if err := s.store.Remove(ctx, current.ID); err != nil {
		return sandbox.Session{}, Failed, fmt.Errorf("create: forget expired session %s: %w", current.ID, err)
	}
	s.recordActive(ctx)
	s.touchWorkspace(ctx, current)
	created, err := s.start(ctx, span, req, sessionID, true)
	return created, Replaced, err
}

// folderOutcome is the outcome of a create refused with err: Conflict for a folder in
// use, else Failed.
func folderOutcome(err error) Outcome {
	if errors.Is(err, sandbox.ErrWorkspaceInUse) {
		return Conflict
	}
	return Failed
}

// folderLocks is the name space of the lock keys of workspace folders (claimFolder).
var folderLocks = uuid.MustParse("6f1d4c0e-3b8a-5e0c-9f4e-7a2b1c9d0e51")

// claimFolder makes sure no other chat's sandbox uses the folder the caller provided for
// req, and keeps it so (holding the folder's lock, which release gives back) until the
// new session is saved: two chats that ask for one folder at once are served one after
// the other, and the second sees the first's record. The chat's own derived folder is
// no other chat's (the Admitter refuses another chat's derived folder), so it needs
// neither lock nor query. The error wraps sandbox.ErrWorkspaceInUse, or is the lock's or
// the registry's.
func (s *Service) claimFolder(ctx context.Context, req CreateRequest) (release func(), err error) {
	folder := req.VolumeHostPath
	if s.workspaces == nil || folder == "" || folder == s.workspaces.Derive(req.Tenant, req.ChatID) {
		return func() {}, nil
	}
	unlock, err := s.locker.Lock(ctx, uuid.NewSHA1(folderLocks, []byte(folder)))
	if err != nil {
		return nil, fmt.Errorf("create: lock folder %s: %w", folder, err)
	}
	users, err := s.store.List(ctx, ListFilter{VolumeHostPath: folder, Limit: 2})
	if err != nil {
		unlock()
		return nil, fmt.Errorf("create: read registry: %w", err)
	}
	for _, u := range users {
		if u.ChatID != req.ChatID {
			unlock()
			return nil, fmt.Errorf("create: folder %s is the workspace of another chat's sandbox: %w",
				folder, sandbox.ErrWorkspaceInUse)
		}
	}
	return unlock, nil
}

// reserve makes room for one more session under MaxSandboxes, or refuses with
// sandbox.ErrBusy. Creates of other chats run at the same time (each holds its own chat's
// lock), so the sessions being made count with those the registry holds: the cap is never
// passed by this process, at the price of refusing a little early while creates are in
// flight. Replicas each count their own creates in flight, so together they may pass it by
// those. release gives the room back once the session is saved (or not made).
func (s *Service) reserve(ctx context.Context) (release func(), err error) {
	if s.maxSandboxes <= 0 {
		return func() {}, nil
	}
	pending := s.creating.Add(1)
	release = func() { s.creating.Add(-1) }
	n, err := s.store.Count(ctx)
	if err != nil {
		release()
		return nil, fmt.Errorf("count sessions: %w", err)
	}
	if int64(n)+pending > int64(s.maxSandboxes) {
		release()
		return nil, fmt.Errorf("sandboxd holds %d sandboxes (%d more being made), the most it may (limits.max_sandboxes %d): %w",
			n, pending-1, s.maxSandboxes, sandbox.ErrBusy)
	}
	return release, nil
}

// start makes a new sandbox and records it. If the record cannot be saved, the sandbox
// is stopped again: nothing may run untracked.
func (s *Service) start(ctx context.Context, span trace.Span, req CreateRequest, sessionID uuid.UUID, replacing bool) (sandbox.Session, error) {
	now := s.clock.Now()
	created, err := s.runtime.Create(ctx, CreateSpec{
		SessionID:      sessionID,
		ChatID:         req.ChatID,
		Tenant:         recorded(req.Tenant),
		AgentID:        req.AgentID,
		VolumeHostPath: req.VolumeHostPath,
		CreatedAt:      now,
		ExpiresAt:      now.Add(s.ttl),
	})
	if err != nil {
		return sandbox.Session{}, fmt.Errorf("create: start sandbox: %w", err)
	}
	created.Tenant = recorded(req.Tenant)
	if replacing {
		span.SetAttributes(attribute.String("sandbox.new_container.id", created.ContainerID))
	}
	if err := s.store.Save(ctx, created); err != nil {
		if stopErr := s.runtime.Stop(ctx, created.ContainerID); stopErr != nil {
			// The reconciler removes it later: it carries our labels but has no record.
			s.log.ErrorContext(ctx, "sandbox_untracked",
				append(logAttrs(created),
					slog.String("error", sandbox.ErrorType(stopErr)))...)
		}
		s.recordActive(ctx)
		return sandbox.Session{}, fmt.Errorf("create: save session %s: %w", created.ID, err)
	}
	s.log.InfoContext(ctx, "sandbox_created", logAttrs(created)...)
	s.event(created, EventCreated, "agent "+created.AgentID)
	span.SetAttributes(
		attribute.String("session.id", created.ID.String()),
		attribute.String("container.id", created.ContainerID))
	s.recordActive(ctx)
	return created, nil
}
