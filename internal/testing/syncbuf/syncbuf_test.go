package syncbuf_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
)

// Writers and a reader at once (run with -race): every write is kept whole.
func TestConcurrentWritesAreKeptWhole(t *testing.T) {
	var b syncbuf.Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				_, _ = b.Write([]byte("ab\n"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := b.String(); len(got) != 8*100*3 || strings.Count(got, "ab\n") != 800 {
		t.Fatalf("buffer holds %d bytes, %d whole writes; want 2400, 800", len(got), strings.Count(got, "ab\n"))
	}
}
