package config

import "strings"

// Tenant is one tenant: its callers' tokens, the agent profiles they may use and its
// limits.
type Tenant struct {
	// Tokens are its bearer tokens, each plain or "sha256:<64 hex digits>" (the token's
	// SHA-256 digest, so the file need not hold the secret).
	Tokens []string `koanf:"tokens"`
	// Agents are the agent ids (profile names; "default" for an empty agent id) its
	// callers may create sandboxes for; empty: every one.
	Agents []string `koanf:"agents"`
	// MaxSandboxes bounds its sandboxes held at once (0: no bound).
	MaxSandboxes int `koanf:"max_sandboxes"`
	// MaxExecConcurrent bounds the commands its sandboxes run at once, per process (0:
	// no bound).
	MaxExecConcurrent int `koanf:"max_exec_concurrent"`
}

// TenantTokens returns the tokens of the default tenant (the tokens key, with those of
// tenants.default if it is set) and those of every other tenant, by name.
func (c *Config) TenantTokens() (defaults []string, others map[string][]string) {
	defaults = append(defaults, c.Tokens...)
	others = map[string][]string{}
	for name, t := range c.Tenants {
		if name == "default" {
			defaults = append(defaults, t.Tokens...)
			continue
		}
		others[name] = t.Tokens
	}
	return defaults, others
}

// checkTenants checks tenants.<name>.*: names, tokens, limits, agents.
func (c *Config) checkTenants(p *problems) {
	for name, t := range c.Tenants {
		p.name(&t, p.key(&c.Tenants)+"."+name)
		if !validTenant(name) {
			p.bad(&t, "%q: a tenant's name is 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit", name)
		}
		if len(t.Tokens) == 0 && name != "default" {
			p.bad(&t.Tokens, "a tenant needs at least one token")
		}
		for i, tok := range t.Tokens {
			if strings.TrimSpace(tok) == "" || strings.ContainsAny(tok, " \t\r\n") {
				p.bad(&t.Tokens, "token %d is empty or holds white space", i+1)
			} else if hexDigest, ok := strings.CutPrefix(tok, "sha256:"); ok && !isSHA256Hex(hexDigest) {
				p.bad(&t.Tokens, "token %d starts with sha256: but is not followed by 64 hex digits", i+1)
			}
		}
		if t.MaxSandboxes < 0 {
			p.bad(&t.MaxSandboxes, "must be >= 0, got %d", t.MaxSandboxes)
		}
		if t.MaxExecConcurrent < 0 {
			p.bad(&t.MaxExecConcurrent, "must be >= 0, got %d", t.MaxExecConcurrent)
		}
		for _, agent := range t.Agents {
			if _, listed := c.Agents.Profiles[agent]; !listed && agent != "default" {
				p.bad(&t.Agents, "%q is not a profile of %s (nor \"default\")", agent, p.key(&c.Agents.Profiles))
			}
		}
	}
}

// validTenant reports whether name can name a tenant (it appears in logs and metrics).
func validTenant(name string) bool {
	if len(name) == 0 || len(name) > 63 || name[0] == '-' || name[0] == '_' {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
			return false
		}
	}
	return true
}
