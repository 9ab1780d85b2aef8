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

	for body, want := range map[string]string{
		"tenants:\n  Acme!: {tokens: [x]}\n":                         "tenants.Acme!: ",
		"tenants:\n  acme: {max_sandboxes: 1}\n":                     "tenants.acme.tokens: a tenant needs at least one token",
		"tenants:\n  acme: {tokens: [\"sha256:12\"]}\n":              "tenants.acme.tokens: token 1 starts with sha256:",
		"tenants:\n  acme: {tokens: [x], agents: [nope]}\n":          `tenants.acme.agents: "nope" is not a profile of agents.profiles`,
		"tenants:\n  acme: {tokens: [x], max_sandboxes: -1}\n":       "tenants.acme.max_sandboxes: must be >= 0",
		"tenants:\n  acme: {tokens: [x], max_exec_concurrent: -1}\n": "tenants.acme.max_exec_concurrent: must be >= 0",
		"tenants:\n  acme: {tokens: [x], max_sandbox: 1}\n":          "max_sandbox",
	} {
		if _, err := Load([]string{"--config", writeFile(t, body)}, nil, io.Discard); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one saying %q", body, err, want)
		}
	}
}
