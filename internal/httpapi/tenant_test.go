package httpapi_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/httpapi"
)

const acmeToken = "acme-token"

func withAcme(cfg *httpapi.Config) {
	d := sha256.Sum256([]byte(acmeToken))
	cfg.Tenants = map[string][]string{"acme": {"sha256:" + hex.EncodeToString(d[:])}}
}

// A token reaches only its tenant's chats: every route answers another tenant's chat as
// one without a sandbox, and changes nothing.
func TestEveryRouteAnswersAnotherTenantsChatAsMissing(t *testing.T) {
	f := newFixture(t, withAcme)
	chat := uuid.NewString()
	if status, _ := f.put(t, chat, `{}`); status != http.StatusCreated {
		t.Fatalf("PUT as the default tenant: %d", status)
	}
	acme := map[string]string{"Authorization": "Bearer " + acmeToken}
	base := "/v1/chats/" + chat + "/sandbox"
	for _, r := range []struct{ method, path, body string }{
		{http.MethodGet, base, ""},
		{http.MethodPut, base, `{}`},
		{http.MethodPost, base + "/exec", `{"cmd":["true"]}`},
		{http.MethodGet, base + "/files?path=a", ""},
		{http.MethodGet, base + "/files/list?path=.", ""},
		{http.MethodPost, base + "/keepalive", `{"ttl_s":60}`},
		{http.MethodGet, base + "/egress", ""},
	} {
		resp := f.request(t, r.method, r.path, r.body, acme)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		var p struct{ Code string }
		_ = json.Unmarshal(body, &p)
		if resp.StatusCode != http.StatusNotFound || p.Code != "not_found" {
			t.Errorf("%s %s as another tenant: %d %s; want 404 not_found", r.method, r.path, resp.StatusCode, body)
		}
	}
	resp := f.request(t, http.MethodDelete, base, "", acme)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	var del struct{ Result string }
	_ = json.Unmarshal(body, &del)
	if resp.StatusCode != http.StatusOK || del.Result != "not_found" {
		t.Errorf("DELETE as another tenant: %d %s; want 200 not_found", resp.StatusCode, body)
	}
	resp = f.request(t, http.MethodGet, "/v1/sandboxes", "", acme)
	body, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	var page struct{ Items []json.RawMessage }
	if err := json.Unmarshal(body, &page); err != nil || len(page.Items) != 0 {
		t.Errorf("list as another tenant: %s; want no items", body)
	}
	if n := f.rows(t); n != 1 {
		t.Fatalf("registry holds %d sessions, want the one", n)
	}
	if _, s, d := f.runtimeCalls(); s+d != 0 {
		t.Fatalf("runtime stopped %d and deleted %d sandboxes, want none", s, d)
	}
	// The owner still reaches it.
	resp = f.request(t, http.MethodGet, base, "", nil)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET as the owner: %d", resp.StatusCode)
	}
}

func TestDigestTokensAndMalformedOnes(t *testing.T) {
	f := newFixture(t, withAcme)
	resp := f.request(t, http.MethodGet, "/v1/sandboxes", "", map[string]string{"Authorization": "Bearer " + acmeToken})
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a token configured as its digest: %d", resp.StatusCode)
	}
	d := sha256.Sum256([]byte(acmeToken))
	resp = f.request(t, http.MethodGet, "/v1/sandboxes", "", map[string]string{"Authorization": "Bearer sha256:" + hex.EncodeToString(d[:])})
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the digest itself sent as the token: %d, want 401", resp.StatusCode)
	}
	for name, cfg := range map[string]httpapi.Config{
		"bad digest":   {Tenants: map[string][]string{"acme": {"sha256:zz"}}},
		"no tokens":    {Tenants: map[string][]string{"acme": nil}},
		"shared token": {Tokens: []string{"x"}, Tenants: map[string][]string{"acme": {"x"}}},
	} {
		cfg.Sandboxes = f.svc
		if _, err := httpapi.New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg.Tenants)
		}
	}
}
