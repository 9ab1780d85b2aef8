// Package keylock provides a process-local lifecycle.Locker: one mutex per chat, made on
// first use and dropped when its last holder or waiter leaves.
package keylock

import (
	"context"
	"sync"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
)

var _ lifecycle.Locker = (*Locker)(nil)

// Locker hands out per-chat locks. The zero value is ready to use.
type Locker struct {
	mu    sync.Mutex
	locks map[uuid.UUID]*entry
}

type entry struct {
	held chan struct{} // a token in the channel means "held"
	refs int           // holders and waiters; the entry goes when it drops to 0
}

// New returns a Locker.
func New() *Locker { return &Locker{} }

// Lock blocks until the chat's lock is held or ctx ends (then it returns ctx's error).
func (l *Locker) Lock(ctx context.Context, chatID uuid.UUID) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err // never a coin toss between a free lock and an ended context
	}
	l.mu.Lock()
	if l.locks == nil {
		l.locks = make(map[uuid.UUID]*entry)
	}
	e := l.locks[chatID]
	if e == nil {
		e = &entry{held: make(chan struct{}, 1)}
		l.locks[chatID] = e
	}
	e.refs++
	l.mu.Unlock()

	select {
	case e.held <- struct{}{}:
	case <-ctx.Done():
		l.release(chatID, e)
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-e.held
			l.release(chatID, e)
		})
	}, nil
}

func (l *Locker) release(chatID uuid.UUID, e *entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.refs--
	if e.refs == 0 {
		delete(l.locks, chatID)
	}
}

// Len reports how many chats have a holder or waiter; for tests and metrics.
func (l *Locker) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.locks)
}
