package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/google/uuid"

	sbclient "github.com/sandboxd/sandboxd/client"
)

// egressWorld is a sandboxd with three profiles: the default one (network none),
// "net" (network egress, allowed to reach the bench's download server through the
// proxy by the name bench.test) and "direct" (Docker's default bridge: the same server
// without a proxy, the throughput baseline), and that server.
type egressWorld struct {
	w         *world
	srv       *child
	api       *sbclient.Client
	data      net.Listener // the download server, on every address of the host
	dataPort  string
	proxyPort int
}

// egressDownloadBytes is the size of the download through the proxy (-quick: 10 MB).
func (b *bench) egressDownloadBytes() int64 {
	if b.opts.Quick {
		return 10 << 20
	}
	return 100 << 20
}

func (b *bench) newEgressWorld(ctx context.Context) (*egressWorld, error) {
	w, err := b.newWorld(ctx, sqliteRegistry(), "egress")
	if err != nil {
		return nil, err
	}
	ew := &egressWorld{w: w}
	// The download server: size bytes of zeros at /<size>, on every address (the
	// proxy reaches it on loopback, the direct sandbox at the default bridge's gateway).
	ew.data, err = net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		w.drop()
		return nil, err
	}
	ew.dataPort = strconv.Itoa(ew.data.Addr().(*net.TCPAddr).Port)
	go func() {
		_ = http.Serve(ew.data, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			n, err := strconv.ParseInt(r.URL.Path[1:], 10, 64)
			if err != nil || n < 0 || n > 1<<30 {
				http.Error(rw, "GET /<bytes>", http.StatusBadRequest)
				return
			}
			rw.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			chunk := make([]byte, 64<<10)
			for n > 0 {
				k := min(n, int64(len(chunk)))
				if _, err := rw.Write(chunk[:k]); err != nil {
					return
				}
				n -= k
			}
		}))
	}()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ew.close()
		return nil, err
	}
	ew.proxyPort = l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := fmt.Sprintf(`
egress:
  proxy_port: %d
  hosts: {bench.test: [127.0.0.1]}
agents:
  profiles:
    net:
      network: egress
      egress: {allow: [bench.test, "127.0.0.1/32:%s"]}
    direct:
      network: bridge
`, ew.proxyPort, ew.dataPort)
	path := filepath.Join(w.dir, "sandboxd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		ew.close()
		return nil, err
	}
	ew.srv, ew.api, err = b.start(ctx, w, "SANDBOXD_TTL=1h", "SANDBOXD_CONFIG="+path)
	if err != nil {
		ew.close()
		return nil, err
	}
	return ew, nil
}

// egress runs the egress scenarios on a sandboxd of their own (SQLite).
func (b *bench) egress(ctx context.Context) error {
	fmt.Fprintln(b.log, "egress:")
	ew, err := b.newEgressWorld(ctx)
	if err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	defer ew.close()
	if err := b.egressCreate(ctx, ew); err != nil {
		return fmt.Errorf("egress create: %w\nsandboxd's last log lines:\n%s", err, ew.srv.logTail())
	}
	if err := b.egressThroughput(ctx, ew); err != nil {
		return fmt.Errorf("egress throughput: %w\nsandboxd's last log lines:\n%s", err, ew.srv.logTail())
	}
	err = ew.srv.stop()
	ew.srv = nil
	return err
}

func (ew *egressWorld) close() {
	if ew.srv != nil {
		ew.srv.kill()
	}
	ew.data.Close()
	ew.w.drop()
}

// egressCreate: creates of a sandbox of an egress profile (on the egress network, with
// the proxy's variables) against creates of the default profile (network none) through
// the same sandboxd, alternating, each proven exec-ready right after (untimed).
func (b *bench) egressCreate(ctx context.Context, ew *egressWorld) error {
	var egress, none []time.Duration
	for i := range b.opts.N + 1 { // the first pair warms up and is not recorded
		for _, agent := range []string{"net", ""} {
			chat := uuid.NewString()
			t := time.Now()
			s, _, err := ew.api.Create(ctx, chat, sbclient.CreateBody{AgentID: agent})
			if err != nil {
				return fmt.Errorf("create (agent %q): %w", agent, err)
			}
			took := time.Since(t)
			if err := b.provenReady(ctx, "sandbox", s.ContainerID); err != nil {
				return err
			}
			if _, err := ew.api.Delete(ctx, chat); err != nil {
				return err
			}
			if i == 0 {
				continue
			}
			if agent == "net" {
				egress = append(egress, took)
			} else {
				none = append(none, took)
			}
		}
	}
	base := "create of a network none sandbox via sandboxd"
	b.add(newRow("sqlite", "egress create p50 (answered, exec-ready)", "ms", quantile(egress, 0.5), quantile(none, 0.5), base, len(egress)))
	b.rows[len(b.rows)-1].Note = "an egress profile's sandbox joins the instance's internal egress network and gets the proxy's variables; creates alternate with network none ones"
	b.add(newRow("sqlite", "egress create p99 (answered, exec-ready)", "ms", quantile(egress, 0.99), quantile(none, 0.99), base, len(egress)))
	return nil
}
