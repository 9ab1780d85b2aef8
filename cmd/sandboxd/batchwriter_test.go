package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

// lockedBuffer is a bytes.Buffer safe for the writer goroutine and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func TestBatchWriterKeepsEveryRecordWholeAndInOrder(t *testing.T) {
	var out lockedBuffer
	w := newBatchWriter(&out)
	log := slog.New(slog.NewJSONHandler(w, nil))
	const n = 5000
	for i := range n {
		log.Info("record", slog.Int("i", i))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	log.Info("after close", slog.Int("i", n))
	sc := bufio.NewScanner(bytes.NewReader(out.b.Bytes()))
	i := 0
	for ; sc.Scan(); i++ {
		if want := fmt.Sprintf(`"i":%d}`, i); !bytes.HasSuffix(sc.Bytes(), []byte(want)) {
			t.Fatalf("line %d = %s, want it to end with %s", i, sc.Bytes(), want)
		}
	}
	if i != n+1 {
		t.Fatalf("%d lines, want %d", i, n+1)
	}
}

func TestBatchWriterWritesALoneRecordWithoutWaitingForMore(t *testing.T) {
	var out lockedBuffer
	w := newBatchWriter(&out)
	t.Cleanup(func() { _ = w.Close() })
	_, _ = w.Write([]byte("one\n"))
	waitfor.True(t, 5*time.Second, "the lone record written", func() bool {
		out.mu.Lock()
		defer out.mu.Unlock()
		return out.b.String() == "one\n"
	})
}

// BenchmarkRequestLog is the request log's record (httpapi's logRequests) written by
// concurrent requests to a pipe, as sandboxd's stdout is under a supervisor: straight to
// the pipe (one write each) against through batchWriter.
func BenchmarkRequestLog(b *testing.B) {
	for _, tc := range []struct {
		name string
		wrap func(io.Writer) (io.Writer, func())
	}{
		{"direct", func(w io.Writer) (io.Writer, func()) { return w, func() {} }},
		{"batchWriter", func(w io.Writer) (io.Writer, func()) {
			lw := newBatchWriter(w)
			return lw, func() { _ = lw.Close() }
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r, pw, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			drained := make(chan struct{})
			go func() { _, _ = io.Copy(io.Discard, r); close(drained) }()
			out, closeOut := tc.wrap(pw)
			log := slog.New(slog.NewJSONHandler(out, nil))
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					log.LogAttrs(ctx, slog.LevelInfo, "http_request",
						slog.String("method", "PUT"),
						slog.String("path", "/v1/chats/0b6f1f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a/sandbox"),
						slog.Int("status", 200),
						slog.Duration("duration", 123456*time.Nanosecond))
				}
			})
			b.StopTimer()
			closeOut()
			_ = pw.Close()
			<-drained
			_ = r.Close()
		})
	}
}
