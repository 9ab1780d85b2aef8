package sqlitestore

import (
	"sync"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// cache keeps the sessions this Store has read or written, by chat, so that Get, which
// every reuse calls, needs no query. It stays exact because the file belongs to one
// process and every write goes through this Store (see the package comment):
//   - a write forgets the chat before it runs (reads meanwhile go to the file) and records
//     the result after it committed;
//   - a read fills the cache only if no write was under way when it ends (writing) and
//     none began or ended since the read began (gen), so a slow read can never put back
//     what a write replaced. (gen alone is not enough: a read that begins after a write's
//     forget may see the row as it was before the commit, and end before the write does.)
type cache struct {
	mu      sync.Mutex
	gen     uint64
	writing int // writes forgotten but not yet stored or settled
	byChat  map[uuid.UUID]sandbox.Session
	chatOf  map[uuid.UUID]uuid.UUID // session id -> chat id, for the sessions in byChat
}

func newCache() *cache {
	return &cache{byChat: map[uuid.UUID]sandbox.Session{}, chatOf: map[uuid.UUID]uuid.UUID{}}
}

// get returns the chat's cached session, or the generation a read must carry to fill it.
func (c *cache) get(chat uuid.UUID) (sandbox.Session, bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.byChat[chat]
	return s, ok, c.gen
}

// fill records what a read that began at generation gen found.
func (c *cache) fill(s sandbox.Session, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen && c.writing == 0 {
		c.put(s)
	}
}

// forgetChat drops the chat's session before a write of it.
func (c *cache) forgetChat(chat uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.writing++
	if s, ok := c.byChat[chat]; ok {
		delete(c.chatOf, s.ID)
		delete(c.byChat, chat)
	}
}

// forgetSession drops the session before a write of it.
func (c *cache) forgetSession(id uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.writing++
	if chat, ok := c.chatOf[id]; ok {
		delete(c.chatOf, id)
		delete(c.byChat, chat)
	}
}

// stored records s after its write committed.
func (c *cache) stored(s sandbox.Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.writing--
	c.put(s)
}

// settled ends a write that leaves nothing to record (a removal, a failure).
func (c *cache) settled() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.writing--
}

func (c *cache) put(s sandbox.Session) {
	if old, ok := c.byChat[s.ChatID]; ok {
		delete(c.chatOf, old.ID)
	}
	c.byChat[s.ChatID] = s
	c.chatOf[s.ID] = s.ChatID
}
