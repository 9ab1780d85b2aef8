// Package sqlitestore provides a durable lifecycle.Store in one SQLite file, the embedded
// default of sandboxd. It runs on modernc.org/sqlite (pure Go) and is safe for many
// goroutines of one process.
//
// The file is meant for one sandboxd process; several replicas share PostgreSQL instead
// (package pgstore). The Store relies on that: it keeps the sessions it has read or written
// in memory (package sessioncache), so a change made to the file behind its back is not seen by Get
// until the process restarts.
package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/sessioncache"
)

var (
	_ lifecycle.Store   = (*Store)(nil)
	_ lifecycle.Binding = (*Store)(nil)
)

//go:embed migrations/*.sql
var migrations embed.FS

// busyTimeout is how long a statement waits for another process's write lock on the file
// before it fails with SQLITE_BUSY (translated to sandbox.ErrUnavailable).
const busyTimeout = 5 * time.Second

// Store is a lifecycle.Store on one SQLite file.
//
// SQLite admits one writer at a time. Rather than let goroutines race for the file's write
// lock (and fail with "database is locked" when a deferred transaction cannot upgrade), all
// writes go through a pool of exactly one connection, so they queue in Go; reads use a
// separate read-only pool, which WAL lets run alongside the writer. busy_timeout covers
// the remaining case, another process holding the file.
type Store struct {
	w *sql.DB // the single writer connection
	r *sql.DB // readers

	// get is prepared once: parsing it anew on every call was the largest cost of a
	// reuse, the hottest path of the service; the cache spares most calls altogether.
	get   *sql.Stmt
	cache *sessioncache.Cache
	spare *reserve // room for Remove on a full file system (reserve.go)
}

// Open opens (creating it if need be) the SQLite database at path, brings its schema up to
// date and returns a Store. Errors wrap sandbox.ErrInvalid for an unusable path and
// sandbox.ErrUnavailable when the file cannot be opened or migrated.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlitestore: open %q: path must be a file name without '?' or '#': %w", path, sandbox.ErrInvalid)
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)") // durable across process crashes; WAL keeps it consistent
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate") // a transaction takes the write lock at BEGIN, never mid-way
	dsn := path + "?" + q.Encode()

	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: open %s: %w: %w", path, sandbox.ErrUnavailable, err)
	}
	w.SetMaxOpenConns(1)
	r, err := sql.Open("sqlite", dsn+"&"+url.Values{"_pragma": {"query_only(1)"}}.Encode())
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("sqlitestore: open %s: %w: %w", path, sandbox.ErrUnavailable, err)
	}
	r.SetMaxOpenConns(max(4, runtime.NumCPU()))
	st := &Store{w: w, r: r, cache: sessioncache.New(0), spare: &reserve{path: path + ".reserve"}}
	if err := st.migrate(ctx, path); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("sqlitestore: open %s: %w", path, err)
	}
	if st.get, err = r.PrepareContext(ctx, `SELECT `+columns+` FROM sandbox_sessions WHERE chat_id = ?`); err != nil {
		_ = st.Close()
		return nil, translate("open "+path+": prepare", err)
	}
	st.spare.fill()
	return st, nil
}

// migrate applies the embedded migrations on the writer connection. One process is
// expected per file, but two may start at once (a restart overlapping its predecessor):
// goose checks and creates its tables outside any one transaction, so the migration runs
// under an exclusive lock on a file next to the database, one process after the other.
func (st *Store) migrate(ctx context.Context, path string) error {
	unlock, err := lockFile(ctx, path+".migrate.lock")
	if err != nil {
		return fmt.Errorf("migrate: %w: %w", sandbox.ErrUnavailable, err)
	}
	defer unlock()
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, st.w, fsys,
		goose.WithDisableGlobalRegistry(true), goose.WithLogger(goose.NopLogger()))
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return translate("migrate", err)
	}
	return nil
}

// lockFile takes an exclusive flock on name (created if need be), waiting while ctx lasts.
// The lock goes with the process, should it die. (Not the database file itself: closing any
// descriptor of that file would drop SQLite's own POSIX locks on it.)
func lockFile(ctx context.Context, name string) (unlock func(), err error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil // closing the file releases the flock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close closes the database. The Store must not be used afterwards.
func (st *Store) Close() error {
	var err error
	if st.get != nil {
		err = st.get.Close()
	}
	return errors.Join(err, st.r.Close(), st.w.Close())
}

// Ping reports whether the database answers, for readiness checks. The error wraps
// sandbox.ErrUnavailable.
func (st *Store) Ping(ctx context.Context) error {
	var one int
	if err := st.w.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return translate("ping", err)
	}
	return nil
}

