package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/egress"
	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/profile"
)

// finish fills derived values (the resolved profiles, an absolute volume root) and
// validates, section by section; every problem is reported, joined.
func (c *Config) finish() error {
	p := &problems{keys: fieldKeys(c, "")}
	c.checkAPI(p)
	c.checkTenants(p)
	c.checkLifetimes(p)
	c.checkExec(p)
	c.checkJobs(p)
	c.checkRegistry(p)
	c.checkRuntime(p)
	c.checkAgents(p)
	c.checkEgress(p)
	c.checkTelemetry(p)
	return errors.Join(p.errs...)
}

// problems collects what is wrong with a configuration, each named by its key. A check
// names a key by its field's address in the configuration checked (&c.Exec.MaxTimeout),
// never by spelling it: the key comes from the koanf tags (fieldKeys).
type problems struct {
	errs []error
	keys map[any]string // of the configuration checked, and of the parts named
}

// key is the key of field, the address of a field of the configuration checked or of a
// part named. Another address is a mistake in a check, and panics.
func (p *problems) key(field any) string {
	key, ok := p.keys[field]
	if !ok {
		panic(fmt.Sprintf("config: a check names a %T that is no field of the configuration", field))
	}
	return key
}

// name lets checks name the fields of part, a pointer to a struct held in a map of the
// configuration (which has no address of its own there), under key.
func (p *problems) name(part any, key string) {
	maps.Copy(p.keys, fieldKeys(part, key))
}

func (p *problems) bad(field any, format string, a ...any) {
	p.errs = append(p.errs, fmt.Errorf("config: %s: %s", p.key(field), fmt.Sprintf(format, a...)))
}

func (p *problems) positive(d *time.Duration) {
	if *d <= 0 {
		p.bad(d, "must be > 0, got %s", *d)
	}
}

// checkAPI checks the HTTP API's keys: listen, tokens, max_body_bytes, shutdown_timeout,
// server.max_connections, limits.max_sandboxes.
func (c *Config) checkAPI(p *problems) {
	if loopback, err := isLoopback(c.Listen); err != nil {
		p.bad(&c.Listen, "%v", err)
	} else if !loopback && len(c.Tokens) == 0 && len(c.Tenants) == 0 {
		p.bad(&c.Listen, "%q is not a loopback address and no tokens are configured: set %s (%s) or listen on 127.0.0.1",
			c.Listen, p.key(&c.Tokens), envName(p.key(&c.Tokens)))
	}
	for i, t := range c.Tokens {
		if strings.TrimSpace(t) == "" || strings.ContainsAny(t, " \t\r\n") {
			p.bad(&c.Tokens, "token %d is empty or holds white space", i+1)
		}
	}
	if c.MaxBodyBytes <= 0 {
		p.bad(&c.MaxBodyBytes, "must be > 0, got %d", c.MaxBodyBytes)
	}
	p.positive(&c.ShutdownTimeout)
	if c.Server.MaxConnections < 0 {
		p.bad(&c.Server.MaxConnections, "must be >= 0 (0: no cap), got %d", c.Server.MaxConnections)
	}
	if c.Limits.MaxSandboxes < 0 {
		p.bad(&c.Limits.MaxSandboxes, "must be >= 0 (0: no cap), got %d", c.Limits.MaxSandboxes)
	}
}

// checkLifetimes checks how long sandboxes live: ttl, max_lifetime.
func (c *Config) checkLifetimes(p *problems) {
	p.positive(&c.TTL)
	p.positive(&c.MaxLifetime)
	if c.MaxLifetime > 0 && c.TTL > c.MaxLifetime {
		p.bad(&c.TTL, "%s is over %s %s", c.TTL, p.key(&c.MaxLifetime), c.MaxLifetime)
	}
}

