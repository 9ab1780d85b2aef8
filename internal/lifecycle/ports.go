package lifecycle

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Store is the registry of sessions: at most one per chat.
type Store interface {
	// Save records a new session. It returns an error wrapping sandbox.ErrConflict when
	// the chat already has a session: the store itself enforces one session per chat.
	Save(ctx context.Context, s sandbox.Session) error
	// Get returns the chat's session, expired or not, or an error wrapping
	// sandbox.ErrNotFound.
	Get(ctx context.Context, chatID uuid.UUID) (sandbox.Session, error)
	// ListExpired returns up to limit sessions with ExpiresAt <= now that come after
	// `after` in (ExpiresAt, ChatID) order, oldest expiry first (ties in chat id order).
	ListExpired(ctx context.Context, now time.Time, after ExpiredAfter, limit int) ([]sandbox.Session, error)
	// List returns one page of sessions ordered by chat id, after filter.After.
	List(ctx context.Context, filter ListFilter) ([]sandbox.Session, error)
	// Count returns how many sessions the registry holds.
	Count(ctx context.Context) (int, error)
	// CountTenant returns how many sessions of the tenant the registry holds, expired or
	// not (their containers run until the sweep stops them).
	CountTenant(ctx context.Context, tenant string) (int, error)
	// SetExpiry moves the expiry of the session sessionID. It returns an error wrapping
	// sandbox.ErrNotFound when no such session exists.
	SetExpiry(ctx context.Context, sessionID uuid.UUID, expiresAt time.Time) error
	// Remove forgets the session sessionID. Removing a session that is gone is no error.
	Remove(ctx context.Context, sessionID uuid.UUID) error
	// RemoveExpired forgets session sessionID only if it is still chatID's session and
	// still expired at now (ExpiresAt <= now), decided in one conditional write, and
	// reports whether it did: a sweep that lost its chat's lock never forgets a session
	// another replica has just extended or replaced.
	RemoveExpired(ctx context.Context, chatID, sessionID uuid.UUID, now time.Time) (removed bool, err error)
}

// ExpiredAfter is where a page of ListExpired starts: after the session that expires at
// ExpiresAt for ChatID. The zero value starts at the oldest.
type ExpiredAfter struct {
	ExpiresAt time.Time
	ChatID    uuid.UUID
}

// After returns the cursor of the page that follows s.
func After(s sandbox.Session) ExpiredAfter {
	return ExpiredAfter{ExpiresAt: s.ExpiresAt, ChatID: s.ChatID}
}

// ListFilter selects one page of List.
type ListFilter struct {
	Tenant  string // only sessions of this tenant, when set (the use case always sets it)
	AgentID string // only sessions of this agent, when set
	// VolumeHostPath: only sessions whose workspace is this folder, when set.
	VolumeHostPath string
	Expired        *bool     // only expired (true) or live (false) sessions at Now, when set
	Now            time.Time // the time Expired is judged at
	After          uuid.UUID // the page starts after this chat id (uuid.Nil: from the start)
	Limit          int       // page size; <= 0 means 100
}

// Locker serialises the use cases of one chat. Two holders of the same chat never
// overlap; different chats never wait on each other.
type Locker interface {
	// Lock blocks until the chat's lock is held or ctx ends. The returned function
	// releases it. Errors wrap sandbox.ErrUnavailable (or are ctx's error).
	Lock(ctx context.Context, chatID uuid.UUID) (unlock func(), err error)
}

// CreateSpec is what the runtime needs to make a sandbox.
type CreateSpec struct {
	SessionID      uuid.UUID
	ChatID         uuid.UUID
	Tenant         string
	AgentID        string
	VolumeHostPath string
	CreatedAt      time.Time
	ExpiresAt      time.Time
}

// Runtime runs sandboxes.
type Runtime interface {
	// Create makes and starts a sandbox and returns the RUNNING session. On error it
	// leaves nothing running.
	Create(ctx context.Context, spec CreateSpec) (sandbox.Session, error)
	// Stop stops the sandbox and removes what is left of it; its workspace folder stays.
	// Stopping a sandbox that is gone is no error.
	Stop(ctx context.Context, containerID string) error
	// Delete removes the sandbox at once. Deleting a sandbox that is gone is no error.
	Delete(ctx context.Context, containerID string) error
}

