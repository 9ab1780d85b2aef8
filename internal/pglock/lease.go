package pglock

import (
	"context"
	"crypto/rand"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The lease machinery: see Config.Linger for what it is for, and the package comment for
// what it promises.
const (
	// RecallChannel is the LISTEN/NOTIFY channel on which a replica that waits for a chat
	// asks the replica that keeps the chat's lock as a lease to let it go; the payload is
	// the chat's Key in decimal, a space and the sending replica's id (a replica ignores
	// its own recalls: its lease connection never holds what its own waiters wait for,
	// but for two chats of one key, which the linger resolves).
	RecallChannel = "sandboxd_lock_recall"
	// heartbeat is how often the lease connection, while it keeps leases, proves that its
	// session is alive.
	heartbeat = time.Second
	// trust is how long after the last proof Lease still vouches for a lease. It is well
	// under the TCP keepalive time the lease session asks the server for (keepaliveIdle),
	// before which the server cannot drop a silent peer and release its locks.
	trust = 3 * time.Second
	// keepaliveIdle is the server's TCP keepalive idle time for the lease session.
	keepaliveIdle = "10"
	// recallHold is how long after a recall this replica takes no new lease of the chat,
	// so that the waiter that asked gets the lock before this replica takes it back.
	recallHold = time.Second
	// leaseOpTimeout bounds one command on the lease connection.
	leaseOpTimeout = 5 * time.Second
	// reconnectBackoff is how long after a failed connect no lease is attempted.
	reconnectBackoff = time.Second
	// idleWait is how long the lease connection waits for a notification when nothing
	// else is due (it wakes at once for new work).
	idleWait = time.Minute
)

// leases keeps chats' advisory locks on one dedicated connection per replica after their
// use cases end. One goroutine (run) owns the connection: it takes new leases (try-lock
// jobs), releases idle and recalled ones, proves the session alive, and between those
// reads the connection, so that a recall or the session's end is seen as it arrives.
type leases struct {
	cfg     *pgx.ConnConfig
	linger  time.Duration
	max     int
	replica string // this replica's id in recalls

	mu         sync.Mutex
	byKey      map[int64]*lease
	recalled   map[int64]time.Time // keys recalled lately, with when
	jobs       []*job
	alive      bool      // the connection is up and no command on it failed
	lastProof  time.Time // when the last command that then succeeded was sent
	epoch      uint64    // bumped whenever the connection is made or lost
	nextID     uint64
	closed     bool
	cancelWait context.CancelFunc // interrupts run's read of the connection

	poke chan struct{} // cap 1: work arrived while run was not reading
	stop chan struct{}
	done chan struct{}
}

// lease is one chat's lock held by the lease connection.
type lease struct {
	chat     uuid.UUID
	id       uint64
	inUse    bool // a use case of this replica holds it now
	lastUsed time.Time
	recalled bool // another replica waits: release when not in use
}

// job asks run to take a new lease. entry and abandoned are guarded by leases.mu.
type job struct {
	key       int64
	chat      uuid.UUID
	done      chan struct{}
	entry     *lease // set when the lease was taken for the caller, in use
	abandoned bool   // the caller stopped waiting: a lease taken is left idle
}

func newLeases(cfg *pgx.ConnConfig, linger time.Duration, max int) *leases {
	l := &leases{
		linger:   linger,
		max:      max,
		replica:  rand.Text(),
		byKey:    map[int64]*lease{},
		recalled: map[int64]time.Time{},
		poke:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	cfg = cfg.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = "sandboxd-lease"
	cfg.RuntimeParams["idle_session_timeout"] = "0"
	cfg.RuntimeParams["tcp_keepalives_idle"] = keepaliveIdle
	cfg.RuntimeParams["tcp_user_timeout"] = "0"
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) { l.recall(n.Payload) }
	l.cfg = cfg
	go l.run()
	return l
}

// acquire takes the chat's lease for a use case of this replica: the one it keeps, or a
// new one if the chat's lock is free. It reports false when the caller must wait for the
// lock the ordinary way: the lock is held elsewhere, the chat was recalled lately, too
// many leases are kept, the lease connection is down, or ctx ended. The caller holds
// the chat's process-local lock.
func (l *leases) acquire(ctx context.Context, chat uuid.UUID) (release func(), ok bool) {
	key := Key(chat)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, false
	}
	if e := l.byKey[key]; e != nil {
		if e.chat != chat || e.recalled {
			l.mu.Unlock()
			return nil, false
		}
		e.inUse = true
		l.mu.Unlock()
		return l.releaser(e), true
	}
	if len(l.byKey) >= l.max || time.Since(l.recalled[key]) < recallHold {
		l.mu.Unlock()
		return nil, false
	}
	j := &job{key: key, chat: chat, done: make(chan struct{})}
	l.jobs = append(l.jobs, j)
	l.wakeLocked()
	l.mu.Unlock()

	select {
	case <-j.done:
	case <-ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if j.entry == nil {
		j.abandoned = true
		return nil, false
	}
	if ctx.Err() != nil { // taken as the caller left: keep it idle, like any other
		j.entry.inUse = false
		j.entry.lastUsed = time.Now()
		return nil, false
	}
	return l.releaser(j.entry), true
}

// releaser ends a use case's hold of e; the lock stays with the lease connection.
func (l *leases) releaser(e *lease) func() {
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		e.inUse = false
		e.lastUsed = time.Now()
		if e.recalled {
			l.wakeLocked()
		}
	}
}

