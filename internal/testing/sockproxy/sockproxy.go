// Package sockproxy is a Unix-socket proxy for tests that need a dependency (the Docker
// engine) to go away or to hang without touching the real one, which other tests share:
// it passes connections through to a target socket, and on demand cuts them, refuses new
// ones, or accepts them and never answers.
package sockproxy

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Mode is what the proxy does with a new connection.
type Mode int

const (
	Pass   Mode = iota // pass it through to the target
	Refuse             // close it at once
	Hang               // keep it open and never answer
)

// Proxy listens on a Unix socket of its own. Its methods are safe for concurrent use.
type Proxy struct {
	path   string
	target string
	ln     net.Listener

	mu     sync.Mutex
	mode   Mode
	closed bool                  // stopped: connections are closed as they come
	conns  map[net.Conn]struct{} // every connection open now, both sides
	wg     sync.WaitGroup
}

// Start listens on a fresh socket in front of target (a socket path, or a unix:// URL)
// and stops at the test's cleanup, closing every connection.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	// Unix socket paths are short (108 bytes): not under t.TempDir, whose names are long.
	dir, err := os.MkdirTemp("", "sockproxy")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{path: filepath.Join(dir, "s.sock"), target: strings.TrimPrefix(target, "unix://"), conns: map[net.Conn]struct{}{}}
	if p.ln, err = net.Listen("unix", p.path); err != nil {
		t.Fatal(err)
	}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		_ = p.ln.Close()
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.Cut()
		p.wg.Wait()
		_ = os.RemoveAll(dir)
	})
	return p
}

// Host is the proxy's address as a Docker host: unix://<socket>.
func (p *Proxy) Host() string { return "unix://" + p.path }

// SetMode says what happens to new connections from now on.
func (p *Proxy) SetMode(m Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
}

// Cut closes every connection open now, as an engine that goes away would.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		mode := p.mode
		p.mu.Unlock()
		switch mode {
		case Refuse:
			_ = c.Close()
		case Hang:
			p.track(c)
			p.wg.Go(func() { // read and drop until the connection is cut
				_, _ = io.Copy(io.Discard, c)
				p.untrack(c)
			})
		default:
			p.wg.Go(func() { p.pass(c) })
		}
	}
}

func (p *Proxy) pass(c net.Conn) {
	up, err := net.Dial("unix", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.track(c, up)
	var both sync.WaitGroup
	copyThenClose := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
	}
	both.Go(func() { copyThenClose(up, c) })
	both.Go(func() { copyThenClose(c, up) })
	both.Wait()
	p.untrack(c, up)
}

func (p *Proxy) track(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		if p.closed {
			_ = c.Close()
			continue
		}
		p.conns[c] = struct{}{}
	}
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}
