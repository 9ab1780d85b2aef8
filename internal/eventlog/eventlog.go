// Package eventlog keeps, in memory, the recent events of the use cases
// (lifecycle.EventSink) for the operator's page: a bounded ring per chat, a count of each
// kind of event per minute over the last hour by tenant, and live subscribers (the page's
// server-sent events). Nothing survives a restart, and each replica knows its own events.
package eventlog

import (
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
)

// Defaults of Config.
const (
	DefaultPerChat  = 50
	DefaultMaxChats = 10000
)

// Minutes is how many minutes of counts LastHour returns.
const Minutes = 60

// subscriberBuffer is how many events a slow subscriber may lag behind before it misses
// some (it is told so by a gap, and reloads).
const subscriberBuffer = 64

// Config sizes a Log.
type Config struct {
	PerChat  int              // events kept per chat (default DefaultPerChat)
	MaxChats int              // chats kept; past it the chats quiet longest are forgotten (default DefaultMaxChats)
	Now      func() time.Time // default time.Now
}

// Log is safe for concurrent use.
type Log struct {
	perChat, maxChats int
	now               func() time.Time

	mu      sync.Mutex
	chats   map[uuid.UUID]*chat
	minutes map[string]*[Minutes]slot // by tenant
	subs    map[*sub]struct{}
}

type chat struct {
	events []lifecycle.Event // oldest first, at most perChat
	last   time.Time
}

type slot struct {
	minute int64 // unix minute the counts are of
	counts map[lifecycle.EventType]int
}

type sub struct {
	tenant string
	ch     chan lifecycle.Event
}

var _ lifecycle.EventSink = (*Log)(nil)

// New returns an empty Log.
func New(cfg Config) *Log {
	if cfg.PerChat <= 0 {
		cfg.PerChat = DefaultPerChat
	}
	if cfg.MaxChats <= 0 {
		cfg.MaxChats = DefaultMaxChats
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Log{
		perChat: cfg.PerChat, maxChats: cfg.MaxChats, now: cfg.Now,
		chats: map[uuid.UUID]*chat{}, minutes: map[string]*[Minutes]slot{}, subs: map[*sub]struct{}{},
	}
}

// Record keeps e and passes it to the subscribers of its tenant; it never blocks.
func (l *Log) Record(e lifecycle.Event) {
	if e.At.IsZero() {
		e.At = l.now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.chats[e.ChatID]
	if c == nil {
		c = &chat{last: e.At}
		l.chats[e.ChatID] = c
		l.evict()
	}
	c.events = append(c.events, e)
	if over := len(c.events) - l.perChat; over > 0 {
		c.events = slices.Delete(c.events, 0, over)
	}
	c.last = e.At

	m := l.minutes[e.Tenant]
	if m == nil {
		m = &[Minutes]slot{}
		l.minutes[e.Tenant] = m
	}
	minute := e.At.Unix() / 60
	s := &m[minute%Minutes]
	if s.minute != minute || s.counts == nil {
		*s = slot{minute: minute, counts: map[lifecycle.EventType]int{}}
	}
	s.counts[e.Type]++

	for s := range l.subs {
		if s.tenant != e.Tenant {
			continue
		}
		select {
		case s.ch <- e:
		default: // a subscriber that does not keep up misses events, never slows a use case
		}
	}
}

// evict forgets the tenth of the chats quiet longest once there are more than maxChats.
func (l *Log) evict() {
	if len(l.chats) <= l.maxChats {
		return
	}
	type aged struct {
		id   uuid.UUID
		last time.Time
	}
	all := make([]aged, 0, len(l.chats))
	for id, c := range l.chats {
		all = append(all, aged{id, c.last})
	}
	slices.SortFunc(all, func(a, b aged) int { return a.last.Compare(b.last) })
	for _, a := range all[:max(1, len(all)/10)] {
		delete(l.chats, a.id)
	}
}

// Chat returns the chat's kept events of tenant, oldest first.
func (l *Log) Chat(tenant string, chatID uuid.UUID) []lifecycle.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.chats[chatID]
	if c == nil {
		return nil
	}
	var out []lifecycle.Event
	for _, e := range c.events {
		if e.Tenant == tenant {
			out = append(out, e)
		}
	}
	return out
}

// Minute is the count of each kind of event of one minute.
type Minute struct {
	Start  time.Time
	Counts map[lifecycle.EventType]int
}

// LastHour returns tenant's counts of the last Minutes minutes, oldest first, the
// current minute last.
func (l *Log) LastHour(tenant string) []Minute {
	now := l.now().Unix() / 60
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.minutes[tenant]
	out := make([]Minute, Minutes)
	for i := range out {
		minute := now - int64(Minutes-1-i)
		out[i] = Minute{Start: time.Unix(minute*60, 0).UTC(), Counts: map[lifecycle.EventType]int{}}
		if m == nil {
			continue
		}
		if s := m[minute%Minutes]; s.minute == minute {
			for k, v := range s.counts {
				out[i].Counts[k] = v
			}
		}
	}
	return out
}

// Subscribe returns a channel of tenant's events from now on and the function that ends
// the subscription (and closes the channel). A subscriber that falls more than a few
// dozen events behind misses the rest until it catches up.
func (l *Log) Subscribe(tenant string) (<-chan lifecycle.Event, func()) {
	s := &sub{tenant: tenant, ch: make(chan lifecycle.Event, subscriberBuffer)}
	l.mu.Lock()
	l.subs[s] = struct{}{}
	l.mu.Unlock()
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.subs, s)
			l.mu.Unlock()
			close(s.ch)
		})
	}
}
