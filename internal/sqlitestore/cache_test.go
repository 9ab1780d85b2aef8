package sqlitestore_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
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
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, chat := range chats {
		wg.Add(2)
		go func() { // writer: save, extend, remove, save, ...
			defer wg.Done()
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
			defer wg.Done()
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
	time.Sleep(10 * time.Millisecond)
	go func() {
		// Stop the readers once the writers are done: wait for writers by polling Count.
		for {
			if n, _ := st.Count(ctx); n == len(chats) {
				close(stop)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	wg.Wait()

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
