package egress

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Reason says why a connection was refused; the label of sandbox.egress.denied.total.
// The set is closed, so the label stays bounded.
type Reason string

const (
	// ReasonDenied: the destination matches a deny rule.
	ReasonDenied Reason = "denied"
	// ReasonNotAllowed: no allow rule names the destination.
	ReasonNotAllowed Reason = "not_allowed"
	// ReasonInternal: the destination is, or resolves to, an internal address that no
	// allow prefix names.
	ReasonInternal Reason = "internal"
	// ReasonUnresolved: the name does not resolve.
	ReasonUnresolved Reason = "unresolved"
	// ReasonUnknownSandbox: the connection comes from no sandbox the runtime knows.
	ReasonUnknownSandbox Reason = "unknown_sandbox"
	// ReasonBadRequest: not a proxy request the proxy serves (no host, a bad port, a
	// scheme other than http for a plain request).
	ReasonBadRequest Reason = "bad_request"
	// ReasonSNIMismatch: the TLS server name sent in a CONNECT tunnel is not the host
	// the tunnel was allowed for.
	ReasonSNIMismatch Reason = "sni_mismatch"
)

// Reasons are every Reason, for metrics that start at 0.
var Reasons = []Reason{ReasonDenied, ReasonNotAllowed, ReasonInternal, ReasonUnresolved,
	ReasonUnknownSandbox, ReasonBadRequest, ReasonSNIMismatch}

// internalRanges are refused unless an allow prefix names them: loopback, RFC 1918,
// link-local (the cloud metadata address 169.254.169.254 among them), unique local,
// shared (CGNAT), "this network", multicast, broadcast and reserved, and the IPv6 forms
// that embed an IPv4 address (NAT64, 6to4, Teredo).
var internalRanges = mustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
	"240.0.0.0/4",
	"::/128", "::1/128", "64:ff9b::/96", "64:ff9b:1::/48", "2001::/32", "2002::/16",
	"fc00::/7", "fe80::/10", "ff00::/8",
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// Resolver resolves host names; *net.Resolver is one, Hosts another.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Hosts resolves the names it lists to their addresses and hands every other name to
// Next (nil: net.DefaultResolver). What egress.hosts configures: fixed addresses for
// names, as /etc/hosts gives, and the way tests point names at their own servers.
type Hosts struct {
	Names map[string][]netip.Addr // lower case, no trailing dot
	Next  Resolver
}

// LookupNetIP returns the listed addresses of host, or asks Next.
func (h Hosts) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if addrs, ok := h.Names[normalizeName(host)]; ok {
		return addrs, nil
	}
	next := h.Next
	if next == nil {
		next = net.DefaultResolver
	}
	return next.LookupNetIP(ctx, network, host)
}

// ParseHosts reads the egress.hosts setting: each name to one or more addresses.
func ParseHosts(m map[string][]string) (map[string][]netip.Addr, error) {
	out := make(map[string][]netip.Addr, len(m))
	for name, addrs := range m {
		n := normalizeName(name)
		if err := checkName(n); err != nil {
			return nil, err
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("%s: no address", name)
		}
		for _, s := range addrs {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%s: %q is not an IP address", name, s)
			}
			out[n] = append(out[n], a.Unmap())
		}
	}
	return out, nil
}

func normalizeName(host string) string {
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

// Decision is the outcome of Decide.
type Decision struct {
	// Reason is empty when the destination is allowed.
	Reason Reason
	// Detail says which rule or address decided a refusal.
	Detail string
	// Addrs are where an allowed connection goes: every one checked.
	Addrs []netip.AddrPort
}

// Allowed reports whether the destination is allowed.
func (d Decision) Allowed() bool { return d.Reason == "" }

func refuse(r Reason, format string, a ...any) Decision {
	return Decision{Reason: r, Detail: fmt.Sprintf(format, a...)}
}

// Decide decides a connection to host (a name or an IP literal) on port. A name is
// checked against the deny list, then the allow list, then resolved by res, and every
// address it resolves to is checked again: a deny prefix refuses it; an internal address
// (internalRanges, or one of extraInternal: the host's own addresses, the sandboxes'
// network) is refused unless an allow prefix names it. One refused address refuses the
// whole name, so a name cannot lead around the rules by resolving to several addresses.
// An IP literal is allowed only by an allow prefix.
func (p *Policy) Decide(ctx context.Context, res Resolver, extraInternal []netip.Prefix, host string, port uint16) Decision {
	if port == 0 {
		return refuse(ReasonBadRequest, "no port")
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		if a.Zone() != "" {
			return refuse(ReasonBadRequest, "an address with a zone")
		}
		a = a.Unmap()
		if d := p.checkAddr(a, port, extraInternal, false); !d.Allowed() {
			return d
		}
		return Decision{Addrs: []netip.AddrPort{netip.AddrPortFrom(a, port)}}
	}
	name := normalizeName(host)
	if err := checkName(name); err != nil {
		return refuse(ReasonBadRequest, "%v", err)
	}
	for _, r := range p.deny {
		if r.matchName(name, port) {
			return refuse(ReasonDenied, "deny rule %s", r)
		}
	}
	allowed := false
	for _, r := range p.allow {
		if r.matchName(name, port) {
			allowed = true
			break
		}
	}
	if !allowed {
		return refuse(ReasonNotAllowed, "no allow rule names %s port %d", name, port)
	}
	addrs, err := res.LookupNetIP(ctx, "ip", name)
	if err != nil || len(addrs) == 0 {
		return refuse(ReasonUnresolved, "%s does not resolve", name)
	}
	out := make([]netip.AddrPort, 0, len(addrs))
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if d := p.checkAddr(a, port, extraInternal, true); !d.Allowed() {
			d.Detail = name + " resolves to " + d.Detail
			return d
		}
		out = append(out, netip.AddrPortFrom(a, port))
	}
	return Decision{Addrs: out}
}

// checkAddr decides one address: deny prefixes first, then allow prefixes, then the
// internal ranges. byName says a name rule allowed the name it came from.
func (p *Policy) checkAddr(a netip.Addr, port uint16, extraInternal []netip.Prefix, byName bool) Decision {
	for _, r := range p.deny {
		if r.matchAddr(a, port) {
			return refuse(ReasonDenied, "%s (deny rule %s)", a, r)
		}
	}
	for _, r := range p.allow {
		if r.matchAddr(a, port) {
			return Decision{}
		}
	}
	if IsInternal(a, extraInternal) {
		return refuse(ReasonInternal, "%s, an internal address", a)
	}
	if !byName {
		return refuse(ReasonNotAllowed, "no allow prefix holds %s port %d", a, port)
	}
	return Decision{}
}

// IsInternal reports whether a is an internal address: one of internalRanges or of extra.
func IsInternal(a netip.Addr, extra []netip.Prefix) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsPrivate() || a.IsUnspecified() || a.IsMulticast() {
		return true
	}
	for _, p := range internalRanges {
		if p.Contains(a) {
			return true
		}
	}
	for _, p := range extra {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
