package keylock_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLockerConformance(t *testing.T) {
	shared := keylock.New() // one process: every "replica" shares the locker
	lifecycletest.TestLocker(t, func(*testing.T) lifecycle.Locker { return shared })
	if n := shared.Len(); n != 0 {
		t.Fatalf("%d lock entries left after every holder released", n)
	}
}
