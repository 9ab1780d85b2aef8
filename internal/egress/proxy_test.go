package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// startProxy serves a Proxy on loopback whose every connection is the sandbox sb.
func startProxy(t *testing.T, sb Sandbox, res Resolver, mp *metric.MeterProvider) (*Proxy, string) {
	t.Helper()
	p, err := New(Config{
		Identify: func(_ context.Context, a netip.Addr) (Sandbox, error) {
			if !a.IsLoopback() {
				return Sandbox{}, ErrUnknownSandbox
			}
			return sb, nil
		},
		Resolver:      res,
		MeterProvider: mp,
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(l) }()
	t.Cleanup(func() { _ = p.Shutdown(context.Background()); <-done })
	return p, l.Addr().String()
}

func TestProxyRealTraffic(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "plain ok")
	}))
	defer plain.Close()
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "tls ok")
	}))
	defer secure.Close()
	pu, _ := url.Parse(plain.URL)
	su, _ := url.Parse(secure.URL)

	policy, err := NewPolicy([]string{"allowed.test", "private.test", "127.0.0.1/32:" + pu.Port(), "127.0.0.1/32:" + su.Port()},
		[]string{"denied.test"})
	if err != nil {
		t.Fatal(err)
	}
	res := Hosts{Names: map[string][]netip.Addr{
		"allowed.test": addrs("127.0.0.1"),
		"denied.test":  addrs("127.0.0.1"),
		"other.test":   addrs("127.0.0.1"),
		"private.test": addrs("10.20.30.40"),
	}, Next: fakeResolver{}}
	reader := metric.NewManualReader()
	mp := metric.NewMeterProvider(metric.WithReader(reader))
	p, addr := startProxy(t, Sandbox{ChatID: "chat", SessionID: "sess", Policy: policy}, res, mp)

	proxyURL, _ := url.Parse("http://" + addr)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL),
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(u string) (int, string) {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := get("http://allowed.test:" + pu.Port() + "/"); code != 200 || body != "plain ok" {
		t.Errorf("plain HTTP to an allowed name: %d %q", code, body)
	}
	if code, body := get("https://allowed.test:" + su.Port() + "/"); code != 200 || body != "tls ok" {
		t.Errorf("HTTPS (CONNECT) to an allowed name: %d %q", code, body)
	}
	refusals := []struct{ url, reason string }{
		{"http://other.test:" + pu.Port() + "/", "not_allowed"},
		{"http://denied.test:" + pu.Port() + "/", "denied"},
		{"http://198.51.100.1:" + pu.Port() + "/", "not_allowed"},
		{"http://private.test:" + pu.Port() + "/", "internal"},
		{"http://169.254.169.254/latest/meta-data/", "internal"},
		{"http://127.0.0.1:1/", "internal"},
	}
	for _, r := range refusals {
		code, body := get(r.url)
		if code != http.StatusForbidden || !strings.Contains(body, "("+r.reason+")") {
			t.Errorf("GET %s: %d %q, want 403 (%s)", r.url, code, body, r.reason)
		}
	}
	// CONNECT refusals are 403 too.
	if _, err := c.Get("https://other.test:" + su.Port() + "/"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("CONNECT to a name not listed: %v", err)
	}

	// A tunnel allowed for allowed.test whose TLS names another server is cut.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "CONNECT allowed.test:%s HTTP/1.1\r\nHost: allowed.test:%s\r\n\r\n", su.Port(), su.Port())
	br := bufio.NewReader(conn)
	line, _ := br.ReadString('\n')
	if !strings.Contains(line, " 200 ") {
		t.Fatalf("CONNECT: %q", line)
	}
	for l, _ := br.ReadString('\n'); l != "\r\n" && l != ""; l, _ = br.ReadString('\n') {
	}
	tc := tls.Client(conn, &tls.Config{ServerName: "elsewhere.test", InsecureSkipVerify: true})
	if err := tc.Handshake(); err == nil {
		t.Error("a TLS handshake naming another server went through the tunnel")
	}
	conn.Close()

	got := p.Denials("chat", "sess")
	if len(got) != len(refusals)+2 {
		t.Fatalf("%d denials listed, want %d: %+v", len(got), len(refusals)+2, got)
	}
	if got[0].Reason != ReasonSNIMismatch || got[len(got)-1].Destination != "other.test:"+pu.Port() {
		t.Errorf("denials, newest first: %+v", got)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				for _, kv := range dp.Attributes.ToSlice() {
					counts[m.Name+"/"+kv.Value.AsString()] += dp.Value
				}
			}
		}
	}
	want := map[string]int64{"sandbox.egress.denied.total/not_allowed": 3, "sandbox.egress.denied.total/denied": 1,
		"sandbox.egress.denied.total/internal": 3, "sandbox.egress.denied.total/sni_mismatch": 1}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, counts[k], v, counts)
		}
	}
	if counts["sandbox.egress.bytes/received"] < int64(len("plain ok")+len("tls ok")) || counts["sandbox.egress.bytes/sent"] == 0 {
		t.Errorf("bytes: %v", counts)
	}
}

func TestProxyRefusesUnknownSources(t *testing.T) {
	p, err := New(Config{Identify: func(context.Context, netip.Addr) (Sandbox, error) {
		return Sandbox{}, ErrUnknownSandbox
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	proxyURL, _ := url.Parse(srv.URL)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	resp, err := c.Get("http://example.test/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "unknown_sandbox") {
		t.Errorf("%d %q", resp.StatusCode, b)
	}
}
