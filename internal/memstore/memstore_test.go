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

func TestBindingConformance(t *testing.T) {
	lifecycletest.TestBinding(t, func(*testing.T) func(*testing.T) lifecycle.Binding {
		st := memstore.New() // one process: every open is this store
		return func(*testing.T) lifecycle.Binding { return st }
	})
}
