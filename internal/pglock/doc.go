// Package pglock provides a lifecycle.Locker on PostgreSQL advisory locks, so that the use
// cases of one chat are serialised across every sandboxd replica that shares a database.
//
// # The lock is not a fence
//
// Each lock is a session-level advisory lock held by one dedicated connection. PostgreSQL
// releases it when that connection's session ends, and the session can end under a holder
// that is still working: a network partition, a TCP keepalive timeout, a server restart, an
// operator's pg_terminate_backend. The holder learns of it only at its next query, and by
// then another replica may hold the chat's lock and run a use case of its own. So the lock
// makes overlap rare; it does not make it impossible.
//
// What makes a second sandbox for a chat impossible is checked where the state lives:
//   - the registry's UNIQUE (chat_id) constraint (pgstore, sqlitestore): of two overlapping
//     creates, the database admits one Save, the other gets sandbox.ErrConflict, and the
//     lifecycle stops the sandbox it had just made (nothing runs untracked);
//   - the runtime's deterministic container names, derived from the chat and session ids:
//     the engine refuses a second container of one name, and the reconciler finds any
//     labelled container that has no record.
//
// # One connection per chat and replica
//
// A caller waiting in pg_advisory_lock holds a connection of the pool for as long as it
// waits. Were every caller to wait there, the callers of one busy chat would take the
// whole pool and the locks of every other chat would wait for a connection. So the
// callers of one replica first queue on a process-local lock of the chat (package
// keylock), and only the one at its head takes a connection: a replica holds at most one
// connection per chat it is locking, whatever the number of callers.
//
// # Leases
//
// With Config.Linger set, a chat's lock outlives its use case: the replica's lease
// connection (one per replica, apart from the pool) takes a free chat's lock with
// pg_try_advisory_lock and keeps it for Linger after its last use, so that the chat's next
// use case on this replica locks without a round trip. While this replica keeps a chat's
// lock no other replica writes the chat's row, so the store may answer that chat from
// memory (pgstore.Store.CacheUnder asks Lease). A lease ends when:
//   - it has been idle for Linger (the lease connection unlocks it);
//   - another replica waits for the chat: its Lock, when it cannot take the chat as a
//     lease, sends the chat's key on RecallChannel before it waits, and the holder
//     unlocks the chat as soon as no use case of its own holds it, and takes no new lease
//     of it for a second;
//   - the lease session ends (a restart, pg_terminate_backend, a failed command): the
//     connection reads the server between commands, so it learns of the end as the server
//     reports it, and forgets every lease before it reconnects. A command on it that takes
//     longer than 5 seconds (a heartbeat to an overloaded server) ends the session too,
//     and with it the locks of use cases still running, as any lost session would.
//
// New leases are taken one at a time by the lease connection's goroutine (one
// pg_try_advisory_lock each); while it cannot connect, Locks wait for the lock the
// ordinary way.
//
// Lease vouches for a lease only while the session was proven alive within 3 seconds (a
// heartbeat runs every second), and the lease session asks the server for a 10-second TCP
// keepalive idle time, so a silent network cannot release the locks while Lease still
// vouches for them. What it cannot exclude is the moment between the server ending the
// lease session and this replica reading that it did (microseconds, unless the replica
// is stalled): another replica may take the lock then. As for every lock here, the
// registry's UNIQUE constraint, not the lease, is what keeps one session per chat.
package pglock