// Admitter checks a create request before any lock is taken or runtime call made, so that
// a request that will be refused changes nothing. It returns the workspace path the
// session is to use (it may derive one when volumeHostPath is empty: the chat's folder in
// the tenant's part of the volume), or an error wrapping sandbox.ErrInvalid (a folder
// outside the tenant's part among them) or sandbox.ErrWorkspaceInUse (the folder is
// another chat's derived one). It must have no side effect on the request's chat.
type Admitter interface {
	Admit(ctx context.Context, tenant string, chatID uuid.UUID, agentID, volumeHostPath string) (string, error)
	// Resolve returns the workspace path Admit returns when it accepts the request,
	// worked out from the request and the configuration alone (no file system, no side
	// effect), or false when only Admit can tell. Create uses it only to recognise the
	// chat's live session before Admit (whose checks guard what a new sandbox would mount
	// and write; a reuse mounts and writes nothing), so a path Resolve returns must equal
	// Admit's whenever Admit accepts the request.
	Resolve(tenant string, chatID uuid.UUID, agentID, volumeHostPath string) (string, bool)
}

// Container is a sandbox the runtime knows, as the reconciler sees it, with what its
// labels say of the session it was made for (enough to rebuild its record: Adopt).
type Container struct {
	ID        string
	ChatID    uuid.UUID
	SessionID uuid.UUID
	CreatedAt time.Time // when the container was made
	Running   bool

	// Registry is the id of the registry that recorded the container when it was made
	// (Binding.Registry); "" when its labels name none (made before registries had ids).
	Registry string
	// Tenant is the tenant whose caller made the sandbox; "" (labels made before tenants,
	// or a sandbox claimed from the warm pool) stands for the default tenant.
	Tenant         string
	AgentID        string
	VolumeHostPath string
	// SessionCreatedAt and ExpiresAt are the session's times when it was made (a later
	// keepalive is in the registry only); zero when the labels do not say.
	SessionCreatedAt time.Time
	ExpiresAt        time.Time
}

// Inventory lists the sandboxes this service made, by their labels.
type Inventory interface {
	// Managed returns every container that carries this instance's labels, whichever
	// registry recorded it.
	Managed(ctx context.Context) ([]Container, error)
	// Identity names the set Managed lists (for Docker: the engine's id and the
	// instance), the same every time for one engine and instance. Errors wrap
	// sandbox.ErrUnavailable when the runtime cannot tell.
	Identity(ctx context.Context) (string, error)
}

// Binding ties the registry and the runtime to each other, both ways, so that neither is
// taken for the other's by mistake:
//   - the registry records the one runtime whose sandboxes it records (an Inventory's
//     Identity: Bind), so that a service pointed at another engine, or sharing the
//     registry under another instance, never forgets the records it cannot find there;
//   - every sandbox records the registry that made it (its id: Registry, carried as a
//     container label), so that a service on a fresh, lost or foreign registry never
//     removes sandboxes it did not record. A registry takes over the sandboxes of others
//     only when told to (Adopt).
type Binding interface {
	// Bind ties the registry to identity the first time, and afterwards checks that it
	// is tied to identity; with rebind it ties it to identity whatever it was tied to.
	// It returns the identity the registry was tied to before ("" if none). A registry
	// tied to another identity, without rebind, is an error wrapping sandbox.ErrConflict
	// that names it.
	Bind(ctx context.Context, identity string, rebind bool) (previous string, err error)
	// Registry returns the registry's own id (random, made with its schema, the same
	// for every replica and every restart) and the ids of the registries whose
	// sandboxes it adopted ("" among them: sandboxes whose labels name no registry).
	Registry(ctx context.Context) (id string, adopted []string, err error)
	// Adopt records that the registry took over the sandboxes of registry id. Adopting
	// an id twice is no error.
	Adopt(ctx context.Context, id string) error
}

