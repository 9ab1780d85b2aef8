package main

import (
	"io"
	"sync"
)

// maxPendingLog is how many bytes of log records may wait for the writer; past it, a
// logging call waits (as it would on a slow stdout) instead of growing the buffer.
const maxPendingLog = 1 << 20

// batchWriter hands log records to one goroutine that writes them to out, so that a burst
// of records (one per request under load) costs one write to stdout instead of one each.
// Records stay whole and in order. A lone record is written at once: nothing waits for a
// timer. Close writes what is pending and stops the goroutine.
type batchWriter struct {
	out  io.Writer
	wake chan struct{} // buffered: a pending wake-up is enough
	done chan struct{}

	mu      sync.Mutex
	drained *sync.Cond // signalled whenever the goroutine has taken the pending bytes
	pending []byte
	closed  bool
}

func newBatchWriter(out io.Writer) *batchWriter {
	w := &batchWriter{out: out, wake: make(chan struct{}, 1), done: make(chan struct{})}
	w.drained = sync.NewCond(&w.mu)
	go w.run()
	return w
}

// Write queues p, a whole record as slog writes it; it never fails. After Close, p is
// written directly.
func (w *batchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	for len(w.pending) >= maxPendingLog && !w.closed {
		w.drained.Wait()
	}
	if w.closed {
		w.mu.Unlock()
		<-w.done // after the last batch, so that the order holds
		return w.out.Write(p)
	}
	w.pending = append(w.pending, p...)
	select { // under mu: Close closes wake under mu too
	case w.wake <- struct{}{}:
	default:
	}
	w.mu.Unlock()
	return len(p), nil
}

func (w *batchWriter) run() {
	defer close(w.done)
	var batch []byte
	for {
		_, open := <-w.wake
		w.mu.Lock()
		batch, w.pending = w.pending, batch[:0]
		w.drained.Broadcast()
		w.mu.Unlock()
		if len(batch) > 0 {
			_, _ = w.out.Write(batch) // a log that cannot be written is not an error of the caller's
		}
		if !open {
			return
		}
	}
}

// Close writes the pending records and stops the writer; later records are written
// directly. It returns nil.
func (w *batchWriter) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.drained.Broadcast()
	close(w.wake)
	w.mu.Unlock()
	<-w.done
	return nil
}
