package lifecycletest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// TestBinding is the conformance suite of a lifecycle.Binding. newRegistry makes a fresh,
// unbound registry and returns how to open it: each call of open gives a handle on that
// same registry, as another process (a restart, a replica) would open it.
func TestBinding(t *testing.T, newRegistry func(t *testing.T) (open func(t *testing.T) lifecycle.Binding)) {
	ctx := context.Background()
	newBinding := func(t *testing.T) lifecycle.Binding { return newRegistry(t)(t) }
	t.Run("FirstBindTiesLaterOnesCheck", func(t *testing.T) {
		b := newBinding(t)
		if prev, err := b.Bind(ctx, "engine-a", false); err != nil || prev != "" {
			t.Fatalf("first Bind = %q, %v; want \"\", nil", prev, err)
		}
		if prev, err := b.Bind(ctx, "engine-a", false); err != nil || prev != "engine-a" {
			t.Fatalf("Bind of the same runtime = %q, %v; want engine-a, nil", prev, err)
		}
		prev, err := b.Bind(ctx, "engine-b", false)
		if !errors.Is(err, sandbox.ErrConflict) || prev != "engine-a" {
			t.Fatalf("Bind of another runtime = %q, %v; want engine-a, ErrConflict", prev, err)
		}
		if prev, err := b.Bind(ctx, "engine-a", false); err != nil || prev != "engine-a" {
			t.Fatalf("a refused Bind changed the binding: %q, %v", prev, err)
		}
	})
	t.Run("RebindTakesOver", func(t *testing.T) {
		b := newBinding(t)
		if _, err := b.Bind(ctx, "engine-a", false); err != nil {
			t.Fatal(err)
		}
		if prev, err := b.Bind(ctx, "engine-b", true); err != nil || prev != "engine-a" {
			t.Fatalf("rebind = %q, %v; want engine-a, nil", prev, err)
		}
		if _, err := b.Bind(ctx, "engine-a", false); !errors.Is(err, sandbox.ErrConflict) {
			t.Fatalf("the old runtime after a rebind: err = %v, want ErrConflict", err)
		}
	})
	// Every registry has an id of its own, made with it and kept across restarts, and
	// remembers the registries whose sandboxes it adopted.
	t.Run("RegistryIDAndAdoptions", func(t *testing.T) {
		open := newRegistry(t)
		b := open(t)
		id, adopted, err := b.Registry(ctx)
		if err != nil || id == "" || len(adopted) != 0 {
			t.Fatalf("Registry of a new registry = %q, %q, %v; want an id, none adopted", id, adopted, err)
		}
		other, _, err := newBinding(t).Registry(ctx)
		if err != nil || other == id {
			t.Fatalf("another new registry's id = %q, %v; want one unlike %q", other, err, id)
		}
		for _, a := range []string{other, "", other} {
			if err := b.Adopt(ctx, a); err != nil {
				t.Fatalf("Adopt(%q): %v", a, err)
			}
		}
		again, adopted, err := open(t).Registry(ctx)
		if err != nil || again != id {
			t.Fatalf("after a restart: %q, %v; want %q", again, err, id)
		}
		slices.Sort(adopted)
		if !slices.Equal(adopted, []string{"", other}) {
			t.Fatalf("adopted = %q, want %q", adopted, []string{"", other})
		}
	})
	t.Run("SurvivesARestart", func(t *testing.T) {
		open := newRegistry(t)
		if _, err := open(t).Bind(ctx, "engine-a", false); err != nil {
			t.Fatal(err)
		}
		again := open(t)
		if _, err := again.Bind(ctx, "engine-b", false); !errors.Is(err, sandbox.ErrConflict) {
			t.Fatalf("after a restart, another runtime: err = %v, want ErrConflict", err)
		}
		if prev, err := again.Bind(ctx, "engine-a", false); err != nil || prev != "engine-a" {
			t.Fatalf("after a restart: %q, %v; want engine-a, nil", prev, err)
		}
	})
}
