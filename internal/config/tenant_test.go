package config

import (
	"io"
	"strings"
	"testing"
)

func TestTenants(t *testing.T) {
	digest := strings.Repeat("ab", 32)
	path := writeFile(t, `
listen: 0.0.0.0:8080
tokens: [legacy-token]
agents:
  profiles:
    coder: {image: coder:1}
tenants:
  acme:
    tokens: [acme-token, "sha256:`+digest+`"]
    agents: [coder, default]
    max_sandboxes: 5
    max_exec_concurrent: 2
  default:
    max_sandboxes: 10
`)
	cfg, err := Load([]string{"--config", path}, nil, io.Discard)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	acme := cfg.Tenants["acme"]
	if acme.MaxSandboxes != 5 || acme.MaxExecConcurrent != 2 || len(acme.Agents) != 2 || len(acme.Tokens) != 2 {
		t.Fatalf("tenant acme = %+v", acme)
	}
	defaults, others := cfg.TenantTokens()
	if len(defaults) != 1 || defaults[0] != "legacy-token" || len(others) != 1 || len(others["acme"]) != 2 {
		t.Fatalf("TenantTokens = %v, %v", defaults, others)
	}

	// A setup without tenants keeps its tokens as the default tenant's.
	cfg, err = Load([]string{"--tokens", "a,b"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if defaults, others := cfg.TenantTokens(); len(defaults) != 2 || len(others) != 0 {
		t.Fatalf("TenantTokens without tenants = %v, %v", defaults, others)
	}

	for name, body := range map[string]string{
		"bad name":      "tenants:\n  Acme!: {tokens: [x]}\n",
		"no tokens":     "tenants:\n  acme: {max_sandboxes: 1}\n",
		"bad digest":    "tenants:\n  acme: {tokens: [\"sha256:12\"]}\n",
		"unknown agent": "tenants:\n  acme: {tokens: [x], agents: [nope]}\n",
		"negative":      "tenants:\n  acme: {tokens: [x], max_sandboxes: -1}\n",
		"misspelt key":  "tenants:\n  acme: {tokens: [x], max_sandbox: 1}\n",
	} {
		if _, err := Load([]string{"--config", writeFile(t, body)}, nil, io.Discard); err == nil {
			t.Errorf("%s: Load accepted\n%s", name, body)
		}
	}
}
