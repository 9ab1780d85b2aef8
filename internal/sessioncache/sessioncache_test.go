package sessioncache

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

	c := New(0)
	_, _, gen := c.Get(chat, 0) // a read begins and finds old in the file...
	c.ForgetChat(chat)          // ...a save of newer begins...
	c.Stored(newer, 0)          // ...and commits...
	c.Fill(old, 0, gen)         // ...then the slow read ends
	if got, ok, _ := c.Get(chat, 0); !ok || got.ID != newer.ID {
		t.Fatalf("cache holds %v (%v), want the saved session", got.ID, ok)
	}

	c = New(0)
	c.ForgetChat(chat)      // a save of old...
	c.Stored(old, 0)        // ...commits
	c.ForgetSession(old.ID) // a removal begins: reads go to the file
	_, ok, gen := c.Get(chat, 0)
	if ok {
		t.Fatal("a session being removed is still served from the cache")
	}
	c.Settled()         // the removal commits
	c.Fill(old, 0, gen) // a read that saw the row before the commit ends
	if got, ok, _ := c.Get(chat, 0); ok {
		t.Fatalf("cache holds removed session %v", got.ID)
	}

	// Without writes in between, a read fills the cache.
	_, _, gen = c.Get(chat, 0)
	c.Fill(newer, 0, gen)
	if got, ok, _ := c.Get(chat, 0); !ok || got.ID != newer.ID {
		t.Fatal("a read with no write in between did not fill the cache")
	}
}

// A read that begins while a write is under way (after its forget, before it ends) may see
// the row as it was before the write; if it ends before the write does, it must not put
// that row back: Get would serve it until the process restarts.
func TestReadDuringAWriteNeverFillsWhatTheWriteChanged(t *testing.T) {
	chat := uuid.New()
	old := sandbox.Session{ID: uuid.New(), ChatID: chat, ExpiresAt: time.Unix(1, 0)}

	c := New(0)
	c.ForgetChat(chat)          // a save of old...
	c.Stored(old, 0)            // ...commits
	c.ForgetSession(old.ID)     // a removal (or a SetExpiry) begins
	_, _, gen := c.Get(chat, 0) // a read begins and finds the row before the commit...
	c.Fill(old, 0, gen)         // ...and ends first
	c.Settled()                 // the removal commits
	if got, ok, _ := c.Get(chat, 0); ok {
		t.Fatalf("cache holds session %v, which the write removed", got.ID)
	}
}

// An entry answers only the tag it was read or written under: a session read under one
// lease must not be served under the next.
func TestGetHitsOnlyUnderTheEntrysTag(t *testing.T) {
	chat := uuid.New()
	s := sandbox.Session{ID: uuid.New(), ChatID: chat}
	c := New(0)
	_, _, gen := c.Get(chat, 7)
	c.Fill(s, 7, gen)
	if _, ok, _ := c.Get(chat, 7); !ok {
		t.Fatal("no hit under the tag the entry was filled under")
	}
	if _, ok, _ := c.Get(chat, 8); ok {
		t.Fatal("hit under another tag")
	}
	c.ForgetChat(chat)
	c.Stored(s, 9)
	if _, ok, _ := c.Get(chat, 7); ok {
		t.Fatal("a write under a new tag still answers the old one")
	}
	if _, ok, _ := c.Get(chat, 9); !ok {
		t.Fatal("no hit under the tag the write stored")
	}
	c.Drop(chat)
	if _, ok, _ := c.Get(chat, 9); ok || c.Len() != 0 {
		t.Fatal("Drop left the session")
	}
}

// A bounded cache never holds more than its bound.
func TestBoundedCacheStaysWithinItsBound(t *testing.T) {
	c := New(3)
	for range 10 {
		s := sandbox.Session{ID: uuid.New(), ChatID: uuid.New()}
		_, _, gen := c.Get(s.ChatID, 1)
		c.Fill(s, 1, gen)
		if n := c.Len(); n > 3 || n == 0 {
			t.Fatalf("cache holds %d sessions, bound 3", n)
		}
	}
}
