package sqlitestore_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sandboxd/sandboxd/internal/sqlitestore"
)

// Two processes opening one new file at once both come up: the second waits for the
// first's migration (immediate transactions, busy timeout) and finds the schema in place.
func TestOpeningOneFileTwiceAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sandboxd.db")
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := sqlitestore.Open(context.Background(), path)
			if err == nil {
				_, err = st.Count(context.Background())
				_ = st.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Open: %v", err)
		}
	}
}
