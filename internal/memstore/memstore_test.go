package memstore_test

import (
	"testing"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/memstore"
)

func TestStoreConformance(t *testing.T) {
	lifecycletest.TestStore(t, func(*testing.T) lifecycle.Store { return memstore.New() })
}