// held reports the id of the chat's lease if this replica holds it now and its session
// was proven alive within trust.
func (l *leases) held(chat uuid.UUID) (uint64, bool) {
	key := Key(chat)
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.byKey[key]
	if e == nil || e.chat != chat || !l.alive || time.Since(l.lastProof) >= trust {
		return 0, false
	}
	return e.id, true
}

// recallPayload is what a waiter of this replica sends on RecallChannel for key.
func (l *leases) recallPayload(key int64) string {
	return strconv.FormatInt(key, 10) + " " + l.replica
}

// recall handles a notification on RecallChannel: another replica waits for the key.
func (l *leases) recall(payload string) {
	k, from, _ := strings.Cut(payload, " ")
	key, err := strconv.ParseInt(k, 10, 64)
	if err != nil || from == l.replica {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recalled[key] = time.Now()
	if e := l.byKey[key]; e != nil {
		e.recalled = true
		if !e.inUse {
			l.wakeLocked() // reap it now
		}
	}
}

// close stops run, which closes the connection: the server releases every lease.
func (l *leases) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.done
		return
	}
	l.closed = true
	close(l.stop)
	l.wakeLocked()
	l.mu.Unlock()
	<-l.done
}

// wakeLocked makes run look at its work now. l.mu is held.
func (l *leases) wakeLocked() {
	select {
	case l.poke <- struct{}{}:
	default:
	}
	if l.cancelWait != nil {
		l.cancelWait()
	}
}

// run owns the lease connection until close.
func (l *leases) run() {
	defer close(l.done)
	var (
		conn     *pgx.Conn
		failedAt time.Time
		stopped  = func() bool {
			select {
			case <-l.stop:
				return true
			default:
				return false
			}
		}
	)
	defer func() {
		if conn != nil {
			l.lose(conn)
		}
		l.mu.Lock()
		for _, j := range l.jobs {
			close(j.done)
		}
		l.jobs = nil
		l.mu.Unlock()
	}()
	for !stopped() {
		l.mu.Lock()
		jobs := l.jobs
		l.jobs = nil
		l.mu.Unlock()
		if len(jobs) > 0 && conn == nil && time.Since(failedAt) >= reconnectBackoff {
			if conn = l.connect(); conn == nil {
				failedAt = time.Now()
			}
		}
		for _, j := range jobs {
			if conn != nil && !l.try(conn, j) {
				conn = nil
			}
			close(j.done)
		}
		if conn != nil && (!l.reap(conn) || !l.beat(conn)) {
			conn = nil
		}
		if conn == nil {
			select {
			case <-l.stop:
			case <-l.poke:
			}
			continue
		}
		if !l.wait(conn) {
			conn = nil
		}
	}
}

