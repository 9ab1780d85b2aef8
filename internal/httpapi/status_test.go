package httpapi

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// sentinels names every sentinel error of package sandbox; TestEverySentinelHasItsCode
// checks against the package's source that none is missing.
var sentinels = map[string]struct {
	err    error
	code   string
	status int
}{
	"ErrInvalid":        {sandbox.ErrInvalid, "invalid", http.StatusUnprocessableEntity},
	"ErrNotFound":       {sandbox.ErrNotFound, "not_found", http.StatusNotFound},
	"ErrConflict":       {sandbox.ErrConflict, "conflict", http.StatusConflict},
	"ErrWorkspaceInUse": {sandbox.ErrWorkspaceInUse, "workspace_in_use", http.StatusConflict},
	"ErrExpired":        {sandbox.ErrExpired, "expired", http.StatusConflict},
	"ErrTooLarge":       {sandbox.ErrTooLarge, "too_large", http.StatusRequestEntityTooLarge},
	"ErrBusy":           {sandbox.ErrBusy, "busy", http.StatusTooManyRequests},
	"ErrLimit":          {sandbox.ErrLimit, "limit_exceeded", http.StatusTooManyRequests},
	"ErrUnavailable":    {sandbox.ErrUnavailable, "unavailable", http.StatusServiceUnavailable},
	"ErrFull":           {sandbox.ErrFull, "full", http.StatusInsufficientStorage},
}

func TestEverySentinelHasItsCode(t *testing.T) {
	// Every exported Err... variable declared in package sandbox.
	fset := token.NewFileSet()
	files, err := filepath.Glob("../sandbox/*.go")
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.VAR {
				continue
			}
			for _, spec := range gen.Specs {
				for _, id := range spec.(*ast.ValueSpec).Names {
					if id.IsExported() && strings.HasPrefix(id.Name, "Err") {
						declared = append(declared, id.Name)
					}
				}
			}
		}
	}
	if len(declared) == 0 {
		t.Fatal("found no sentinel in ../sandbox")
	}
	for _, name := range declared {
		want, ok := sentinels[name]
		if !ok {
			t.Errorf("sandbox.%s has no row in this test (and maybe none in errorCodes): give it a code and a status", name)
			continue
		}
		wrapped := fmt.Errorf("op: %w", want.err)
		if code, status := ErrorCode(wrapped); code != want.code || status != want.status {
			t.Errorf("ErrorCode(sandbox.%s) = %q, %d; want %q, %d", name, code, status, want.code, want.status)
		}
	}
	for name := range sentinels {
		if !slices.Contains(declared, name) {
			t.Errorf("sandbox.%s is not declared any more: drop its row", name)
		}
	}
}

func TestErrorCodeOfOtherErrors(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   string
		status int
	}{
		{fmt.Errorf("create: %w", context.DeadlineExceeded), "unavailable", http.StatusServiceUnavailable},
		{errors.New("boom"), "internal", http.StatusInternalServerError},
		{context.Canceled, "internal", http.StatusInternalServerError},
		// Expired is not conflict, though both are 409.
		{fmt.Errorf("exec: %w", sandbox.ErrExpired), "expired", http.StatusConflict},
	} {
		if code, status := ErrorCode(tc.err); code != tc.code || status != tc.status {
			t.Errorf("ErrorCode(%v) = %q, %d; want %q, %d", tc.err, code, status, tc.code, tc.status)
		}
	}
}

func TestCodeForStatus(t *testing.T) {
	for status, want := range map[int]string{
		http.StatusBadRequest:            "bad_request",
		http.StatusUnauthorized:          "unauthorized",
		http.StatusNotFound:              "not_found",
		http.StatusMethodNotAllowed:      "method_not_allowed",
		http.StatusConflict:              "conflict",
		http.StatusRequestEntityTooLarge: "too_large",
		http.StatusUnsupportedMediaType:  "unsupported_media_type",
		http.StatusUnprocessableEntity:   "invalid",
		http.StatusTooManyRequests:       "busy",
		http.StatusInternalServerError:   "internal",
		http.StatusServiceUnavailable:    "unavailable",
	} {
		if got := codeForStatus(status); got != want {
			t.Errorf("codeForStatus(%d) = %q, want %q", status, got, want)
		}
	}
}
