package lifecycle

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Snapshots is what a Store may offer so that a reuse needs no lock: its copy in memory
// of a chat's session, when that copy is exact. A Store without it is always asked under
// the chat's lock.
type Snapshots interface {
	// Cached returns the chat's session from memory, and true, only if no process but
	// this one can have written the chat's record since the copy was read or written
	// (an SQLite file belongs to one process; on PostgreSQL, this replica must have held
	// the chat's lock as one lease from before the copy was made until after it was
	// read). Otherwise, and when it holds no copy, it reports false: it never queries.
	Cached(chatID uuid.UUID) (sandbox.Session, bool)
}

// ReuseMargin is how far from its expiry a session must be for a create to reuse it
// without the chat's lock. A session closer to its expiry is reused (or replaced) under
// the lock, so a lock-free reuse never hands out a session the sweep or a replacement
// may be about to end, even with the replicas' clocks a little apart.
const ReuseMargin = 5 * time.Second

// reuseUnlocked answers a create with the chat's session, without the chat's lock, when
// the answer cannot be stale: the store's copy of the session is exact (Snapshots), no
// use case of this process that may change the chat's sandbox ran at any moment while
// the copy was read (writes), the session is the caller's tenant's, for the same agent
// and folder, and live for ReuseMargin yet. Everything else (no copy, a write under way,
// a conflict, another tenant's chat, a session near or past its expiry, shutdown) is
// left to the locked path, which reports false here.
//
// What else could change the session under a lock-free reuse, and why it cannot:
// another replica writes the chat only under its lock, which it cannot hold while this
// replica keeps the chat's lease (Cached checks the lease before and after); the sweep
// and a replacement end only expired sessions, and expiry never moves earlier (keepalive
// only extends), so a session live for ReuseMargin is theirs to end only after this
// answer; a delete, a keepalive or a repair is a write (writes), and a reuse that sees
// one under way, or one that began or ended while it read, takes the lock.
func (s *Service) reuseUnlocked(ctx context.Context, span trace.Span, req CreateRequest) (sandbox.Session, bool) {
	if s.snapshots == nil || s.busy.closed.Load() {
		return sandbox.Session{}, false
	}
	gen, quiet := s.writes.quiet(req.ChatID)
	if !quiet {
		return sandbox.Session{}, false
	}
	current, ok := s.snapshots.Cached(req.ChatID)
	if !ok || !s.writes.unchanged(req.ChatID, gen) {
		return sandbox.Session{}, false
	}
	if current.TenantOf() != req.Tenant || !current.SameRequest(req.AgentID, req.VolumeHostPath) ||
		!current.ExpiresAt.After(s.clock.Now().Add(ReuseMargin)) {
		return sandbox.Session{}, false
	}
	s.log.InfoContext(ctx, "sandbox_reused", logAttrs(current)...)
	s.event(current, EventReused, "")
	span.SetAttributes(
		attribute.String("session.id", current.ID.String()),
		attribute.String("container.id", current.ContainerID))
	return current, true
}

// writes tells a lock-free reuse whether a use case of this process changed, or was
// changing, a chat while the reuse read it: a seqlock per stripe of chats. A use case
// that may change a chat's sandbox or record (everything run through locked but a create
// that reuses) holds its chat's stripe active from after it takes the lock until before
// it lets go, and moves the stripe's generation when it begins and when it ends. Chats
// sharing a stripe only make each other's reuses take the lock now and then.
type writes struct {
	stripes [256]stripe
}

type stripe struct {
	gen    atomic.Uint64
	active atomic.Int64
	_      [48]byte // one cache line per stripe
}

func (w *writes) of(chat uuid.UUID) *stripe { return &w.stripes[chat[15]] }

// begin marks a write of chat under way; the returned function ends it.
func (w *writes) begin(chat uuid.UUID) (end func()) {
	st := w.of(chat)
	st.active.Add(1)
	st.gen.Add(1)
	return func() {
		st.gen.Add(1)
		st.active.Add(-1)
	}
}

// quiet reports the generation a read of chat starts at, and false when a write of chat
// (or of a chat that shares its stripe) is under way. The generation is read before the
// active count: a write that is not counted yet moves the generation after this read.
func (w *writes) quiet(chat uuid.UUID) (uint64, bool) {
	st := w.of(chat)
	gen := st.gen.Load()
	return gen, st.active.Load() == 0
}

// unchanged reports whether no write of chat's stripe began or ended since quiet gave gen.
func (w *writes) unchanged(chat uuid.UUID, gen uint64) bool {
	return w.of(chat).gen.Load() == gen
}
