package egress

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseRule(t *testing.T) {
	good := []string{"pypi.org", "PyPI.org.", "pypi.org:443", "*.githubusercontent.com", "*",
		"*:443", "203.0.113.0/24", "203.0.113.0/24:443", "203.0.113.7", "203.0.113.7:8080",
		"2001:db8::/32", "[2001:db8::/32]:443", "[::1]:80", "::1", "under_score.example"}
	for _, s := range good {
		if _, err := ParseRule(s); err != nil {
			t.Errorf("ParseRule(%q): %v", s, err)
		}
	}
	bad := map[string]string{
		"":                   "empty",
		"   ":                "empty",
		"pypi.org:0":         "port",
		"pypi.org:70000":     "port",
		"pypi.org:http":      "port",
		"203.0.113.5/24":     "bits set",
		"203.0.113.0/33":     "address prefix",
		"*.com":              "top-level",
		"foo*.example.com":   "wildcard",
		"a.*.example.com":    "wildcard",
		"exa mple.com":       "host name",
		"-bad.example.com":   "host name",
		"a..b":               "host name",
		"[2001:db8::/32]443": "port",
		"[::1":               "without ]",
		"fe80::1%eth0":       "zone",
	}
	for s, want := range bad {
		_, err := ParseRule(s)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRule(%q) = %v, want an error saying %q", s, err, want)
		}
	}
}

func TestNewPolicyNamesEveryBadRule(t *testing.T) {
	_, err := NewPolicy([]string{"pypi.org", "*.com", "10.0.0.1/8"}, []string{"ok.example", "x:0"})
	if err == nil {
		t.Fatal("NewPolicy accepted bad rules")
	}
	for _, want := range []string{`egress.allow[1] "*.com"`, `egress.allow[2] "10.0.0.1/8"`, `egress.deny[1] "x:0"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func TestDecide(t *testing.T) {
	p, err := NewPolicy(
		[]string{"pypi.org", "*.pythonhosted.org:443", "lan.example", "127.0.0.1/32:8080", "203.0.113.0/24:443", "rebind.example", "multi.example", "private.example", "metadata.example"},
		[]string{"evil.pythonhosted.org", "203.0.113.66/32"})
	if err != nil {
		t.Fatal(err)
	}
	res := fakeResolver{
		"pypi.org":               addrs("198.51.100.10"),
		"files.pythonhosted.org": addrs("198.51.100.11", "::ffff:198.51.100.12"),
		"lan.example":            addrs("127.0.0.1"),
		"rebind.example":         addrs("198.51.100.13", "192.168.1.1"),
		"multi.example":          addrs("203.0.113.66"),
		"private.example":        addrs("10.1.2.3"),
		"metadata.example":       addrs("169.254.169.254"),
		"evil.pythonhosted.org":  addrs("198.51.100.14"),
		"sandbox-net.example":    addrs("172.30.0.5"),
	}
	hostNet := []netip.Prefix{netip.MustParsePrefix("198.51.100.99/32")}
	cases := []struct {
		host string
		port uint16
		want Reason
	}{
		{"pypi.org", 443, ""},
		{"PYPI.ORG.", 80, ""},
		{"www.pypi.org", 443, ReasonNotAllowed},
		{"files.pythonhosted.org", 443, ""},
		{"files.pythonhosted.org", 80, ReasonNotAllowed},
		{"pythonhosted.org", 443, ReasonNotAllowed},
		{"evil.pythonhosted.org", 443, ReasonDenied},
		{"lan.example", 443, ReasonInternal}, // loopback, and the allow prefix is :8080 only
		{"lan.example", 8080, ""},            // named by an allow prefix
		{"127.0.0.1", 8080, ""},              // raw address in an allow prefix
		{"127.0.0.1", 8081, ReasonInternal},
		{"203.0.113.7", 443, ""},
		{"203.0.113.66", 443, ReasonDenied},      // deny prefix first
		{"multi.example", 443, ReasonDenied},     // a name resolving into a deny prefix
		{"198.51.100.10", 443, ReasonNotAllowed}, // raw address no prefix allows
		{"rebind.example", 443, ReasonInternal},  // one internal address refuses the name
		{"private.example", 443, ReasonInternal},
		{"metadata.example", 80, ReasonInternal},
		{"169.254.169.254", 80, ReasonInternal},
		{"[::1]", 80, ReasonInternal},
		{"::ffff:10.0.0.1", 80, ReasonInternal},
		{"unlisted.example", 443, ReasonNotAllowed},
		{"pypi.org", 0, ReasonBadRequest},
		{"bad host", 80, ReasonBadRequest},
	}
	for _, c := range cases {
		d := p.Decide(context.Background(), res, hostNet, c.host, c.port)
		if d.Reason != c.want {
			t.Errorf("Decide(%s, %d) = %q (%s), want %q", c.host, c.port, d.Reason, d.Detail, c.want)
		}
		if d.Allowed() && len(d.Addrs) == 0 {
			t.Errorf("Decide(%s, %d) allowed with no address", c.host, c.port)
		}
	}
	// An allowed name whose resolver fails is refused, and the host's own addresses are
	// internal.
	p2, _ := NewPolicy([]string{"*"}, nil)
	if d := p2.Decide(context.Background(), res, hostNet, "nowhere.example", 443); d.Reason != ReasonUnresolved {
		t.Errorf("unresolvable name: %q", d.Reason)
	}
	res["host.example"] = addrs("198.51.100.99")
	if d := p2.Decide(context.Background(), res, hostNet, "host.example", 443); d.Reason != ReasonInternal {
		t.Errorf("the host's own address: %q", d.Reason)
	}
	if d := p2.Decide(context.Background(), res, hostNet, "sandbox-net.example", 443); d.Reason != ReasonInternal {
		t.Errorf("another sandbox's address: %q", d.Reason)
	}
	// Addresses are dialled as decided: v4-mapped ones unmapped.
	d := p.Decide(context.Background(), res, nil, "files.pythonhosted.org", 443)
	if len(d.Addrs) != 2 || d.Addrs[1].String() != "198.51.100.12:443" {
		t.Errorf("addresses %v", d.Addrs)
	}
}

func TestDenialsRingIsBounded(t *testing.T) {
	var d denials
	for i := range DenialsPerChat + 5 {
		d.add("c", Denial{SessionID: "s", Destination: string(rune('a' + i%26)), Detail: strings.Repeat("x", i)})
	}
	got := d.list("c", "s")
	if len(got) != DenialsPerChat {
		t.Fatalf("%d denials kept, want %d", len(got), DenialsPerChat)
	}
	if len(got[0].Detail) != DenialsPerChat+4 || len(got[len(got)-1].Detail) != 5 {
		t.Errorf("order: newest %d, oldest %d", len(got[0].Detail), len(got[len(got)-1].Detail))
	}
	if n := len(d.list("c", "other")); n != 0 {
		t.Errorf("another session's list has %d", n)
	}
}