// Bind ties the registry to the runtime identity (see lifecycle.Binding).
func (st *Store) Bind(ctx context.Context, identity string, rebind bool) (string, error) {
	tx, err := st.w.BeginTx(ctx, nil) // immediate: the write lock from the start
	if err != nil {
		return "", translate("bind", err)
	}
	defer func() { _ = tx.Rollback() }()
	var previous string
	err = tx.QueryRowContext(ctx, `SELECT identity FROM runtime_binding WHERE singleton = 1`).Scan(&previous)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", translate("bind", err)
	}
	tie, err := lifecycle.Rebinding(previous, identity, rebind)
	if err != nil {
		return previous, fmt.Errorf("sqlitestore: %w", err)
	}
	if !tie {
		return previous, nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO runtime_binding (singleton, identity, bound_at) VALUES (1, ?, ?)
		ON CONFLICT (singleton) DO UPDATE SET identity = excluded.identity, bound_at = excluded.bound_at`,
		identity, time.Now().UnixMicro()); err != nil {
		return "", translate("bind", err)
	}
	if err := tx.Commit(); err != nil {
		return "", translate("bind", err)
	}
	return previous, nil
}

// Registry returns the registry's own id and the registries it adopted (see
// lifecycle.Binding).
func (st *Store) Registry(ctx context.Context) (string, []string, error) {
	rows, err := st.r.QueryContext(ctx, `SELECT registry_id, adopted FROM registry_ids ORDER BY registry_id`)
	if err != nil {
		return "", nil, translate("registry", err)
	}
	defer rows.Close()
	var (
		own     string
		adopted []string
	)
	for rows.Next() {
		var (
			id string
			a  bool
		)
		if err := rows.Scan(&id, &a); err != nil {
			return "", nil, translate("registry", err)
		}
		if a {
			adopted = append(adopted, id)
		} else {
			own = id
		}
	}
	if err := rows.Err(); err != nil {
		return "", nil, translate("registry", err)
	}
	if own == "" {
		return "", nil, fmt.Errorf("sqlitestore: registry: the file holds no registry id: %w", sandbox.ErrUnavailable)
	}
	return own, adopted, nil
}

// Adopt records that the registry took over registry id's sandboxes.
func (st *Store) Adopt(ctx context.Context, id string) error {
	_, err := st.w.ExecContext(ctx, `INSERT INTO registry_ids (registry_id, adopted, since) VALUES (?, 1, ?)
		ON CONFLICT (registry_id) DO NOTHING`, id, time.Now().UnixMicro())
	if err != nil {
		return translate("adopt registry "+id, err)
	}
	return nil
}

// Save records s. It returns an error wrapping sandbox.ErrConflict when the chat already
// has a session (the UNIQUE constraint on chat_id refuses it) or the session id is taken.
func (st *Store) Save(ctx context.Context, s sandbox.Session) error {
	st.cache.ForgetChat(s.ChatID)
	_, err := st.w.ExecContext(ctx, `
		INSERT INTO sandbox_sessions
			(session_id, chat_id, container_id, status, created_at, expires_at, agent_id, volume_host_path, tenant)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		s.ID.String(), s.ChatID.String(), s.ContainerID, string(s.Status),
		s.CreatedAt.UnixMicro(), s.ExpiresAt.UnixMicro(), s.AgentID, s.VolumeHostPath, s.TenantOf())
	if err != nil {
		st.cache.Settled()
		return translate(fmt.Sprintf("save session %s of chat %s", s.ID, s.ChatID), err)
	}
	// Cache what the file holds (microseconds, UTC), not the caller's nanoseconds and zone:
	// Get must answer the same from the cache as from the file.
	s.CreatedAt = time.UnixMicro(s.CreatedAt.UnixMicro()).UTC()
	s.ExpiresAt = time.UnixMicro(s.ExpiresAt.UnixMicro()).UTC()
	s.Tenant = s.TenantOf()
	st.cache.Stored(s, 0)
	st.spare.fill() // once spent, made again when there is room
	return nil
}

const columns = `session_id, chat_id, container_id, status, created_at, expires_at, agent_id, volume_host_path, tenant`