// checkExec checks the bounds of commands and files: exec.*, files.*.
func (c *Config) checkExec(p *problems) {
	p.positive(&c.Exec.DefaultTimeout)
	p.positive(&c.Exec.MaxTimeout)
	if c.Exec.DefaultTimeout > c.Exec.MaxTimeout {
		p.bad(&c.Exec.DefaultTimeout, "%s is over %s %s", c.Exec.DefaultTimeout, p.key(&c.Exec.MaxTimeout), c.Exec.MaxTimeout)
	}
	if c.Exec.MaxConcurrent < 1 {
		p.bad(&c.Exec.MaxConcurrent, "must be >= 1, got %d", c.Exec.MaxConcurrent)
	}
	if c.Exec.OutputCap <= 0 {
		p.bad(&c.Exec.OutputCap, "must be > 0, got %d", c.Exec.OutputCap)
	}
	if c.Exec.OutputCap > 0 {
		if cost := httpapi.BufferedExecCost(c.Exec.OutputCap); c.Exec.MaxBufferedBytes < cost {
			p.bad(&c.Exec.MaxBufferedBytes, "%d is less than one buffered exec answer may hold: %d for %s %d",
				c.Exec.MaxBufferedBytes, cost, p.key(&c.Exec.OutputCap), c.Exec.OutputCap)
		}
	}
	if c.Files.MaxBytes <= 0 {
		p.bad(&c.Files.MaxBytes, "must be > 0, got %d", c.Files.MaxBytes)
	}
	if c.Files.MinUploadRate < 0 {
		p.bad(&c.Files.MinUploadRate, "must be >= 0 (0: no minimum), got %d", c.Files.MinUploadRate)
	}
}

// checkJobs checks the background jobs: sweep.*, reconcile.*, workspace.* (the sweep's).
func (c *Config) checkJobs(p *problems) {
	p.positive(&c.Sweep.Interval)
	if c.Sweep.Parallelism < 1 {
		p.bad(&c.Sweep.Parallelism, "must be >= 1, got %d", c.Sweep.Parallelism)
	}
	p.positive(&c.Reconcile.Interval)
	p.positive(&c.Reconcile.Grace)
	if c.Workspace.Retention < 0 {
		p.bad(&c.Workspace.Retention, "must be >= 0 (0: for ever), got %s", c.Workspace.Retention)
	}
	if c.Workspace.RetentionProvided && c.Workspace.Retention == 0 {
		p.bad(&c.Workspace.RetentionProvided, "removes nothing without %s: set both", p.key(&c.Workspace.Retention))
	}
}

// checkRegistry checks registry, lock_linger and registry_timeout.
func (c *Config) checkRegistry(p *problems) {
	if _, _, err := ParseRegistry(c.Registry); err != nil {
		p.bad(&c.Registry, "%v", err)
	}
	if c.LockLinger < 0 {
		p.bad(&c.LockLinger, "must be >= 0, got %s", c.LockLinger)
	}
	p.positive(&c.RegistryTimeout)
}

// checkEgress checks egress.*.
func (c *Config) checkEgress(p *problems) {
	if c.Egress.ProxyPort < 1 || c.Egress.ProxyPort > 65535 {
		p.bad(&c.Egress.ProxyPort, "must be a port from 1 to 65535, got %d", c.Egress.ProxyPort)
	}
	hosts, err := egress.ParseHosts(c.Egress.Hosts)
	if err != nil {
		p.bad(&c.Egress.Hosts, "%v", err)
	}
	c.Egress.Resolved = hosts
}

// checkDocker checks docker.* and makes the volume root absolute.
func (c *Config) checkDocker(p *problems) {
	if c.Docker.StopTimeout < 0 {
		p.bad(&c.Docker.StopTimeout, "must be >= 0 (0: no grace, a stop removes at once), got %s", c.Docker.StopTimeout)
	}
	p.positive(&c.Docker.CallTimeout)
	p.positive(&c.Docker.CreateTimeout)
	if c.Docker.MinFreeBytes < 0 {
		p.bad(&c.Docker.MinFreeBytes, "must be >= 0 (0: no floor), got %d", c.Docker.MinFreeBytes)
	}
	if !validInstance(c.Docker.Instance) {
		p.bad(&c.Docker.Instance, "%q: use 1 to 63 letters, digits, '.', '_' or '-'", c.Docker.Instance)
	}
	if c.Docker.VolumeRoot == "" {
		p.bad(&c.Docker.VolumeRoot, "must be set")
	} else if abs, err := filepath.Abs(c.Docker.VolumeRoot); err != nil {
		p.bad(&c.Docker.VolumeRoot, "%v", err)
	} else {
		c.Docker.VolumeRoot = abs
	}
}

