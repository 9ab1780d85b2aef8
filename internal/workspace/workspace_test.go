package workspace_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/workspace"
)

// layout makes <tmp>/vol (the root) with a real folder "good/sub", a file, links to / and
// to a real folder, and a sibling <tmp>/vol-evil.
func layout(t *testing.T) (*workspace.Root, string) {
	t.Helper()
	base := t.TempDir()
	vol := filepath.Join(base, "vol")
	for _, d := range []string{vol + "/good/sub", base + "/vol-evil/x"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(vol+"/file", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{vol + "/toroot": "/", vol + "/togood": vol + "/good", vol + "/good/up": ".."} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	root, err := workspace.NewRoot(vol)
	if err != nil {
		t.Fatal(err)
	}
	return root, vol
}

func TestCheckAcceptsRealFoldersInsideTheRoot(t *testing.T) {
	root, vol := layout(t)
	for _, p := range []string{vol + "/good", vol + "/good/", vol + "//good", vol + "/./good"} {
		got, err := root.Check(p)
		if err != nil {
			t.Errorf("Check(%q): %v", p, err)
			continue
		}
		if want := filepath.Clean(p); got != want {
			t.Errorf("Check(%q) = %q, want %q", p, got, want)
		}
	}
}

func TestCheckRefusesHostilePaths(t *testing.T) {
	root, vol := layout(t)
	for name, p := range map[string]string{
		"empty":                 "",
		"blank":                 "   ",
		"relative":              "good",
		"dot relative":          "./vol/good",
		"traversal":             vol + "/good/../../etc",
		"traversal back inside": vol + "/good/../good",
		"encoded traversal":     vol + "/%2e%2e/%2e%2e/etc",
		"encoded slash":         vol + "/good%2f..%2f..",
		"sibling prefix":        vol + "-evil/x",
		"outside":               "/etc",
		"the root itself":       vol,
		"symlink to /":          vol + "/toroot",
		"through symlink to /":  vol + "/toroot/etc",
		"symlink inside root":   vol + "/togood",
		"through inner symlink": vol + "/togood/sub",
		"nested in a workspace": vol + "/good/sub",
		"symlink to parent":     vol + "/good/up",
		"missing folder":        vol + "/nope",
		"missing parent":        vol + "/nope/deeper",
		"regular file":          vol + "/file",
		"NUL":                   vol + "/good\x00/sub",
		"trailing space":        vol + "/good ",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := root.Check(p)
			if !errors.Is(err, sandbox.ErrInvalid) {
				t.Fatalf("Check(%q) = %v, want ErrInvalid", p, err)
			}
			t.Log(err)
		})
	}
}

func TestCheckCreatableAcceptsOnlyAMissingLastComponent(t *testing.T) {
	root, vol := layout(t)
	if _, err := root.CheckCreatable(vol + "/new"); err != nil {
		t.Errorf("missing last component: %v", err)
	}
	if _, err := root.CheckCreatable(vol + "/good"); err != nil {
		t.Errorf("existing folder: %v", err)
	}
	for _, p := range []string{vol + "/nope/new", vol + "/toroot", vol + "/toroot/new", vol + "/../new"} {
		if _, err := root.CheckCreatable(p); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("CheckCreatable(%q) = %v, want ErrInvalid", p, err)
		}
	}
}

func TestEnsureCreatesThePrivateFolderOnce(t *testing.T) {
	root, vol := layout(t)
	p := root.Derive(uuid.MustParse("11111111-1111-1111-1111-111111111111"))
	if want := vol + "/11111111-1111-1111-1111-111111111111"; p != want {
		t.Fatalf("Derive = %q, want %q", p, want)
	}
	for range 2 {
		got, err := root.Ensure(p, -1, -1)
		if err != nil || got != p {
			t.Fatalf("Ensure = %q, %v", got, err)
		}
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("mode = %v, want a 0700 directory", fi.Mode())
	}
}

