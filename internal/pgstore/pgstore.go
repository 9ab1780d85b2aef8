// Package pgstore provides a lifecycle.Store on PostgreSQL (pgx/v5, pgxpool), the
// registry several sandboxd replicas share.
//
// The table holds one row per session with UNIQUE (chat_id): the database, not a lock, is
// what guarantees one session per chat (see package pglock for why the lock alone is not a
// fence).
//
// A Store may keep the sessions of the chats whose lock this replica keeps as a lease in
// memory (CacheUnder): no other replica writes a chat's row while this one keeps its lock,
// so Get, which every reuse calls, answers those chats without a query.
package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

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

// Store is a lifecycle.Store on a PostgreSQL database.
type Store struct {
	pool     *pgxpool.Pool
	ownsPool bool
	leases   Leases              // nil: no cache
	cache    *sessioncache.Cache // sessions read or written under a lease, tagged with its id
}

// Leases tells which chats this replica holds the lock of as a lease (pglock.Locker).
type Leases interface {
	// Lease reports the id of the chat's lease, if this replica keeps the chat's lock
	// now; while one id is reported, no other replica has held the chat's lock.
	Lease(chatID uuid.UUID) (id uint64, ok bool)
}

// cacheMax bounds the cached sessions. An entry of an ended lease is never served (its tag
// is not the chat's lease any more) and stays until it is overwritten, or a read under a
// lease finds no row, or the cache empties at the bound.
const cacheMax = 4096

// CacheUnder makes Get answer a chat from memory while leases vouches that this replica
// has kept the chat's lock since the session was read or written. Every writer of the
// registry must hold a chat's lock to write its row, as the lifecycle's use cases do. Call
// it before the Store is used.
func (st *Store) CacheUnder(leases Leases) {
	st.leases = leases
	st.cache = sessioncache.New(cacheMax)
}

// Open connects to the database dsn (a URL or keyword/value string that pgxpool accepts),
// brings its schema up to date and returns a Store that owns its pool. Errors wrap
// sandbox.ErrInvalid for a malformed dsn and sandbox.ErrUnavailable when the database
// cannot be reached or migrated.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The parse error may quote the dsn, password included: do not wrap it.
		return nil, fmt.Errorf("pgstore: open: malformed dsn: %w", sandbox.ErrInvalid)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, translate("open", err)
	}
	st, err := New(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, err
	}
	st.ownsPool = true
	return st, nil
}

// New brings the schema of pool's database up to date and returns a Store on pool, which
// the caller keeps and closes. Several replicas may call New at once: the migrations run
// under a PostgreSQL advisory lock, one replica after the other. Errors wrap
// sandbox.ErrUnavailable when the database cannot be reached or migrated.
func New(ctx context.Context, pool *pgxpool.Pool) (*Store, error) {
	if pool == nil {
		return nil, fmt.Errorf("pgstore: new: nil pool: %w", sandbox.ErrInvalid)
	}
	st := &Store{pool: pool}
	if err := st.migrate(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

// migrateLockID is the advisory lock the migrations run under, in its own key space
// ("sandboxd/pgstore/migrate") so that it meets neither goose's default nor pglock's keys.
var migrateLockID = func() int64 {
	h := fnv.New64a()
	h.Write([]byte("sandboxd/pgstore/migrate"))
	return int64(h.Sum64())
}()

func (st *Store) migrate(ctx context.Context) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	// goose's session locker holds a session-level advisory lock on one connection while it
	// migrates; a replica that starts at the same time retries every second for up to
	// five minutes (or until ctx ends), then finds the schema up to date.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(migrateLockID), lock.WithLockTimeout(1, 300))
	if err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	db := stdlib.OpenDBFromPool(st.pool)
	defer db.Close() // releases its connections to the pool; the pool stays open
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
		goose.WithLogger(goose.NopLogger()))
	if err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return translate("migrate", err)
	}
	return nil
}

// Close closes the pool if Open made it; a pool given to New is the caller's to close.
// It returns no error; the signature matches io.Closer.
func (st *Store) Close() error {
	if st.ownsPool {
		st.pool.Close()
	}
	return nil
}

// Ping reports whether the database answers, for readiness checks. The error wraps
// sandbox.ErrUnavailable.
func (st *Store) Ping(ctx context.Context) error {
	if err := st.pool.Ping(ctx); err != nil {
		return translate("ping", err)
	}
	return nil
}

