package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	dockerclient "github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
	"github.com/sandboxd/sandboxd/internal/testing/waitfor"
)

// freePort returns a TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// greeter listens on addr and writes "hello <tag>" to every connection.
func greeter(t *testing.T, addr, tag string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello %s\n", tag)
			c.Close()
		}
	}()
	return l
}

// hostAddr is an address of this host that is not loopback (the sandboxes' default route
// leads to the host: without the guard they could reach it).
func hostAddr(t *testing.T) netip.Addr {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() && !strings.HasPrefix(p.Addr().String(), "172.") {
			return p.Addr()
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no non-loopback IPv4 address on this host, and CI=true")
	}
	t.Skip("no non-loopback IPv4 address on this host")
	return netip.Addr{}
}

// Profiles with network egress, through the binary and the real engine, with real
// traffic to servers this test starts on the host: an allowed name is reached over HTTP and
// HTTPS (CONNECT) from inside the sandbox, and every other destination is refused, logged,
// counted and listed by the egress route; nothing is reached without the proxy, neither
// another sandbox, nor the host's services (the API, the engine's ports, a server on every
// address); a warm-pool sandbox's identity moves to the chat that claims it; a restart
// re-attaches; the last stop leaves no network or firewall state.
func TestEgress(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		// The egress bridge's firewall guard needs root (iptables).
		if os.Getenv("CI") == "true" {
			t.Fatal("the egress test needs root (iptables) and CI=true")
		}
		t.Skip("the egress test needs root (iptables)")
	}
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "plain ok from "+r.Host)
	}))
	defer plain.Close()
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "tls ok")
	}))
	defer secure.Close()
	pu, _ := url.Parse(plain.URL)
	su, _ := url.Parse(secure.URL)
	// A server on every address of the host: reachable from the host at the sandboxes'
	// gateway, never from a sandbox.
	everywhere := greeter(t, "0.0.0.0:0", "everywhere")
	evPort := everywhere.Addr().(*net.TCPAddr).Port
	proxyPort := freePort(t)

	w := newWorld(t)
	cfgFile := filepath.Join(w.dataDir, "sandboxd.yaml")
	yaml := fmt.Sprintf(`
tenants:
  other:
    tokens: [other-tenant-token]
egress:
  proxy_port: %d
  hosts:
    allowed.test: [127.0.0.1]
    denied.test: [127.0.0.1]
    other.test: [127.0.0.1]
    private.test: [10.20.30.40]
    metadata.test: [169.254.169.254]
agents:
  profiles:
    net:
      network: egress
      egress:
        allow: [allowed.test, private.test, metadata.test, "127.0.0.1/32:%s", "127.0.0.1/32:%s"]
        deny: [denied.test]
      pool: {min: 1}
`, proxyPort, pu.Port(), su.Port())
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	// The API on every address, so that the sandboxes' gateway leads to it too.
	w.cfg.Settings = append(w.cfg.Settings, "SANDBOXD_CONFIG="+cfgFile, "SANDBOXD_LISTEN=0.0.0.0:0")
	// Whatever this test leaves when it fails: its containers, then its network and guard.
	t.Cleanup(func() {
		ctx := context.Background()
		for _, id := range dockertest.Containers(t, w.docker, dockertest.LabelInstance+"="+w.instance) {
			dockertest.Remove(t, w.docker, id)
		}
		_, _ = w.docker.NetworkRemove(ctx, docker.EgressNetworkName(w.instance), dockerclient.NetworkRemoveOptions{})
		_ = docker.Unguard(ctx, w.instance)
	})
	srv := w.start()
	ctx := context.Background()
	apiPort := srv.base[strings.LastIndex(srv.base, ":")+1:]

	netName := docker.EgressNetworkName(w.instance)
	nres, err := w.docker.NetworkInspect(ctx, netName, dockerclient.NetworkInspectOptions{})
	if err != nil {
		t.Fatalf("the egress network: %v", err)
	}
	if !nres.Network.Internal || nres.Network.Options["com.docker.network.bridge.enable_icc"] != "false" {
		t.Fatalf("the egress network is not internal without icc: %+v", nres.Network)
	}
	gw := nres.Network.IPAM.Config[0].Gateway.String()
	if !docker.GuardInPlace(ctx, w.instance) {
		t.Fatal("no firewall guard on the egress bridge")
	}
	// From the host, the gateway leads to the API and to the server on every address:
	// what the sandboxes must not reach is there.
	for _, port := range []string{apiPort, fmt.Sprint(evPort)} {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(gw, port), 3*time.Second)
		if err != nil {
			t.Fatalf("from the host, %s:%s: %v", gw, port, err)
		}
		c.Close()
	}

	// The pool's sandbox is on the network before any chat claims it.
	waitfor.True(t, time.Minute, "a pooled egress sandbox", func() bool { return len(w.pooled()) == 1 })
	pooledID := w.pooled()[0]
	if !onNetwork(t, w, pooledID, netName) {
		t.Fatal("the pooled sandbox is not on the egress network")
	}

	chatA, chatB, chatC := newChat(), newChat(), newChat()
	a, _, err := srv.api.Create(ctx, chatA, client.CreateBody{AgentID: "net"})
	if err != nil {
		t.Fatal(err)
	}
	if a.ContainerID != pooledID {
		t.Fatalf("chat A did not claim the pooled sandbox")
	}
	_, _, err = srv.api.Create(ctx, chatB, client.CreateBody{AgentID: "net"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.api.Create(ctx, chatC, client.CreateBody{}); err != nil {
		t.Fatal(err)
	}
	sh := func(chat, script string) client.ExecResult {
		t.Helper()
		res, err := srv.api.Exec(ctx, chat, client.ExecBody{Cmd: []string{"sh", "-c", script}, TimeoutS: 60})
		if err != nil {
			t.Fatalf("exec %q: %v", script, err)
		}
		return res
	}

	// The proxy's variables are set; the default profile's sandbox has none.
	if res := sh(chatA, "echo $HTTP_PROXY $https_proxy $NO_PROXY"); !strings.Contains(res.Stdout, "http://"+gw+":"+fmt.Sprint(proxyPort)) || !strings.Contains(res.Stdout, "localhost") {
		t.Errorf("proxy variables: %q", res.Stdout)
	}
	if res := sh(chatC, "echo x${HTTP_PROXY}x; wget -q -O - http://allowed.test:"+pu.Port()+"/ 2>&1"); !strings.HasPrefix(res.Stdout, "xx") || strings.Contains(res.Stdout, "plain ok") {
		t.Errorf("network none: %q", res.Stdout)
	}

	// Names are the proxy's to resolve: the sandbox's own DNS answers nothing.
	if res := sh(chatA, "timeout 10 nslookup allowed.test 2>&1; echo exit=$?"); strings.Contains(res.Stdout, "exit=0") {
		t.Errorf("the sandbox resolved a name itself: %q", res.Stdout)
	}

	// Allowed: plain HTTP with busybox wget through the proxy, HTTPS through CONNECT
	// (busybox has no TLS client: nc speaks CONNECT, then plain HTTP into the tunnel, which
	// the TLS server answers with its 400: the tunnel reached it).
	if res := sh(chatA, "wget -q -O - http://allowed.test:"+pu.Port()+"/"); res.ExitCode != 0 || res.Stdout != "plain ok from allowed.test:"+pu.Port() {
		t.Errorf("HTTP to an allowed name: %+v", res)
	}
	connect := fmt.Sprintf(`printf 'CONNECT allowed.test:%s HTTP/1.1\r\nHost: allowed.test:%s\r\n\r\nGET / HTTP/1.0\r\n\r\n' | timeout 10 nc %s %d`, su.Port(), su.Port(), gw, proxyPort)
	if res := sh(chatA, connect); !strings.Contains(res.Stdout, " 200 ") || !strings.Contains(res.Stdout, "HTTP request to an HTTPS server") {
		t.Errorf("CONNECT to an allowed name: %+v", res)
	}

	// Refused: a name not listed, a denied one, a raw address, names resolving to a
	// private and to the metadata address; and a CONNECT to a name not listed.
	refused := []struct{ url, reason string }{
		{"http://other.test:" + pu.Port() + "/", "not_allowed"},
		{"http://denied.test:" + pu.Port() + "/", "denied"},
		{"http://198.51.100.7/", "not_allowed"},
		{"http://private.test/", "internal"},
		{"http://metadata.test/latest/meta-data/", "internal"},
	}
	for _, r := range refused {
		if res := sh(chatA, "wget -q -O - "+r.url+" 2>&1; echo exit=$?"); strings.Contains(res.Stdout, "ok") || !strings.Contains(res.Stdout, "403") {
			t.Errorf("wget %s: %q, want 403", r.url, res.Stdout)
		}
	}
	badConnect := fmt.Sprintf(`printf 'CONNECT other.test:%s HTTP/1.1\r\n\r\n' | timeout 10 nc %s %d`, su.Port(), gw, proxyPort)
	if res := sh(chatA, badConnect); !strings.Contains(res.Stdout, " 403 ") {
		t.Errorf("CONNECT to a name not listed: %q", res.Stdout)
	}

	// Without the proxy: no route anywhere. The host's servers (the API, the server on every
	// address, the engine's TCP ports) at the gateway and at the host's own address, and
	// the test server's port: nothing answers.
	host := hostAddr(t).String()
	var probes []string
	for _, ip := range []string{gw, host} {
		for _, port := range []string{apiPort, fmt.Sprint(evPort), "2375", "2376", pu.Port()} {
			probes = append(probes, ip+" "+port)
		}
	}
	script := "for p in '" + strings.Join(probes, "' '") + "'; do echo \"== $p\"; timeout 2 nc $p </dev/null 2>&1; done; timeout 4 wget -Y off -q -O - http://" + host + ":" + fmt.Sprint(evPort) + "/ 2>&1"
	if res := sh(chatA, script); strings.Contains(res.Stdout, "hello") || strings.Contains(res.Stdout, "HTTP/") || strings.Contains(res.Stdout, "plain ok") {
		t.Errorf("a sandbox reached a host service without the proxy:\n%s", res.Stdout)
	}

	// Sandbox to sandbox: B listens (on its network address, as B itself sees), A does
	// not reach it.
	bIP := regexp.MustCompile(`inet (\d+\.\d+\.\d+\.\d+)`).FindStringSubmatch(sh(chatB, "ip -4 addr show eth0").Stdout)
	if bIP == nil {
		t.Fatal("no address for sandbox B")
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = srv.api.Exec(ctx, chatB, client.ExecBody{Cmd: []string{"sh", "-c",
			"for i in 1 2; do echo hi-from-b | timeout 15 nc -l -p 8000; done"}, TimeoutS: 40})
	}()
	waitfor.True(t, 20*time.Second, "B listens (reached inside B)", func() bool {
		return strings.Contains(sh(chatB, "timeout 2 nc "+bIP[1]+" 8000 </dev/null 2>&1").Stdout, "hi-from-b")
	})
	if res := sh(chatA, "timeout 4 nc "+bIP[1]+" 8000 </dev/null 2>&1"); strings.Contains(res.Stdout, "hi-from-b") {
		t.Errorf("sandbox A reached sandbox B: %q", res.Stdout)
	}
	wg.Wait()

	// Every refusal is listed for the chat (newest first), logged and counted; another
	// tenant does not see the chat.
	denials, err := srv.api.EgressDenials(ctx, chatA)
	if err != nil {
		t.Fatal(err)
	}
	if len(denials) != len(refused)+1 {
		t.Fatalf("%d denials listed, want %d: %+v", len(denials), len(refused)+1, denials)
	}
	for i, r := range refused {
		d := denials[len(denials)-1-i]
		if d.Reason != r.reason || !strings.Contains(r.url, strings.TrimSuffix(strings.TrimSuffix(d.Destination, ":80"), ":"+pu.Port())) {
			t.Errorf("denial %d: %+v, want %s for %s", i, d, r.reason, r.url)
		}
	}
	if d := denials[0]; d.Reason != "not_allowed" || d.Destination != "other.test:"+su.Port() {
		t.Errorf("the CONNECT's denial: %+v", d)
	}
	if got, err := srv.api.EgressDenials(ctx, chatB); err != nil || len(got) != 0 {
		t.Errorf("chat B's denials: %v %v", got, err)
	}
	other, err := client.New(srv.base, "other-tenant-token", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.EgressDenials(ctx, chatA); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("another tenant listed chat A's denials: %v", err)
	}
	logs := srv.log()
	if !strings.Contains(logs, `"msg":"sandbox_egress_denied"`) || !strings.Contains(logs, `"chat_id":"`+chatA+`"`) {
		t.Errorf("no sandbox_egress_denied record for chat A in the log")
	}
	m := metrics(t, srv)
	for reason, n := range map[string]int{"not_allowed": 3, "denied": 1, "internal": 2} {
		re := regexp.MustCompile(`sandbox_egress_denied_total\{[^}]*reason="` + reason + `"[^}]*\} (\d+)`)
		if got := re.FindStringSubmatch(m); got == nil || got[1] != fmt.Sprint(n) {
			t.Errorf("sandbox_egress_denied_total{reason=%q} = %v, want %d", reason, got, n)
		}
	}
	if !regexp.MustCompile(`sandbox_egress_bytes[_a-z]*\{[^}]*direction="received"[^}]*\} [1-9]`).MatchString(m) {
		t.Errorf("no bytes counted in sandbox_egress_bytes")
	}

	// A restart re-attaches: the sandboxes keep the network, the guard stays meanwhile,
	// and the new process's proxy knows them.
	srv.stop(syscall.SIGTERM)
	if !docker.GuardInPlace(ctx, w.instance) {
		t.Error("the guard went while sandboxes are on the network")
	}
	srv = w.start()
	if res := sh(chatB, "wget -q -O - http://allowed.test:"+pu.Port()+"/"); res.ExitCode != 0 || !strings.Contains(res.Stdout, "plain ok") {
		t.Errorf("after a restart: %+v", res)
	}

	// The last stop, with no sandbox left, removes the network and the guard.
	for _, c := range []string{chatA, chatB, chatC} {
		if _, err := srv.api.Delete(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	srv.stop(syscall.SIGTERM)
	if _, err := w.docker.NetworkInspect(ctx, netName, dockerclient.NetworkInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("the egress network is still there after the last stop: %v", err)
	}
	if docker.GuardInPlace(ctx, w.instance) {
		t.Error("the guard is still there after the last stop")
	}
}

// onNetwork reports whether container id is attached to network name.
func onNetwork(t *testing.T, w *world, id, name string) bool {
	t.Helper()
	res, err := w.docker.ContainerInspect(context.Background(), id, dockerclient.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, ok := res.Container.NetworkSettings.Networks[name]
	return ok
}