func TestEnsureNeverFollowsAPlantedLink(t *testing.T) {
	root, vol := layout(t)
	target := t.TempDir()
	if err := os.Symlink(target, vol+"/planted"); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Ensure(vol+"/planted", -1, -1); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("Ensure over a link = %v, want ErrInvalid", err)
	}
	if _, err := root.Ensure(vol+"/toroot/tmp", -1, -1); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("Ensure under a link = %v, want ErrInvalid", err)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Errorf("link target got %v", entries)
	}
}

func TestNewRootRefusesRelativeOrMissing(t *testing.T) {
	for _, dir := range []string{"vol", filepath.Join(t.TempDir(), "missing")} {
		if _, err := workspace.NewRoot(dir); err == nil {
			t.Errorf("NewRoot(%q) accepted", dir)
		}
	}
}

// A sandbox whose workspace holds another chat's workspace can swap a folder on the
// latter's path for a link at any time after the create checked it: Open must never
// follow it.
func TestOpenNeverFollowsALinkSwappedIn(t *testing.T) {
	root, vol := layout(t)
	ws := vol + "/good/sub"
	r, err := root.Open(ws)
	if err != nil {
		t.Fatalf("Open(%q): %v", ws, err)
	}
	if err := r.WriteFile("mine", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if _, err := os.Stat(ws + "/mine"); err != nil {
		t.Fatalf("the file written through Open is not in the folder: %v", err)
	}

	// The swap: good/sub becomes a link to / (and good/sub2 a link to a real folder).
	if err := os.Rename(ws, vol+"/good/sub.old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", ws); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(vol+"/good/sub.old", vol+"/good/sub2"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{ws, vol + "/good/sub2", vol + "/toroot", vol + "/togood/sub.old", vol + "/file"} {
		if r, err := root.Open(p); !errors.Is(err, sandbox.ErrInvalid) {
			if r != nil {
				r.Close()
			}
			t.Errorf("Open(%q): err = %v, want ErrInvalid", p, err)
		}
	}
	for _, p := range []string{vol, vol + "/.pool", vol + "/../vol-evil/x"} {
		if r, err := root.Open(p); !errors.Is(err, sandbox.ErrInvalid) {
			if r != nil {
				r.Close()
			}
			t.Errorf("Open(%q): err = %v, want ErrInvalid", p, err)
		}
	}
	if _, err := root.Open(vol + "/gone"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Open of a missing folder: err = %v, want ErrNotFound", err)
	}
}

func TestAMissingVolumeRootIsUnavailableNotInvalid(t *testing.T) {
	root, vol := layout(t)
	if err := os.RemoveAll(vol); err != nil {
		t.Fatal(err)
	}
	for _, check := range []func(string) (string, error){root.Check, root.CheckCreatable} {
		if _, err := check(vol + "/good"); !errors.Is(err, sandbox.ErrUnavailable) {
			t.Errorf("err = %v, want ErrUnavailable", err)
		}
	}
}

// The folder Ensure makes for another user is never seen with another owner: an
// admission of the same chat running meanwhile (CheckCreatableFor) never finds a folder
// its sandbox user could not write in. Nothing of sandboxd's own is left beside it.
func TestEnsureNeverShowsAFolderOfAnotherOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to hand a folder to another user")
	}
	root, vol := layout(t)
	u := workspace.User{UID: 1000, GID: 1000}
	for range 200 {
		p := root.Derive(uuid.New())
		done := make(chan struct{})
		refused := make(chan error, 1)
		go func() {
			defer close(refused)
			for {
				if _, err := root.CheckCreatableFor(p, u); err != nil {
					refused <- err
					return
				}
				select {
				case <-done:
					return
				default:
				}
			}
		}()
		_, err := root.Ensure(p, u.UID, u.GID)
		close(done)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-refused; err != nil {
			t.Fatalf("an admission while the folder was made: %v", err)
		}
	}
	entries, err := os.ReadDir(vol)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if name := e.Name(); len(name) > 0 && name[0] == '.' {
			t.Errorf("%s left in the volume root", name)
		}
	}
}
