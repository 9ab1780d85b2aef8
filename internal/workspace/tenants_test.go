package workspace_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

func TestTenantPartsAreMadeAndConfined(t *testing.T) {
	root, vol := layout(t)
	part, err := root.Tenant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(vol, ".tenants", "acme"); part.Dir() != want {
		t.Fatalf("part = %s, want %s", part.Dir(), want)
	}
	for _, d := range []string{filepath.Join(vol, ".tenants"), part.Dir()} {
		if fi, err := os.Lstat(d); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o711 {
			t.Fatalf("%s: %v, %v; want a directory with mode 0711", d, fi.Mode(), err)
		}
	}
	if again, err := root.Tenant("acme"); err != nil || again.Dir() != part.Dir() {
		t.Fatalf("Tenant again: %v, %v", again, err)
	}
	chat := uuid.New()
	if p, err := part.Ensure(part.Derive(chat), -1, -1); err != nil || p != filepath.Join(part.Dir(), chat.String()) {
		t.Fatalf("Ensure in the part: %q, %v", p, err)
	}
	if got := root.TenantOf(part.Derive(chat)); got != "acme" {
		t.Errorf("TenantOf(%s) = %q, want acme", part.Derive(chat), got)
	}
	if got := root.TenantOf(root.Derive(chat)); got != "" {
		t.Errorf("TenantOf(%s) = %q, want none", root.Derive(chat), got)
	}
	if got, err := root.Tenants(); err != nil || !slices.Equal(got, []string{"acme"}) {
		t.Errorf("Tenants = %v, %v", got, err)
	}
	// The parts' folder and what is in it are no workspace of the root; the part's
	// workspaces are none of the root's either.
	for _, p := range []string{filepath.Join(vol, ".tenants"), part.Dir(), part.Derive(chat)} {
		if _, err := root.Check(p); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("root.Check(%s) = %v, want ErrInvalid", p, err)
		}
	}
	if _, err := part.Check(filepath.Join(vol, "good")); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("part.Check of the root's folder = %v, want ErrInvalid", err)
	}
	for _, bad := range []string{"", ".hidden", "a/b", ".."} {
		if _, err := root.Tenant(bad); err == nil {
			t.Errorf("Tenant(%q) accepted", bad)
		}
	}
}

func TestATenantPartThatIsALinkIsRefused(t *testing.T) {
	root, vol := layout(t)
	if err := os.Mkdir(filepath.Join(vol, ".tenants"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(vol, "good"), filepath.Join(vol, ".tenants", "acme")); err != nil {
		t.Fatal(err)
	}
	if part, err := root.Tenant("acme"); err == nil {
		t.Fatalf("Tenant through a link = %s, want an error", part.Dir())
	}
}