// Bind ties the registry to the runtime identity (see lifecycle.Binding). Replicas that
// bind at the same moment take turns (a table lock); the first one's identity wins.
func (st *Store) Bind(ctx context.Context, identity string, rebind bool) (string, error) {
	tx, err := st.pool.Begin(ctx)
	if err != nil {
		return "", translate("bind", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `LOCK TABLE runtime_binding IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return "", translate("bind", err)
	}
	var previous string
	err = tx.QueryRow(ctx, `SELECT identity FROM runtime_binding`).Scan(&previous)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", translate("bind", err)
	}
	tie, err := lifecycle.Rebinding(previous, identity, rebind)
	if err != nil {
		return previous, fmt.Errorf("pgstore: %w", err)
	}
	if !tie {
		return previous, nil
	}
	if _, err := tx.Exec(ctx, `INSERT INTO runtime_binding (identity) VALUES ($1)
		ON CONFLICT (singleton) DO UPDATE SET identity = EXCLUDED.identity, bound_at = now()`, identity); err != nil {
		return "", translate("bind", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return "", translate("bind", err)
	}
	return previous, nil
}

// Registry returns the registry's own id and the registries it adopted (see
// lifecycle.Binding).
func (st *Store) Registry(ctx context.Context) (string, []string, error) {
	rows, err := st.pool.Query(ctx, `SELECT registry_id, adopted FROM registry_ids ORDER BY registry_id`)
	if err != nil {
		return "", nil, translate("registry", err)
	}
	var (
		own, id string
		adopted []string
		a       bool
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &a}, func() error {
		if a {
			adopted = append(adopted, id)
		} else {
			own = id
		}
		return nil
	})
	if err != nil {
		return "", nil, translate("registry", err)
	}
	if own == "" {
		return "", nil, fmt.Errorf("pgstore: registry: the database holds no registry id: %w", sandbox.ErrUnavailable)
	}
	return own, adopted, nil
}

// Adopt records that the registry took over registry id's sandboxes.
func (st *Store) Adopt(ctx context.Context, id string) error {
	if _, err := st.pool.Exec(ctx, `INSERT INTO registry_ids (registry_id, adopted) VALUES ($1, true)
		ON CONFLICT (registry_id) DO NOTHING`, id); err != nil {
		return translate("adopt registry "+id, err)
	}
	return nil
}

// Save records s. It returns an error wrapping sandbox.ErrConflict when the chat already
// has a session (the UNIQUE constraint on chat_id refuses it) or the session id is taken.
func (st *Store) Save(ctx context.Context, s sandbox.Session) error {
	var (
		lease  uint64
		leased bool
	)
	if st.cache != nil {
		lease, leased = st.leases.Lease(s.ChatID)
		st.cache.ForgetChat(s.ChatID)
	}
	_, err := st.pool.Exec(ctx, `
		INSERT INTO sandbox_sessions
			(session_id, chat_id, container_id, status, created_at, expires_at, agent_id, volume_host_path, tenant)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		s.ID, s.ChatID, s.ContainerID, string(s.Status), s.CreatedAt, s.ExpiresAt, s.AgentID, s.VolumeHostPath, s.TenantOf())
	if err != nil {
		if st.cache != nil {
			st.cache.Settled()
		}
		return translate(fmt.Sprintf("save session %s of chat %s", s.ID, s.ChatID), err)
	}
	if st.cache != nil {
		if after, ok := st.leases.Lease(s.ChatID); leased && ok && after == lease {
			// Cache what the table holds (microseconds, UTC), as Get reads it.
			s.CreatedAt = time.UnixMicro(s.CreatedAt.UnixMicro()).UTC()
			s.ExpiresAt = time.UnixMicro(s.ExpiresAt.UnixMicro()).UTC()
			s.Tenant = s.TenantOf()
			st.cache.Stored(s, lease)
		} else {
			st.cache.Settled()
		}
	}
	return nil
}

const columns = `session_id, chat_id, container_id, status, created_at, expires_at, agent_id, volume_host_path, tenant`

// Get returns the chat's session, expired or not, or an error wrapping sandbox.ErrNotFound.
func (st *Store) Get(ctx context.Context, chatID uuid.UUID) (sandbox.Session, error) {
	if st.cache == nil {
		return st.get(ctx, chatID)
	}
	lease, ok := st.leases.Lease(chatID)
	if !ok {
		return st.get(ctx, chatID)
	}
	cached, hit, gen := st.cache.Get(chatID, lease)
	if hit {
		return cached, nil
	}
	s, err := st.get(ctx, chatID)
	switch {
	case err == nil:
		st.cache.Fill(s, lease, gen)
	case errors.Is(err, sandbox.ErrNotFound):
		st.cache.Drop(chatID)
	}
	return s, err
}

// Cached returns the chat's session from memory (lifecycle.Snapshots) if this replica
// holds the chat's lease and the cache holds the session under it, and holds the same
// lease still once the cache was read: no other replica can have written the row from
// before the copy was made until then. Without CacheUnder it reports false.
func (st *Store) Cached(chatID uuid.UUID) (sandbox.Session, bool) {
	if st.cache == nil {
		return sandbox.Session{}, false
	}
	lease, ok := st.leases.Lease(chatID)
	if !ok {
		return sandbox.Session{}, false
	}
	s, hit, _ := st.cache.Get(chatID, lease)
	if !hit {
		return sandbox.Session{}, false
	}
	if after, ok := st.leases.Lease(chatID); !ok || after != lease {
		return sandbox.Session{}, false
	}
	return s, true
}

func (st *Store) get(ctx context.Context, chatID uuid.UUID) (sandbox.Session, error) {
	rows, err := st.pool.Query(ctx, `SELECT `+columns+` FROM sandbox_sessions WHERE chat_id = $1`, chatID)
	if err != nil {
		return sandbox.Session{}, translate(fmt.Sprintf("get chat %s", chatID), err)
	}
	s, err := pgx.CollectExactlyOneRow(rows, scan)
	if errors.Is(err, pgx.ErrNoRows) {
		return sandbox.Session{}, fmt.Errorf("pgstore: get chat %s: %w", chatID, sandbox.ErrNotFound)
	}
	if err != nil {
		return sandbox.Session{}, translate(fmt.Sprintf("get chat %s", chatID), err)
	}
	return s, nil
}

// ListExpired returns up to limit sessions with ExpiresAt <= now after the cursor,
// oldest expiry first (ties in chat order), read from the expiry index. A limit <= 0
// means no limit.
func (st *Store) ListExpired(ctx context.Context, now time.Time, after lifecycle.ExpiredAfter, limit int) ([]sandbox.Session, error) {
	var lim any // NULL: LIMIT ALL
	if limit > 0 {
		lim = limit
	}
	rows, err := st.pool.Query(ctx, `SELECT `+columns+` FROM sandbox_sessions
		WHERE expires_at <= $1 AND (expires_at, chat_id) > ($2, $3)
		ORDER BY expires_at, chat_id LIMIT $4`, now, after.ExpiresAt, after.ChatID, lim)
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
	args := []any{f.After}
	where := []string{"chat_id > $1"}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Tenant != "" {
		where = append(where, "tenant = "+arg(f.Tenant))
	}
	if f.AgentID != "" {
		where = append(where, "agent_id = "+arg(f.AgentID))
	}
	if f.VolumeHostPath != "" {
		where = append(where, "volume_host_path = "+arg(f.VolumeHostPath))
	}
	if f.Expired != nil {
		if *f.Expired {
			where = append(where, "expires_at <= "+arg(f.Now))
		} else {
			where = append(where, "expires_at > "+arg(f.Now))
		}
	}
	rows, err := st.pool.Query(ctx, `SELECT `+columns+` FROM sandbox_sessions
		WHERE `+strings.Join(where, " AND ")+` ORDER BY chat_id LIMIT `+arg(limit), args...)
	if err != nil {
		return nil, translate("list", err)
	}
	return collect("list", rows)
}

// Count returns how many sessions the registry holds.
func (st *Store) Count(ctx context.Context) (int, error) {
	var n int
	if err := st.pool.QueryRow(ctx, `SELECT count(*) FROM sandbox_sessions`).Scan(&n); err != nil {
		return 0, translate("count", err)
	}
	return n, nil
}

// CountTenant returns how many sessions of tenant the registry holds, expired or not.
func (st *Store) CountTenant(ctx context.Context, tenant string) (int, error) {
	var n int
	if err := st.pool.QueryRow(ctx, `SELECT count(*) FROM sandbox_sessions WHERE tenant = $1`, tenant).Scan(&n); err != nil {
		return 0, translate("count tenant "+tenant, err)
	}
	return n, nil
}

// SetExpiry moves the expiry of session sessionID. It returns an error wrapping
// sandbox.ErrNotFound when no such session exists.
func (st *Store) SetExpiry(ctx context.Context, sessionID uuid.UUID, expiresAt time.Time) error {
	if st.cache != nil {
		st.cache.ForgetSession(sessionID) // the next Get reads the new expiry
		defer st.cache.Settled()
	}
	tag, err := st.pool.Exec(ctx, `UPDATE sandbox_sessions SET expires_at = $1 WHERE session_id = $2`, expiresAt, sessionID)
	if err != nil {
		return translate(fmt.Sprintf("set expiry of session %s", sessionID), err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("pgstore: set expiry of session %s: %w", sessionID, sandbox.ErrNotFound)
	}
	return nil
}

// Remove forgets session sessionID. Removing a session that is gone is no error.
func (st *Store) Remove(ctx context.Context, sessionID uuid.UUID) error {
	if st.cache != nil {
		st.cache.ForgetSession(sessionID)
		defer st.cache.Settled()
	}
	if _, err := st.pool.Exec(ctx, `DELETE FROM sandbox_sessions WHERE session_id = $1`, sessionID); err != nil {
		return translate(fmt.Sprintf("remove session %s", sessionID), err)
	}
	return nil
}

// RemoveExpired forgets session sessionID if it is still chatID's session and expired at
// now, in one conditional DELETE, and reports whether it did.
func (st *Store) RemoveExpired(ctx context.Context, chatID, sessionID uuid.UUID, now time.Time) (bool, error) {
	if st.cache != nil {
		st.cache.ForgetSession(sessionID)
		defer st.cache.Settled()
	}
	tag, err := st.pool.Exec(ctx, `DELETE FROM sandbox_sessions
		WHERE chat_id = $1 AND session_id = $2 AND expires_at <= $3`, chatID, sessionID, now)
	if err != nil {
		return false, translate(fmt.Sprintf("remove expired session %s", sessionID), err)
	}
	return tag.RowsAffected() == 1, nil
}

func scan(row pgx.CollectableRow) (sandbox.Session, error) {
	var (
		s      sandbox.Session
		status string
	)
	err := row.Scan(&s.ID, &s.ChatID, &s.ContainerID, &status, &s.CreatedAt, &s.ExpiresAt, &s.AgentID, &s.VolumeHostPath, &s.Tenant)
	s.Status = sandbox.Status(status)
	// timestamptz is an instant; pgx hands it back in the local zone.
	s.CreatedAt, s.ExpiresAt = s.CreatedAt.UTC(), s.ExpiresAt.UTC()
	return s, err
}

func collect(op string, rows pgx.Rows) ([]sandbox.Session, error) {
	out, err := pgx.CollectRows(rows, scan)
	if err != nil {
		return nil, translate(op, err)
	}
	return out, nil
}

// translate wraps a driver error with the operation and the sentinel it stands for:
//   - a unique violation (23505) is sandbox.ErrConflict;
//   - a connection the server refuses, whatever its reason (no such database, a wrong
//     password, too many clients), a server that drops the connection (class 08, 53
//     insufficient resources, 57P01-57P03 shutdown), and any failure that never got a
//     server answer (dial, network, closed pool), is sandbox.ErrUnavailable;
//   - ctx's errors keep their identity; other server errors (a bug in a query) are wrapped
//     as they are.
func translate(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("pgstore: %s: %w", op, err)
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return fmt.Errorf("pgstore: %s: %w: %w", op, sandbox.ErrUnavailable, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23505":
			return fmt.Errorf("pgstore: %s: %w: %w", op, sandbox.ErrConflict, err)
		case strings.HasPrefix(pgErr.Code, "08"), strings.HasPrefix(pgErr.Code, "53"),
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03":
			return fmt.Errorf("pgstore: %s: %w: %w", op, sandbox.ErrUnavailable, err)
		}
		return fmt.Errorf("pgstore: %s: %w", op, err)
	}
	return fmt.Errorf("pgstore: %s: %w: %w", op, sandbox.ErrUnavailable, err)
}
