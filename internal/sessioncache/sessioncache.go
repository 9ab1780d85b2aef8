package sessioncache

import (
	"sync"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Cache is a tagged, write-aware copy of sessions by chat. It is safe for concurrent use.
type Cache struct {
	mu      sync.Mutex
	max     int
	gen     uint64
	writing int // writes forgotten but not yet stored or settled
	byChat  map[uuid.UUID]entry
	chatOf  map[uuid.UUID]uuid.UUID // session id -> chat id, for the sessions in byChat
}

type entry struct {
	s   sandbox.Session
	tag uint64
}

// New returns an empty Cache that holds at most max sessions (max <= 0: no bound). When
// a new session would pass the bound, the cache empties: forgetting is always safe.
func New(max int) *Cache {
	return &Cache{max: max, byChat: map[uuid.UUID]entry{}, chatOf: map[uuid.UUID]uuid.UUID{}}
}

// Get returns the chat's session if the cache holds it under tag, and the generation a
// read must carry to Fill the cache.
func (c *Cache) Get(chat uuid.UUID, tag uint64) (sandbox.Session, bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byChat[chat]
	if !ok || e.tag != tag {
		return sandbox.Session{}, false, c.gen
	}
	return e.s, true, c.gen
}

// Fill records, under tag, what a read that began at generation gen found.
func (c *Cache) Fill(s sandbox.Session, tag, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen && c.writing == 0 {
		c.put(s, tag)
	}
}

// Drop forgets the chat's session outside any write (a read found no row).
func (c *Cache) Drop(chat uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.remove(chat)
}

// ForgetChat drops the chat's session before a write of it.
func (c *Cache) ForgetChat(chat uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.writing++
	c.remove(chat)
}

// ForgetSession drops the session before a write of it.
func (c *Cache) ForgetSession(id uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.writing++
	if chat, ok := c.chatOf[id]; ok {
		c.remove(chat)
	}
}

// Stored records s under tag after its write committed.
func (c *Cache) Stored(s sandbox.Session, tag uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.writing--
	c.put(s, tag)
}

// Settled ends a write that leaves nothing to record (a removal, a failure).
func (c *Cache) Settled() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.writing--
}

// Len returns how many sessions the cache holds.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byChat)
}

func (c *Cache) remove(chat uuid.UUID) {
	if e, ok := c.byChat[chat]; ok {
		delete(c.chatOf, e.s.ID)
		delete(c.byChat, chat)
	}
}

func (c *Cache) put(s sandbox.Session, tag uint64) {
	c.remove(s.ChatID)
	if c.max > 0 && len(c.byChat) >= c.max {
		clear(c.byChat)
		clear(c.chatOf)
	}
	c.byChat[s.ChatID] = entry{s: s, tag: tag}
	c.chatOf[s.ID] = s.ChatID
}
