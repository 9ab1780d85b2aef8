package webui_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/sandboxd/sandboxd/internal/eventlog"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/webui"
)

type noSandboxes struct{}

func (noSandboxes) List(context.Context, lifecycle.ListFilter) ([]sandbox.Session, error) {
	return nil, nil
}

// xterm.js is offered only when the folder holds a browser build (Debian 12's is a
// CommonJS module a page cannot load); the page's own files are served either way.
func TestXtermOnlyWhenABrowserBuildIsFound(t *testing.T) {
	for name, tc := range map[string]struct {
		js   string
		want int
	}{
		"browser build":   {"!function(e,t){window.Terminal=t()}(this,function(){});", http.StatusOK},
		"CommonJS module": {`var Terminal_1 = require("./public/Terminal");`, http.StatusNotFound},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			_ = os.WriteFile(filepath.Join(dir, "xterm.js"), []byte(tc.js), 0o644)
			_ = os.WriteFile(filepath.Join(dir, "xterm.css"), []byte(".xterm{}"), 0o644)
			_ = os.WriteFile(filepath.Join(dir, "other.js"), []byte("secret"), 0o644)
			u, err := webui.New(webui.Config{Sandboxes: noSandboxes{}, Events: eventlog.New(eventlog.Config{}), XtermDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			get := func(path string) int {
				rec := httptest.NewRecorder()
				u.Files().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
				return rec.Code
			}
			if got := get("/ui/vendor/xterm/xterm.js"); got != tc.want {
				t.Errorf("xterm.js: %d, want %d", got, tc.want)
			}
			if got := get("/ui/vendor/xterm/other.js"); got != http.StatusNotFound {
				t.Errorf("another file of the folder: %d, want 404", got)
			}
			for _, f := range []string{"/ui/", "/ui/app.js", "/ui/style.css"} {
				if got := get(f); got != http.StatusOK {
					t.Errorf("%s: %d", f, got)
				}
			}
		})
	}
}
