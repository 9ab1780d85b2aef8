package pgstore

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
)

var _ lifecycle.Clock = (*Clock)(nil)

// Clock tells the database server's time: the local clock corrected by its offset from
// the server's, as last measured (Sync). Replicas that share a database and use its Clock
// decide "expired" against one clock, the database's, whatever their own say: a replica
// whose clock runs a minute fast never sweeps a session early, nor replaces it.
type Clock struct {
	pool   *pgxpool.Pool
	local  func() time.Time
	offset atomic.Int64 // nanoseconds: the database's time minus the local one
}

// Clock returns the Clock of the store's database, on the local clock local (nil:
// time.Now). Call Sync before use, and again now and then: clocks drift.
func (st *Store) Clock(local func() time.Time) *Clock {
	if local == nil {
		local = time.Now
	}
	return &Clock{pool: st.pool, local: local}
}

// Now returns the database's time as last measured.
func (c *Clock) Now() time.Time {
	return c.local().Add(time.Duration(c.offset.Load()))
}

// Sync measures the offset of the local clock from the database's, and returns it: the
// server's clock_timestamp() against the midpoint of the local times around the query
// (the error is at most half the round trip). Errors wrap sandbox.ErrUnavailable; the
// last offset stays in use.
func (c *Clock) Sync(ctx context.Context) (time.Duration, error) {
	var server time.Time
	before := c.local()
	err := c.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&server)
	after := c.local()
	if err != nil {
		return time.Duration(c.offset.Load()), translate("clock", err)
	}
	offset := server.Sub(before.Add(after.Sub(before) / 2))
	c.offset.Store(int64(offset))
	return offset, nil
}
