package egress

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// upstream is a connection the proxy dialed for a sandbox: it counts the bytes each way
// (reported once, when it closes) and, for a CONNECT tunnel, checks the TLS server name of
// the first record the sandbox sends against the host the tunnel was allowed for.
type upstream struct {
	net.Conn
	sent, received atomic.Int64
	closeOnce      sync.Once
	onClose        func(sent, received int64)

	// sniHost is the tunnel's host (a name, lower case); empty: no check.
	sniHost string
	onSNI   func(sni string) // a mismatch: called once, before the tunnel closes
	mu      sync.Mutex
	checked bool
	hello   []byte // the first record, held until it is whole
	refused bool
}

func (c *upstream) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.received.Add(int64(n))
	return n, err
}

func (c *upstream) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.sniHost == "" || c.checked {
		c.mu.Unlock()
		return c.write(p)
	}
	defer c.mu.Unlock()
	if c.refused {
		return 0, errSNIMismatch
	}
	c.hello = append(c.hello, p...)
	need, ok := recordLen(c.hello)
	switch {
	case !ok && len(c.hello) < 5:
		return len(p), nil // the record's header is not whole yet
	case !ok || len(c.hello) >= maxHello:
		c.checked = true // not TLS (or no sane record): nothing to compare
	case len(c.hello) < need:
		return len(p), nil
	default:
		c.checked = true
		if sni := serverName(c.hello); sni != "" && normalizeName(sni) != c.sniHost {
			c.refused = true
			c.onSNI(sni)
			_ = c.Conn.Close()
			return 0, errSNIMismatch
		}
	}
	held := c.hello
	c.hello = nil
	if _, err := c.write(held); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *upstream) write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.sent.Add(int64(n))
	return n, err
}

func (c *upstream) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		if c.onClose != nil {
			c.onClose(c.sent.Load(), c.received.Load())
		}
	})
	return err
}

// CloseWrite and CloseRead let a tunnel half-close, as it would on a plain TCP connection.
func (c *upstream) CloseWrite() error {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		return tc.CloseWrite()
	}
	return nil
}

// CloseRead closes the reading side.
func (c *upstream) CloseRead() error {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		return tc.CloseRead()
	}
	return nil
}

var errSNIMismatch = errors.New("egress: the TLS server name is not the tunnel's host")

// maxHello bounds what is held while waiting for a ClientHello: one TLS record.
const maxHello = 5 + 1<<14 + 256

// recordLen returns the length of a TLS handshake record starting b (header included);
// ok is false when b does not start one.
func recordLen(b []byte) (int, bool) {
	if len(b) < 5 || b[0] != 0x16 || b[1] != 0x03 {
		return 0, false
	}
	return 5 + int(b[3])<<8 | int(b[4]), true
}

// serverName returns the server name (SNI) of the ClientHello in record, or "" when it
// names none or is no ClientHello: crypto/tls reads it, and the handshake stops there.
func serverName(record []byte) string {
	var sni string
	conf := &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		sni = h.ServerName
		return nil, errStop
	}}
	_ = tls.Server(helloConn{r: bytes.NewReader(record)}, conf).Handshake()
	return sni
}

var errStop = errors.New("stop")

// helloConn feeds a recorded ClientHello to crypto/tls and swallows its answer.
type helloConn struct {
	net.Conn
	r io.Reader
}

func (c helloConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c helloConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c helloConn) Close() error                     { return nil }
func (c helloConn) SetDeadline(time.Time) error      { return nil }
func (c helloConn) SetReadDeadline(time.Time) error  { return nil }
func (c helloConn) SetWriteDeadline(time.Time) error { return nil }
func (c helloConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c helloConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
