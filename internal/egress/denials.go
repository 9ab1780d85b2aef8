package egress

import (
	"sync"
	"time"
)

// Denial is one refused connection of a sandbox, as GET /v1/chats/{chat}/sandbox/egress
// lists it.
type Denial struct {
	Time        time.Time
	SessionID   string
	Destination string // host:port as the sandbox asked for it
	Reason      Reason
	Detail      string
}

// Bounds of the denials kept in memory: per chat, and chats.
const (
	DenialsPerChat = 100
	maxDenialChats = 10000
)

// denials keeps the recent denials of each chat: a ring of DenialsPerChat per chat, and
// at most maxDenialChats chats (the one written to longest ago goes first).
type denials struct {
	mu    sync.Mutex
	chats map[string]*ring
}

type ring struct {
	items []Denial // oldest first once full: items[next:] then items[:next]
	next  int
	last  time.Time
}

func (d *denials) add(chatID string, den Denial) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.chats == nil {
		d.chats = make(map[string]*ring)
	}
	r, ok := d.chats[chatID]
	if !ok {
		if len(d.chats) >= maxDenialChats {
			oldest := ""
			for id, c := range d.chats {
				if oldest == "" || c.last.Before(d.chats[oldest].last) {
					oldest = id
				}
			}
			delete(d.chats, oldest)
		}
		r = &ring{}
		d.chats[chatID] = r
	}
	r.last = den.Time
	if len(r.items) < DenialsPerChat {
		r.items = append(r.items, den)
		return
	}
	r.items[r.next] = den
	r.next = (r.next + 1) % DenialsPerChat
}

// list returns the chat's denials of sessionID (all of them when empty), newest first.
func (d *denials) list(chatID, sessionID string) []Denial {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.chats[chatID]
	if !ok {
		return nil
	}
	out := make([]Denial, 0, len(r.items))
	n := len(r.items)
	for i := range n {
		den := r.items[(r.next+n-1-i)%n]
		if sessionID == "" || den.SessionID == sessionID {
			out = append(out, den)
		}
	}
	return out
}
