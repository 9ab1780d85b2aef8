package lifecycletest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
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
				time.Sleep(time.Millisecond) // hold the lock a while: a second holder would overlap
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
			wg.Go(func() { queueFor(wctx, l, busy) })
		}
		waitQueued(t, 64)
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

// queueFor locks chat and unlocks it at once. The waiters of WaitersOfABusyChatDoNotBlockOthers
// run it, a frame of its own, so that waitQueued can find them.
func queueFor(ctx context.Context, l lifecycle.Locker, chat uuid.UUID) {
	if unlock, err := l.Lock(ctx, chat); err == nil {
		unlock()
	}
}

// waitQueued waits until n goroutines are parked in queueFor: each waits inside the
// locker's Lock, the only call of queueFor that can wait.
func waitQueued(t *testing.T, n int) {
	t.Helper()
	waitfor.True(t, 10*time.Second, fmt.Sprintf("%d waiters in Lock", n), func() bool {
		buf := make([]byte, 1<<20)
		for {
			if k := runtime.Stack(buf, true); k < len(buf) {
				buf = buf[:k]
				break
			}
			buf = make([]byte, 2*len(buf))
		}
		queued := 0
		for _, g := range strings.Split(string(buf), "\n\n") {
			state, _, _ := strings.Cut(g, "\n") // "goroutine 7 [select]:"
			parked := !strings.Contains(state, "[running]") && !strings.Contains(state, "[runnable]")
			if parked && strings.Contains(g, "lifecycletest.queueFor(") {
				queued++
			}
		}
		return queued >= n
	})
}