// Get returns the chat's session, expired or not, or an error wrapping sandbox.ErrNotFound.
// It answers from the cache when it can.
func (st *Store) Get(ctx context.Context, chatID uuid.UUID) (sandbox.Session, error) {
	cached, ok, gen := st.cache.Get(chatID, 0)
	if ok {
		return cached, nil
	}
	s, err := scan(st.get.QueryRowContext(ctx, chatID.String()))
	if errors.Is(err, sql.ErrNoRows) {
		return sandbox.Session{}, fmt.Errorf("sqlitestore: get chat %s: %w", chatID, sandbox.ErrNotFound)
	}
	if err != nil {
		return sandbox.Session{}, translate(fmt.Sprintf("get chat %s", chatID), err)
	}
	st.cache.Fill(s, 0, gen)
	return s, nil
}

// Cached returns the chat's session if the cache holds it (lifecycle.Snapshots): exact,
// since the file belongs to this process and every write of it goes through the Store.
func (st *Store) Cached(chatID uuid.UUID) (sandbox.Session, bool) {
	s, ok, _ := st.cache.Get(chatID, 0)
	return s, ok
}

// ListExpired returns up to limit sessions with ExpiresAt <= now after the cursor,
// oldest expiry first (ties in chat order), read from the expiry index. A limit <= 0
// means no limit.
func (st *Store) ListExpired(ctx context.Context, now time.Time, after lifecycle.ExpiredAfter, limit int) ([]sandbox.Session, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := st.r.QueryContext(ctx, `SELECT `+columns+` FROM sandbox_sessions
		WHERE expires_at <= ? AND (expires_at, chat_id) > (?, ?)
		ORDER BY expires_at, chat_id LIMIT ?`,
		now.UnixMicro(), after.ExpiresAt.UnixMicro(), after.ChatID.String(), limit)
	if err != nil {
		return nil, translate("list expired", err)
	}
	return collect("list expired", rows)
}

// List returns one page of sessions ordered by chat id, after filter.After, with the
// filter's tenant, agent and expiry conditions.
func (st *Store) List(ctx context.Context, f lifecycle.ListFilter) ([]sandbox.Session, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	where := []string{"chat_id > ?"}
	args := []any{f.After.String()}
	if f.Tenant != "" {
		where = append(where, "tenant = ?")
		args = append(args, f.Tenant)
	}
	if f.AgentID != "" {
		where = append(where, "agent_id = ?")
		args = append(args, f.AgentID)
	}
	if f.VolumeHostPath != "" {
		where = append(where, "volume_host_path = ?")
		args = append(args, f.VolumeHostPath)
	}
	if f.Expired != nil {
		if *f.Expired {
			where = append(where, "expires_at <= ?")
		} else {
			where = append(where, "expires_at > ?")
		}
		args = append(args, f.Now.UnixMicro())
	}
	args = append(args, limit)
	rows, err := st.r.QueryContext(ctx, `SELECT `+columns+` FROM sandbox_sessions
		WHERE `+strings.Join(where, " AND ")+` ORDER BY chat_id LIMIT ?`, args...)
	if err != nil {
		return nil, translate("list", err)
	}
	return collect("list", rows)
}

// Count returns how many sessions the registry holds.
func (st *Store) Count(ctx context.Context) (int, error) {
	var n int
	if err := st.r.QueryRowContext(ctx, `SELECT count(*) FROM sandbox_sessions`).Scan(&n); err != nil {
		return 0, translate("count", err)
	}
	return n, nil
}

// CountTenant returns how many sessions of tenant the registry holds, expired or not.
func (st *Store) CountTenant(ctx context.Context, tenant string) (int, error) {
	var n int
	if err := st.r.QueryRowContext(ctx, `SELECT count(*) FROM sandbox_sessions WHERE tenant = ?`, tenant).Scan(&n); err != nil {
		return 0, translate("count tenant "+tenant, err)
	}
	return n, nil
}

