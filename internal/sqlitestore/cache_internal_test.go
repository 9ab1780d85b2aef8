package sqlitestore

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// A read that began before a write must not put back what the write replaced or removed,
// whatever the order in which they end.
func TestSlowReadNeverOverwritesAWrite(t *testing.T) {
	chat := uuid.New()
	old := sandbox.Session{ID: uuid.New(), ChatID: chat, ExpiresAt: time.Unix(1, 0)}
	newer := sandbox.Session{ID: uuid.New(), ChatID: chat, ExpiresAt: time.Unix(2, 0)}

	c := newCache()
	_, _, gen := c.get(chat) // a read begins and finds old in the file...
	c.forgetChat(chat)       // ...a save of newer begins...
	c.stored(newer)          // ...and commits...
	c.fill(old, gen)         // ...then the slow read ends
	if got, ok, _ := c.get(chat); !ok || got.ID != newer.ID {
		t.Fatalf("cache holds %v (%v), want the saved session", got.ID, ok)
	}

	c = newCache()
	c.forgetChat(chat)      // a save of old...
	c.stored(old)           // ...commits
	c.forgetSession(old.ID) // a removal begins: reads go to the file
	_, ok, gen := c.get(chat)
	if ok {
		t.Fatal("a session being removed is still served from the cache")
	}
	c.settled()      // the removal commits
	c.fill(old, gen) // a read that saw the row before the commit ends
	if got, ok, _ := c.get(chat); ok {
		t.Fatalf("cache holds removed session %v", got.ID)
	}

	// Without writes in between, a read fills the cache.
	_, _, gen = c.get(chat)
	c.fill(newer, gen)
	if got, ok, _ := c.get(chat); !ok || got.ID != newer.ID {
		t.Fatal("a read with no write in between did not fill the cache")
	}
}

// A read that begins while a write is under way (after its forget, before it ends) may see
// the row as it was before the write; if it ends before the write does, it must not put
// that row back: Get would serve it until the process restarts.
func TestReadDuringAWriteNeverFillsWhatTheWriteChanged(t *testing.T) {
	chat := uuid.New()
	old := sandbox.Session{ID: uuid.New(), ChatID: chat, ExpiresAt: time.Unix(1, 0)}

	c := newCache()
	c.forgetChat(chat)       // a save of old...
	c.stored(old)            // ...commits
	c.forgetSession(old.ID)  // a removal (or a SetExpiry) begins
	_, _, gen := c.get(chat) // a read begins and finds the row before the commit...
	c.fill(old, gen)         // ...and ends first
	c.settled()              // the removal commits
	if got, ok, _ := c.get(chat); ok {
		t.Fatalf("cache holds session %v, which the write removed", got.ID)
	}
}
