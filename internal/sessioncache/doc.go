// Package sessioncache provides the in-memory copy of registry rows that a store keeps so
// that Get, which every reuse calls, needs no query.
//
// The cache is only as exact as the store that uses it makes it: every write of a chat
// the cache may hold must go through that store while it runs (one process per SQLite
// file; for PostgreSQL, only while this replica holds the chat's lease, see package
// pglock). Within that, the Cache keeps reads and writes from undoing each other:
//   - a write forgets the chat before it runs (reads meanwhile go to the database) and
//     records the result after it committed (Stored) or ends without one (Settled);
//   - a read fills the cache only if no write was under way when it ends and none began
//     or ended since the read began (the generation Get hands out), so a slow read can
//     never put back what a write replaced. (The generation alone is not enough: a read
//     that begins after a write's forget may see the row as it was before the commit, and
//     end before the write does.)
//
// Each entry carries a tag, the validity it was read or written under (a lease id); Get
// hits only when the caller's tag is the entry's. A store whose rows are always valid
// uses one tag.
package sessioncache
