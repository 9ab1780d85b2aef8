// Package egress provides the controlled network egress of sandboxes: the rules a profile
// allows and denies destinations with (Policy), the decision on one destination
// (Policy.Decide: names checked against the lists, then resolved, and every address
// checked again), and the HTTP/HTTPS proxy that applies them to the sandbox each
// connection comes from (Proxy), identified by its address on the sandboxes' network.
package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Rule is one entry of an allow or deny list: a host name (pypi.org), a wildcard suffix
// (*.githubusercontent.com, any name below it but not the suffix itself), "*" (any name),
// or an address prefix (203.0.113.0/24, a bare address for one); each with an optional
// port (pypi.org:443, 203.0.113.0/24:443, [2001:db8::/32]:443). Port 0: any port.
type Rule struct {
	text   string
	name   string // exact name, or the suffix (".example.com") of a wildcard, or "*"
	prefix netip.Prefix
	port   uint16
}

// String is the rule as written.
func (r Rule) String() string { return r.text }

func (r Rule) isName() bool { return r.name != "" }

func (r Rule) portMatches(port uint16) bool { return r.port == 0 || r.port == port }

// matchName reports whether the rule names host (normalized) on port.
func (r Rule) matchName(host string, port uint16) bool {
	if !r.isName() || !r.portMatches(port) {
		return false
	}
	switch {
	case r.name == "*":
		return true
	case r.name[0] == '.':
		return strings.HasSuffix(host, r.name) && len(host) > len(r.name)
	default:
		return host == r.name
	}
}

// matchAddr reports whether the rule's prefix holds addr on port.
func (r Rule) matchAddr(addr netip.Addr, port uint16) bool {
	return !r.isName() && r.portMatches(port) && r.prefix.Contains(addr)
}

// ParseRule reads one rule. Its error says what is wrong with it.
func ParseRule(s string) (Rule, error) {
	text := s
	s = strings.TrimSpace(s)
	if s == "" {
		return Rule{}, errors.New("empty rule")
	}
	r := Rule{text: text}
	host, port, err := splitPort(s)
	if err != nil {
		return Rule{}, err
	}
	r.port = port
	if strings.Contains(host, "/") {
		p, err := netip.ParsePrefix(host)
		if err != nil {
			return Rule{}, fmt.Errorf("%q is not an address prefix such as 203.0.113.0/24", host)
		}
		if p.Addr().Zone() != "" {
			return Rule{}, errors.New("an address prefix has no zone")
		}
		if m := p.Masked(); m != p {
			return Rule{}, fmt.Errorf("%s has bits set past its length (did you mean %s?)", p, m)
		}
		r.prefix = unmapPrefix(p)
		return r, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return Rule{}, errors.New("an address has no zone")
		}
		a = a.Unmap()
		r.prefix = netip.PrefixFrom(a, a.BitLen())
		return r, nil
	}
	name := strings.ToLower(host)
	switch {
	case name == "*":
		r.name = "*"
		return r, nil
	case strings.HasPrefix(name, "*."):
		suffix := name[2:]
		if err := checkName(suffix); err != nil {
			return Rule{}, err
		}
		if !strings.Contains(suffix, ".") {
			return Rule{}, fmt.Errorf("*.%s would match a whole top-level domain", suffix)
		}
		r.name = "." + suffix
		return r, nil
	case strings.Contains(name, "*"):
		return Rule{}, errors.New("a wildcard may only stand alone (*) or as the first label (*.example.com)")
	}
	if err := checkName(name); err != nil {
		return Rule{}, err
	}
	r.name = strings.TrimSuffix(name, ".")
	return r, nil
}

// splitPort cuts an optional ":port" off s: "host:443", "1.2.3.0/24:443", "[::/0]:443".
// A bare IPv6 address or prefix (more than one colon, no brackets) has no port.
func splitPort(s string) (string, uint16, error) {
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return "", 0, errors.New("a [ without ]")
		}
		host, rest := s[1:end], s[end+1:]
		if rest == "" {
			return host, 0, nil
		}
		if !strings.HasPrefix(rest, ":") {
			return "", 0, fmt.Errorf("%q after ] is not a :port", rest)
		}
		p, err := parsePort(rest[1:])
		return host, p, err
	}
	if strings.Count(s, ":") != 1 {
		return s, 0, nil // no port, or an IPv6 address or prefix without brackets
	}
	host, ps, _ := strings.Cut(s, ":")
	p, err := parsePort(ps)
	return host, p, err
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

// checkName checks a host name (lower case, one trailing dot allowed): labels of
// letters, digits, "-" and "_", none empty, none over 63 characters, none starting or
// ending with "-"; 253 characters in all.
func checkName(name string) error {
	n := strings.TrimSuffix(name, ".")
	if n == "" || len(n) > 253 {
		return fmt.Errorf("%q is not a host name", name)
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q is not a host name (label %q)", name, label)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q is not a host name (%q in label %q)", name, c, label)
			}
		}
	}
	return nil
}

func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// Policy is a profile's egress rules, parsed: what its sandboxes may reach through the
// proxy. It is immutable, so safe for concurrent use.
type Policy struct {
	allow, deny []Rule
}

// NewPolicy parses the allow and deny lists of a profile. The error names every wrong
// rule by its list and index and says what is wrong with it.
func NewPolicy(allow, deny []string) (*Policy, error) {
	var problems []error
	parse := func(list string, rules []string) []Rule {
		out := make([]Rule, 0, len(rules))
		for i, s := range rules {
			r, err := ParseRule(s)
			if err != nil {
				problems = append(problems, fmt.Errorf("egress.%s[%d] %q: %w", list, i, s, err))
				continue
			}
			out = append(out, r)
		}
		return out
	}
	p := &Policy{allow: parse("allow", allow), deny: parse("deny", deny)}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return p, nil
}

// Allow and Deny return the rules as written.
func (p *Policy) Allow() []string { return texts(p.allow) }

// Deny returns the deny rules as written.
func (p *Policy) Deny() []string { return texts(p.deny) }

func texts(rules []Rule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.text
	}
	return out
}