// checkRuntime checks runtime and the chosen runtime's section.
func (c *Config) checkRuntime(p *problems) {
	switch c.Runtime {
	case RuntimeDocker:
		c.checkDocker(p)
	case RuntimeKubernetes:
		c.checkKubernetes(p)
	default:
		p.bad(&c.Runtime, "%q: use %s or %s", c.Runtime, RuntimeDocker, RuntimeKubernetes)
	}
}

// checkKubernetes checks kubernetes.*; the Kubernetes runtime checks the rest when it is
// made (namespace and instance spelling, what the profiles ask for).
func (c *Config) checkKubernetes(p *problems) {
	if c.Kubernetes.Namespace == "" {
		p.bad(&c.Kubernetes.Namespace, "must be set")
	}
	if !validInstance(c.Kubernetes.Instance) {
		p.bad(&c.Kubernetes.Instance, "%q: use 1 to 63 letters, digits, '.', '_' or '-'", c.Kubernetes.Instance)
	}
	if c.Kubernetes.WorkspaceBytes <= 0 {
		p.bad(&c.Kubernetes.WorkspaceBytes, "must be > 0, got %d", c.Kubernetes.WorkspaceBytes)
	}
	if c.Kubernetes.StopTimeout < 0 {
		p.bad(&c.Kubernetes.StopTimeout, "must be >= 0, got %s", c.Kubernetes.StopTimeout)
	}
}

// checkAgents resolves the agents section into Profiles (package profile checks it).
func (c *Config) checkAgents(p *problems) {
	set, err := profile.New(c.Agents)
	if err != nil {
		p.errs = append(p.errs, configErrors(err)...)
		return
	}
	c.Profiles = set
}

// checkTelemetry checks otlp.* and log.*.
func (c *Config) checkTelemetry(p *problems) {
	if c.OTLP.Endpoint != "" {
		u, err := url.Parse(c.OTLP.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.bad(&c.OTLP.Endpoint, "%q is not an http(s) URL such as http://localhost:4318", c.OTLP.Endpoint)
		}
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		p.bad(&c.Log.Level, "%q: use debug, info, warn or error", c.Log.Level)
	}
	switch strings.ToLower(c.Log.Format) {
	case "json", "text":
	default:
		p.bad(&c.Log.Format, "%q: use json or text", c.Log.Format)
	}
}

// configErrors prefixes each of the (joined) errors with "config: ".
func configErrors(err error) []error {
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{fmt.Errorf("config: %w", err)}
	}
	var out []error
	for _, e := range joined.Unwrap() {
		out = append(out, fmt.Errorf("config: %w", e))
	}
	return out
}

// ParseRegistry splits a registry DSN into its kind ("sqlite" or "postgres") and what the
// store opens: the file path for sqlite, the whole DSN for postgres.
func ParseRegistry(dsn string) (kind, target string, err error) {
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "//")
		if path == "" {
			return "", "", fmt.Errorf("%q names no file: use sqlite:<path>", dsn)
		}
		return "sqlite", path, nil
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		if _, err := url.Parse(dsn); err != nil {
			return "", "", fmt.Errorf("postgres DSN does not parse: %v", redact(err))
		}
		return "postgres", dsn, nil
	}
	return "", "", fmt.Errorf("unknown registry %q: use sqlite:<path> or postgres://<dsn>", redactDSN(dsn))
}

// isLoopback reports whether the listen address only takes connections from this host.
func isLoopback(listen string) (bool, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return false, fmt.Errorf("%q is not host:port", listen)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return false, fmt.Errorf("%q: bad port %q", listen, port)
	}
	if host == "localhost" {
		return true, nil
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false, nil // a host name may resolve anywhere
	}
	return addr.IsLoopback(), nil
}

func validInstance(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// redact keeps a password out of an error message.
func redact(err error) string {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err.Error()
	}
	return "malformed URL"
}

func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		u.User = url.User(u.User.Username())
		return u.String()
	}
	if len(dsn) > 16 {
		return dsn[:16] + "..."
	}
	return dsn
}