// Rebinding is the rule every Binding applies: a registry tied to previous ("" if none),
// asked to be tied to identity, is written (tie reports true) when it is not tied yet or
// rebind is set, left as it is when it is tied to identity already, and otherwise refused
// with an error wrapping sandbox.ErrConflict.
func Rebinding(previous, identity string, rebind bool) (tie bool, err error) {
	switch {
	case previous == identity:
		return false, nil
	case previous == "" || rebind:
		return true, nil
	}
	return false, fmt.Errorf("the registry is bound to %q, not %q: %w", previous, identity, sandbox.ErrConflict)
}

// Clock tells the time.
type Clock interface{ Now() time.Time }

// ExecCommand is a command to run in a sandbox.
type ExecCommand struct {
	Cmd     []string // argv; Cmd[0] is looked up in the sandbox's PATH
	Env     map[string]string
	Workdir string    // empty: the profile's workspace mount
	Stdin   io.Reader // nil: no input
	// Stdout and Stderr receive the output as it comes. The lifecycle caps them.
	Stdout io.Writer
	Stderr io.Writer
	// OutputCap is the output (stdout and stderr together) the lifecycle keeps; a
	// runtime may drop what comes past OutputCap+1 bytes at the source (the byte past
	// the cap tells the lifecycle the output was cut). 0: no cap.
	OutputCap int64
}

// Executor runs commands in sandboxes.
type Executor interface {
	// Exec runs cmd in the container and returns its exit code once it ends. When ctx
	// ends first, Exec must kill the process (and what it started) in the sandbox before
	// it returns ctx's error. Errors: sandbox.ErrNotFound when the container is gone,
	// sandbox.ErrInvalid for a command that cannot start.
	Exec(ctx context.Context, containerID string, cmd ExecCommand) (exitCode int, err error)
}

// FileInfo describes one entry of a sandbox's workspace.
type FileInfo struct {
	Path    string // relative to the workspace, slash-separated
	Size    int64
	Mode    fs.FileMode
	ModTime time.Time
}

// Files reads and writes a session's workspace (and, where the adapter offers it and the
// profile allows, the sandbox's /tmp: paths under /tmp/). Every other path is relative to
// the workspace (a leading "/" or the workspace mount point is allowed and stripped); no
// path, and no symlink on it, may lead outside its folder: such requests fail with
// sandbox.ErrInvalid. Missing files are sandbox.ErrNotFound; a write past maxBytes is
// sandbox.ErrTooLarge and leaves no partial file.
type Files interface {
	WriteFile(ctx context.Context, s sandbox.Session, path string, r io.Reader, maxBytes int64) (FileInfo, error)
	OpenFile(ctx context.Context, s sandbox.Session, path string) (io.ReadCloser, FileInfo, error)
	ListDir(ctx context.Context, s sandbox.Session, path string) ([]FileInfo, error)
}

// TermSize is a terminal's size in character cells.
type TermSize struct{ Cols, Rows uint16 }

// DefaultTermSize is a terminal's size when the caller gives none.
var DefaultTermSize = TermSize{Cols: 80, Rows: 24}

// TerminalIO is what an interactive session reads and writes.
type TerminalIO struct {
	Stdin  io.Reader       // what is typed; an error or EOF from it does not end the session
	Stdout io.Writer       // the terminal's output as it comes (stdout and stderr are one on a terminal)
	Size   TermSize        // the size the terminal starts with (zero: the runtime's default)
	Resize <-chan TermSize // later sizes; nil: none
}

// Terminals opens interactive shells in sandboxes on a pseudo-terminal: through the
// in-sandbox agent, or the engine's exec with a TTY (docker).
type Terminals interface {
	// Terminal runs a shell as the sandbox's user on a pseudo-terminal in the container
	// until it exits, and returns its exit code. When ctx ends first, Terminal kills the
	// shell and everything it started before it returns ctx's error. A sandbox that ends
	// ends the session. Errors as Executor.Exec's.
	Terminal(ctx context.Context, containerID string, t TerminalIO) (exitCode int, err error)
}