// connect opens the lease connection and listens for recalls.
func (l *leases) connect() *pgx.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), leaseOpTimeout)
	defer cancel()
	sent := time.Now()
	conn, err := pgx.ConnectConfig(ctx, l.cfg)
	if err != nil {
		return nil
	}
	if _, err := conn.Exec(ctx, "LISTEN "+RecallChannel); err != nil {
		_ = conn.Close(ctx)
		return nil
	}
	l.mu.Lock()
	l.alive, l.lastProof = true, sent
	l.epoch++
	l.mu.Unlock()
	return conn
}

// lose closes conn after a failure or at close: the server releases its locks, and
// every lease is forgotten first.
func (l *leases) lose(conn *pgx.Conn) {
	l.mu.Lock()
	l.alive = false
	l.epoch++
	clear(l.byKey)
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), leaseOpTimeout)
	defer cancel()
	_ = conn.Close(ctx)
}

// try runs job j: it takes the chat's lock on conn if it is free. It reports false when
// conn failed (and was lost).
func (l *leases) try(conn *pgx.Conn, j *job) bool {
	l.mu.Lock()
	taken := l.byKey[j.key] != nil // another chat of the same key: a second take would nest
	l.mu.Unlock()
	if taken {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaseOpTimeout)
	defer cancel()
	sent := time.Now()
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", j.key).Scan(&got); err != nil {
		l.lose(conn)
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastProof = sent
	if !got {
		return true
	}
	l.nextID++
	// A recall that came while the lock was being taken (it often comes with the answer)
	// holds for the new lease: its sender waits.
	e := &lease{chat: j.chat, id: l.nextID, lastUsed: time.Now(), recalled: time.Since(l.recalled[j.key]) < recallHold}
	if !j.abandoned {
		e.inUse = true
		j.entry = e
	}
	l.byKey[j.key] = e
	return true
}

// reap releases the leases that are idle past the linger or recalled and not in use.
// They leave byKey before the server releases them. It reports false when conn failed.
func (l *leases) reap(conn *pgx.Conn) bool {
	now := time.Now()
	var keys []int64
	l.mu.Lock()
	for k, e := range l.byKey {
		if !e.inUse && (e.recalled || now.Sub(e.lastUsed) >= l.linger) {
			keys = append(keys, k)
			delete(l.byKey, k)
		}
	}
	for k, at := range l.recalled {
		if now.Sub(at) >= recallHold {
			delete(l.recalled, k)
		}
	}
	l.mu.Unlock()
	if len(keys) == 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaseOpTimeout)
	defer cancel()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock(k) FROM unnest($1::bigint[]) AS k", keys); err != nil {
		l.lose(conn) // a doubtful session keeps nothing: closing it releases every lock
		return false
	}
	return true
}

// beat proves the session alive when leases are kept and the last proof is a heartbeat
// old. It reports false when conn failed.
func (l *leases) beat(conn *pgx.Conn) bool {
	l.mu.Lock()
	due := len(l.byKey) > 0 && time.Since(l.lastProof) >= heartbeat
	l.mu.Unlock()
	if !due {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaseOpTimeout)
	defer cancel()
	sent := time.Now()
	if err := conn.Ping(ctx); err != nil {
		l.lose(conn)
		return false
	}
	l.mu.Lock()
	l.lastProof = sent
	l.mu.Unlock()
	return true
}

// wait reads conn until a notification arrives, work is poked, or the next heartbeat or
// linger end is due. It reports false when conn failed: the server ended the session (a
// restart, pg_terminate_backend) or the network did.
func (l *leases) wait(conn *pgx.Conn) bool {
	l.mu.Lock()
	select {
	case <-l.poke:
		l.mu.Unlock()
		return true
	default:
	}
	d := idleWait
	if len(l.byKey) > 0 {
		d = min(d, heartbeat-time.Since(l.lastProof))
	}
	for _, e := range l.byKey {
		if !e.inUse {
			d = min(d, l.linger-time.Since(e.lastUsed))
		}
	}
	if d <= 0 {
		l.mu.Unlock()
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	l.cancelWait = cancel
	l.mu.Unlock()

	err := conn.PgConn().WaitForNotification(ctx)

	l.mu.Lock()
	l.cancelWait = nil
	l.mu.Unlock()
	if err != nil && ctx.Err() == nil || conn.IsClosed() {
		l.lose(conn)
		return false
	}
	return true
}
