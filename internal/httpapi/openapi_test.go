package httpapi_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite api/openapi.json from the generated document")

var committedDocument = filepath.Join("..", "..", "api", "openapi.json")

// generatedDocument is the OpenAPI document the API serves, indented as committed.
func generatedDocument(t *testing.T) []byte {
	t.Helper()
	f := newFixture(t)
	resp := f.request(t, http.MethodGet, "/openapi.json", "", map[string]string{"Authorization": ""})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /openapi.json = %d", resp.StatusCode)
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		t.Fatal(err)
	}
	buf.WriteByte('\n')
	return buf.Bytes()
}

// TestOpenAPIDocumentIsCommitted keeps api/openapi.json what the code generates.
// Refresh it with: go generate ./internal/httpapi (or go test -run ThisTest -update).
func TestOpenAPIDocumentIsCommitted(t *testing.T) {
	generated := generatedDocument(t)
	if *update {
		if err := os.WriteFile(committedDocument, generated, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	committed, err := os.ReadFile(committedDocument)
	if err != nil {
		t.Fatalf("%v (run go generate ./internal/httpapi)", err)
	}
	if !bytes.Equal(committed, generated) {
		t.Errorf("%s differs from the generated document; run go generate ./internal/httpapi", committedDocument)
	}
}

func TestOpenAPIDocumentDeclaresEveryRoute(t *testing.T) {
	var doc struct {
		OpenAPI string
		Paths   map[string]map[string]struct {
			Security  []map[string][]string
			Responses map[string]json.RawMessage
		}
		Components struct {
			SecuritySchemes map[string]struct{ Type, Scheme string }
		}
	}
	if err := json.Unmarshal(generatedDocument(t), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	if s := doc.Components.SecuritySchemes["bearer"]; s.Type != "http" || s.Scheme != "bearer" {
		t.Errorf("bearer security scheme = %+v", s)
	}
	for _, r := range []struct {
		method, path string
		secured      bool
		statuses     []string
	}{
		{"put", "/v1/chats/{chat_id}/sandbox", true, []string{"200", "201", "401", "409", "413", "415", "422", "503"}},
		{"get", "/v1/chats/{chat_id}/sandbox", true, []string{"200", "401", "404", "422"}},
		{"delete", "/v1/chats/{chat_id}/sandbox", true, []string{"200", "401", "422"}},
		{"get", "/v1/sandboxes", true, []string{"200", "401", "422"}},
		{"post", "/v1/chats/{chat_id}/sandbox/exec", true, []string{"200", "401", "404", "409", "422"}},
		{"put", "/v1/chats/{chat_id}/sandbox/files", true, []string{"200", "401", "404", "409", "413", "422"}},
		{"get", "/v1/chats/{chat_id}/sandbox/files", true, []string{"200", "401", "404", "409", "422"}},
		{"get", "/v1/chats/{chat_id}/sandbox/files/list", true, []string{"200", "401", "404", "409", "422"}},
		{"post", "/v1/chats/{chat_id}/sandbox/keepalive", true, []string{"200", "401", "404", "409", "422"}},
		{"get", "/healthz", false, []string{"200"}},
		{"get", "/readyz", false, []string{"200", "503"}},
		{"get", "/metrics", false, []string{"200", "404"}},
	} {
		op, ok := doc.Paths[r.path][r.method]
		if !ok {
			t.Errorf("%s %s is not declared", r.method, r.path)
			continue
		}
		secured := slices.ContainsFunc(op.Security, func(m map[string][]string) bool { _, ok := m["bearer"]; return ok })
		if secured != r.secured {
			t.Errorf("%s %s: bearer security declared = %v, want %v", r.method, r.path, secured, r.secured)
		}
		for _, s := range r.statuses {
			if _, ok := op.Responses[s]; !ok {
				t.Errorf("%s %s: response %s is not declared", r.method, r.path, s)
			}
		}
	}
}
