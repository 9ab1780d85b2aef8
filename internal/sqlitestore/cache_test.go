package sqlitestore_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/sqlitestore"
)

// Get answers from the Store's cache; whatever writes and reads race, it must end up
// saying what the file says, as a Store opened afresh on the file (no cache) reads it.
func TestCachedGetAgreesWithTheFileAfterRacingWrites(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	st, err := sqlitestore.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	chats := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	var writers, readers sync.WaitGroup
	stop := make(chan struct{})
	for _, chat := range chats {
		writers.Add(1)
		readers.Add(1)
		go func() { // writer: save, extend, remove, save, ...
			defer writers.Done()
			for i := 0; i < 60; i++ {
				s := lifecycletest.NewSession(chat, lifecycletest.Base.Add(time.Duration(i)*time.Minute))
				if err := st.Save(ctx, s); err != nil {
					t.Errorf("Save: %v", err)
					return
				}
				if err := st.SetExpiry(ctx, s.ID, s.ExpiresAt.Add(time.Hour)); err != nil {
					t.Errorf("SetExpiry: %v", err)
					return
				}
				if i == 59 {
					return // the last session stays
				}
				if err := st.Remove(ctx, s.ID); err != nil {
					t.Errorf("Remove: %v", err)
					return
				}
			}
		}()
		go func() { // reader
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := st.Get(ctx, chat); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
					t.Errorf("Get: %v", err)
					return
				}
			}
		}()
	}
	writers.Wait() // the readers race the writers to their last write
	close(stop)
	readers.Wait()

	fresh, err := sqlitestore.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	for _, chat := range chats {
		cached, err1 := st.Get(ctx, chat)
		truth, err2 := fresh.Get(ctx, chat)
		if err1 != nil || err2 != nil || !lifecycletest.Equal(cached, truth) {
			t.Fatalf("chat %s: cached %+v (%v), file %+v (%v)", chat, cached, err1, truth, err2)
		}
		if !truth.ExpiresAt.Equal(lifecycletest.Base.Add(59*time.Minute + time.Hour)) {
			t.Fatalf("chat %s: the last write did not land: %v", chat, truth.ExpiresAt)
		}
	}
}

// Once SetExpiry or Remove has returned, Get says what it wrote, even while other readers
// of the chat (an API GET, an exec) race the write: one of them may read the row before the
// commit and end first.
func TestCachedGetSeesEachWriteOnceItReturned(t *testing.T) {
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	chat := uuid.New()
	var stop atomic.Bool
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop.Store(true)
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				_, _ = st.Get(ctx, chat)
			}
		})
	}
	for i := range 300 {
		s := lifecycletest.NewSession(chat, lifecycletest.Base.Add(time.Duration(i)*time.Minute))
		if err := st.Save(ctx, s); err != nil {
			t.Fatal(err)
		}
		later := s.ExpiresAt.Add(time.Hour)
		if err := st.SetExpiry(ctx, s.ID, later); err != nil {
			t.Fatal(err)
		}
		if got, err := st.Get(ctx, chat); err != nil || !got.ExpiresAt.Equal(later) {
			t.Fatalf("round %d: Get after SetExpiry: expiry %v (%v), want %v", i, got.ExpiresAt, err, later)
		}
		if err := st.Remove(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
		if got, err := st.Get(ctx, chat); !errors.Is(err, sandbox.ErrNotFound) {
			t.Fatalf("round %d: Get after Remove: session %v (%v), want not found", i, got.ID, err)
		}
	}
}

// The cache holds a saved session as the file does (microseconds, UTC), so Get answers the
// same before and after a restart, however precise the saver's clock.
func TestCachedGetAfterSaveIsWhatTheFileHolds(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	st, err := sqlitestore.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 4, 2, 12, 0, 0, 123456789, time.FixedZone("CEST", 2*60*60))
	s := lifecycletest.NewSession(uuid.New(), now.Add(time.Hour))
	s.CreatedAt = now
	if err := st.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	fresh, err := sqlitestore.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	cached, err1 := st.Get(ctx, s.ChatID)
	truth, err2 := fresh.Get(ctx, s.ChatID)
	if err1 != nil || err2 != nil || cached != truth {
		t.Fatalf("cached %v / %v (%v), file %v / %v (%v)", cached.CreatedAt, cached.ExpiresAt, err1, truth.CreatedAt, truth.ExpiresAt, err2)
	}
}
