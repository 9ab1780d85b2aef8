// Package sandbox holds the domain of sandboxd: chat and session identities, the sandbox
// session a chat owns, the expiry rule, and the sentinel errors every layer speaks.
//
// It imports nothing but the standard library and github.com/google/uuid.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Sentinel errors. Adapters translate their drivers' errors into these and wrap them with
// %w and the operation; only the HTTP layer maps them to status codes.
var (
	// ErrNotFound: the chat has no sandbox, or the thing asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the request contradicts what the chat already has.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the request is malformed or not allowed; nothing was changed.
	ErrInvalid = errors.New("invalid")
	// ErrUnavailable: a dependency (engine, registry, lock) could not serve the request.
	ErrUnavailable = errors.New("unavailable")
	// ErrExpired: the chat's sandbox exists but its TTL has passed.
	ErrExpired = errors.New("expired")
	// ErrTooLarge: a body or file is over its configured limit; nothing was written.
	ErrTooLarge = errors.New("too large")
	// ErrBusy: the sandbox already does as much at once as it may (commands running);
	// nothing was started, the same request may succeed later.
	ErrBusy = errors.New("busy")
	// ErrLimit: the caller's tenant holds as much as its limits allow (sandboxes live at
	// once, commands running at once); nothing was made, the request may succeed later.
	ErrLimit = errors.New("limit exceeded")
	// ErrFull: a volume sandboxd writes to (the workspaces' volume root, or a workspace
	// at its size quota) has no room, or less than its configured floor; nothing was made.
	ErrFull = errors.New("no space left")
	// ErrWorkspaceInUse: the workspace folder asked for is another chat's (its derived
	// folder, or the folder of another chat's sandbox); nothing was made.
	ErrWorkspaceInUse = errors.New("workspace in use")
)

// Status is the state of a sandbox as the runtime reports it.
type Status string

// StatusRunning is the state of every session the registry holds after a successful create.
const StatusRunning Status = "RUNNING"

// Session is the one live sandbox of a chat.
type Session struct {
	ID             uuid.UUID // session_id: new for every sandbox
	ChatID         uuid.UUID
	ContainerID    string
	Status         Status
	CreatedAt      time.Time
	ExpiresAt      time.Time
	AgentID        string // optional
	VolumeHostPath string // optional: the host folder mounted as the workspace
	// Tenant is the tenant whose caller created the session; only its callers reach it.
	// Empty is read as DefaultTenant.
	Tenant string
}

// DefaultTenant is the tenant of a setup that names none (the plain `tokens` setting, or
// no tokens at all) and of every session recorded before tenants existed.
const DefaultTenant = "default"

// TenantOf returns the tenant of the session, DefaultTenant when it names none.
func (s Session) TenantOf() string {
	if s.Tenant == "" {
		return DefaultTenant
	}
	return s.Tenant
}

type tenantKey struct{}

// WithTenant returns ctx carrying the tenant of the caller: the use cases reach only that
// tenant's sessions. The HTTP layer sets it from the caller's token.
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// TenantFrom returns the caller's tenant that ctx carries, DefaultTenant when none.
func TenantFrom(ctx context.Context) string {
	if t, ok := ctx.Value(tenantKey{}).(string); ok && t != "" {
		return t
	}
	return DefaultTenant
}

// Expired reports whether the session's TTL has passed at now. A session whose expiry
// equals now is expired.
func (s Session) Expired(now time.Time) bool { return !s.ExpiresAt.After(now) }

// SameRequest reports whether a create for agentID and volumeHostPath may reuse s.
func (s Session) SameRequest(agentID, volumeHostPath string) bool {
	return s.AgentID == agentID && s.VolumeHostPath == volumeHostPath
}

// ParseChatID accepts any spelling of a UUID (hyphenated or not, any case, in braces, as
// a urn) and returns it; the canonical form is its String(). The nil UUID is refused.
// The error wraps ErrInvalid.
func ParseChatID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(strings.TrimSpace(s))
	if err != nil {
		return uuid.Nil, fmt.Errorf("chat id %q is not a UUID: %w", s, ErrInvalid)
	}
	if id == uuid.Nil {
		return uuid.Nil, fmt.Errorf("chat id %q is the nil UUID: %w", s, ErrInvalid)
	}
	return id, nil
}

// ErrorType names the kind of err for logs and metric attributes: the sentinel it wraps,
// "timeout" or "canceled" for context errors, otherwise the Go type of the innermost error.
func ErrorType(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrWorkspaceInUse):
		return "workspace_in_use"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrBusy):
		return "busy"
	case errors.Is(err, ErrLimit):
		return "limit_exceeded"
	case errors.Is(err, ErrFull):
		return "full"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return fmt.Sprintf("%T", err)
		}
		err = next
	}
}
