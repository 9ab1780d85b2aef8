package waitfor_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

func TestTrueReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int32
	waitfor.True(t, 5*time.Second, "the third call", func() bool { return calls.Add(1) >= 3 })
	if n := calls.Load(); n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
}

// fakeT records a failure instead of ending the test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = format
	panic(f)
}

func TestTrueFailsWhenTheTimeRunsOut(t *testing.T) {
	f := &fakeT{TB: t}
	func() {
		defer func() {
			if r := recover(); r != f {
				t.Fatalf("True did not fail t (recovered %v)", r)
			}
		}()
		waitfor.True(f, 30*time.Millisecond, "never", func() bool { return false })
	}()
	if f.failed == "" {
		t.Fatal("no failure recorded")
	}
}
