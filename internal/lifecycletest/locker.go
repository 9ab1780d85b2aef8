package lifecycletest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
)

// TestLocker runs the locker conformance suite. newLocker may be called several times in
// one test; lockers it returns must exclude each other as replicas of one service would.
func TestLocker(t *testing.T, newLocker func(t *testing.T) lifecycle.Locker) {
	ctx := context.Background()

	t.Run("HoldersOfOneChatNeverOverlap", func(t *testing.T) {
		lockers := []lifecycle.Locker{newLocker(t), newLocker(t)}
		chat := uuid.New()
		var inside, maxInside, total atomic.Int32
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				unlock, err := lockers[i%2].Lock(ctx, chat)
				if err != nil {
					t.Errorf("Lock: %v", err)
					return
				}
				n := inside.Add(1)
				for {
					m := maxInside.Load()
					if n <= m || maxInside.CompareAndSwap(m, n) {
						break
					}
				}
				time.Sleep(time.Millisecond)
				total.Add(1)
				inside.Add(-1)
				unlock()
			}()
		}
		wg.Wait()
		if maxInside.Load() != 1 || total.Load() != 20 {
			t.Fatalf("max holders at once = %d (want 1), holders = %d (want 20)", maxInside.Load(), total.Load())
		}
	})

	t.Run("DifferentChatsDoNotWait", func(t *testing.T) {
		l := newLocker(t)
		unlock, err := l.Lock(ctx, uuid.New())
		if err != nil {
			t.Fatalf("Lock: %v", err)
		}
		defer unlock()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		unlock2, err := l.Lock(cctx, uuid.New())
		if err != nil {
			t.Fatalf("Lock of another chat while one is held: %v", err)
		}
		unlock2()
	})

	// A busy chat's waiters must not take what other chats need to lock (a connection of
	// a bounded pool, say): a lock of another chat is granted at once.
	t.Run("WaitersOfABusyChatDoNotBlockOthers", func(t *testing.T) {
		l := newLocker(t)
		busy := uuid.New()
		unlock, err := l.Lock(ctx, busy)
		if err != nil {
			t.Fatalf("Lock: %v", err)
		}
		wctx, stopWaiters := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() {
				if unlock, err := l.Lock(wctx, busy); err == nil {
					unlock()
				}
			})
		}
		time.Sleep(200 * time.Millisecond) // let the waiters queue
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		unlock2, err := l.Lock(cctx, uuid.New())
		if err != nil {
			t.Errorf("Lock of another chat while 64 callers wait for a busy one: %v", err)
		} else {
			unlock2()
		}
		stopWaiters()
		unlock()
		wg.Wait()
	})

	t.Run("WaiterGivesUpWhenContextEnds", func(t *testing.T) {
		l := newLocker(t)
		chat := uuid.New()
		unlock, err := l.Lock(ctx, chat)
		if err != nil {
			t.Fatalf("Lock: %v", err)
		}
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if _, err := l.Lock(cctx, chat); err == nil {
			t.Fatal("second Lock of a held chat succeeded")
		} else if !errors.Is(err, context.DeadlineExceeded) && cctx.Err() == nil {
			t.Fatalf("second Lock returned %v before its context ended", err)
		}
		unlock()
		// Released: the next caller proceeds.
		cctx2, cancel2 := context.WithTimeout(ctx, 5*time.Second)
		defer cancel2()
		unlock, err = l.Lock(cctx2, chat)
		if err != nil {
			t.Fatalf("Lock after release: %v", err)
		}
		unlock()
	})

	t.Run("UnlockTwiceIsHarmless", func(t *testing.T) {
		l := newLocker(t)
		chat := uuid.New()
		unlock, err := l.Lock(ctx, chat)
		if err != nil {
			t.Fatalf("Lock: %v", err)
		}
		unlock()
		unlock()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		unlock, err = l.Lock(cctx, chat)
		if err != nil {
			t.Fatalf("Lock after double unlock: %v", err)
		}
		unlock()
	})
}
