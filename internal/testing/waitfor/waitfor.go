// Package waitfor lets a test wait for something that comes true in another goroutine or
// process: a container gone, a lease ended, a log record written.
package waitfor

import (
	"testing"
	"time"
)

// interval is how often True asks again.
const interval = 10 * time.Millisecond

// True asks cond every 10 ms until it holds, and fails t with what when within passes
// first.
func True(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(interval) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
	}
}