// SetExpiry moves the expiry of session sessionID. It returns an error wrapping
// sandbox.ErrNotFound when no such session exists.
func (st *Store) SetExpiry(ctx context.Context, sessionID uuid.UUID, expiresAt time.Time) error {
	st.cache.ForgetSession(sessionID) // the next Get reads the new expiry from the file
	defer st.cache.Settled()
	res, err := st.w.ExecContext(ctx, `UPDATE sandbox_sessions SET expires_at = ? WHERE session_id = ?`,
		expiresAt.UnixMicro(), sessionID.String())
	if err != nil {
		return translate(fmt.Sprintf("set expiry of session %s", sessionID), err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return translate(fmt.Sprintf("set expiry of session %s", sessionID), err)
	} else if n == 0 {
		return fmt.Errorf("sqlitestore: set expiry of session %s: %w", sessionID, sandbox.ErrNotFound)
	}
	return nil
}

// Remove forgets session sessionID. Removing a session that is gone is no error.
func (st *Store) Remove(ctx context.Context, sessionID uuid.UUID) error {
	st.cache.ForgetSession(sessionID)
	defer st.cache.Settled()
	_, err := st.w.ExecContext(ctx, `DELETE FROM sandbox_sessions WHERE session_id = ?`, sessionID.String())
	if err != nil && isFull(err) && st.spare.release() {
		// The file system is full: the reserve's room lets the session be forgotten.
		_, err = st.w.ExecContext(ctx, `DELETE FROM sandbox_sessions WHERE session_id = ?`, sessionID.String())
	}
	if err != nil {
		return translate(fmt.Sprintf("remove session %s", sessionID), err)
	}
	return nil
}

// RemoveExpired forgets session sessionID if it is still chatID's session and expired at
// now, in one conditional DELETE, and reports whether it did.
func (st *Store) RemoveExpired(ctx context.Context, chatID, sessionID uuid.UUID, now time.Time) (bool, error) {
	st.cache.ForgetSession(sessionID)
	defer st.cache.Settled()
	const q = `DELETE FROM sandbox_sessions WHERE chat_id = ? AND session_id = ? AND expires_at <= ?`
	res, err := st.w.ExecContext(ctx, q, chatID.String(), sessionID.String(), now.UnixMicro())
	if err != nil && isFull(err) && st.spare.release() {
		// The file system is full: the reserve's room lets the sweep forget the session.
		res, err = st.w.ExecContext(ctx, q, chatID.String(), sessionID.String(), now.UnixMicro())
	}
	if err != nil {
		return false, translate(fmt.Sprintf("remove expired session %s", sessionID), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, translate(fmt.Sprintf("remove expired session %s", sessionID), err)
	}
	return n == 1, nil
}

func scan(row interface{ Scan(...any) error }) (sandbox.Session, error) {
	var (
		s                sandbox.Session
		status           string
		created, expires int64
	)
	err := row.Scan(&s.ID, &s.ChatID, &s.ContainerID, &status, &created, &expires, &s.AgentID, &s.VolumeHostPath, &s.Tenant)
	if err != nil {
		return sandbox.Session{}, err
	}
	s.Status = sandbox.Status(status)
	s.CreatedAt = time.UnixMicro(created).UTC()
	s.ExpiresAt = time.UnixMicro(expires).UTC()
	return s, nil
}

func collect(op string, rows *sql.Rows) ([]sandbox.Session, error) {
	defer rows.Close()
	var out []sandbox.Session
	for rows.Next() {
		s, err := scan(rows)
		if err != nil {
			return nil, translate(op, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(op, err)
	}
	return out, nil
}

// translate wraps a driver error with the operation and the sentinel it stands for: a
// unique or primary-key violation is a conflict; a busy, locked, unreadable or full file is
// unavailable. Context errors keep their identity.
func translate(op string, err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch code := se.Code(); {
		case code == sqlite3.SQLITE_CONSTRAINT_UNIQUE || code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("sqlitestore: %s: %w: %w", op, sandbox.ErrConflict, err)
		case unavailable[code&0xff]:
			return fmt.Errorf("sqlitestore: %s: %w: %w", op, sandbox.ErrUnavailable, err)
		}
	}
	if errors.Is(err, sql.ErrConnDone) {
		return fmt.Errorf("sqlitestore: %s: %w: %w", op, sandbox.ErrUnavailable, err)
	}
	return fmt.Errorf("sqlitestore: %s: %w", op, err)
}

// unavailable lists the primary result codes that mean the file cannot serve now.
var unavailable = map[int]bool{
	sqlite3.SQLITE_BUSY:     true,
	sqlite3.SQLITE_LOCKED:   true,
	sqlite3.SQLITE_IOERR:    true,
	sqlite3.SQLITE_CANTOPEN: true,
	sqlite3.SQLITE_FULL:     true,
	sqlite3.SQLITE_READONLY: true,
	sqlite3.SQLITE_NOMEM:    true,
}
