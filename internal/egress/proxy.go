package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/elazarl/goproxy"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
)

// Sandbox is who a connection comes from, as the runtime knows it by the connection's
// source address on the sandboxes' network.
type Sandbox struct {
	ChatID, SessionID string
	Policy            *Policy
}

// ErrUnknownSandbox is what an Identifier answers for an address no sandbox has (or a
// sandbox no chat has claimed yet, a pooled one).
var ErrUnknownSandbox = errors.New("egress: no sandbox has this address")

// Identifier tells which sandbox has addr on the sandboxes' network. The runtime
// answers from what it made, never from anything the sandbox says.
type Identifier func(ctx context.Context, addr netip.Addr) (Sandbox, error)

// decideTimeout bounds identifying a connection's sandbox and resolving its destination.
const decideTimeout = 15 * time.Second

// DefaultDialTimeout bounds a connection to a destination.
const DefaultDialTimeout = 10 * time.Second

// Config configures a Proxy. Identify is required.
type Config struct {
	Identify Identifier
	// Resolver resolves destinations (nil: net.DefaultResolver).
	Resolver Resolver
	// Internal are addresses refused like the internal ranges besides them: the host's
	// own addresses and the sandboxes' network.
	Internal []netip.Prefix
	// DialTimeout bounds a connection to a destination (default DefaultDialTimeout).
	DialTimeout time.Duration
	// Logger and MeterProvider are optional.
	Logger        *slog.Logger
	MeterProvider metric.MeterProvider
	// Now is the clock of the denials' times (default time.Now).
	Now func() time.Time
}

// Proxy is the HTTP proxy the sandboxes of egress profiles reach the network through:
// plain HTTP requests are checked by their host, HTTPS by the CONNECT target (and the
// TLS server name the sandbox sends in the tunnel must agree). It is built on goproxy;
// every decision is Policy.Decide's, and every connection goes to an address Decide
// checked, never to one resolved again.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	gp      *goproxy.ProxyHttpServer
	denials denials
	denied  metric.Int64Counter
	bytes   metric.Int64Counter
	srv     *http.Server
	// identifying bounds the identifications under way (MaxIdentifying).
	identifying chan struct{}
}

// MaxIdentifying bounds the connections being identified at once; more wait (up to the
// decision's timeout).
const MaxIdentifying = 32

// request is what the proxy knows of one request: who sent it, and what it was allowed.
type request struct {
	sb   Sandbox
	dest string
	dec  Decision
}

// New checks cfg and returns a Proxy; Serve runs it.
func New(cfg Config) (*Proxy, error) {
	if cfg.Identify == nil {
		return nil, errors.New("egress: an Identifier is required")
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = metricnoop.NewMeterProvider()
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger, identifying: make(chan struct{}, MaxIdentifying)}
	meter := cfg.MeterProvider.Meter("github.com/sandboxd/sandboxd/internal/egress")
	var err error
	if p.denied, err = meter.Int64Counter("sandbox.egress.denied.total",
		metric.WithDescription("connections of sandboxes the egress proxy refused, by reason")); err != nil {
		return nil, fmt.Errorf("egress: metric: %w", err)
	}
	if p.bytes, err = meter.Int64Counter("sandbox.egress.bytes",
		metric.WithDescription("bytes of the sandboxes' allowed connections through the egress proxy, by direction (sent, received)")); err != nil {
		return nil, fmt.Errorf("egress: metric: %w", err)
	}
	for _, r := range Reasons { // every label set exported from the start, at 0
		p.denied.Add(context.Background(), 0, metric.WithAttributes(attribute.String("reason", string(r))))
	}
	for _, d := range []string{"sent", "received"} {
		p.bytes.Add(context.Background(), 0, metric.WithAttributes(attribute.String("direction", d)))
	}

	gp := goproxy.NewProxyHttpServer()
	gp.Logger = log.New(io.Discard, "", 0)
	gp.KeepDestinationHeaders = false
	gp.NonproxyHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "sandboxd egress proxy: send proxy requests (absolute URL or CONNECT)", http.StatusBadRequest)
	})
	gp.OnRequest().HandleConnectFunc(p.connect)
	gp.OnRequest().DoFunc(p.plain)
	p.gp = gp
	return p, nil
}

// Handler returns the proxy as an http.Handler (Serve serves it).
func (p *Proxy) Handler() http.Handler { return p.gp }

// Serve serves the proxy on l until Shutdown; it returns http.ErrServerClosed then.
func (p *Proxy) Serve(l net.Listener) error {
	p.srv = &http.Server{Handler: p.gp, ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)}
	return p.srv.Serve(l)
}

// Shutdown stops accepting and waits for the requests in flight (not the tunnels, which
// the server no longer tracks once hijacked) until ctx ends.
func (p *Proxy) Shutdown(ctx context.Context) error {
	if p.srv == nil {
		return nil
	}
	return p.srv.Shutdown(ctx)
}

// Denials returns the recent refused connections of a chat's session (all the chat's
// when sessionID is empty), newest first: at most DenialsPerChat.
func (p *Proxy) Denials(chatID, sessionID string) []Denial {
	return p.denials.list(chatID, sessionID)
}

// decide identifies the sender of r and decides its destination hostport.
func (p *Proxy) decide(r *http.Request, hostport string) request {
	// Not the request's context: a client that half-closes after its CONNECT (nc with
	// its input at an end) cancels it, though its tunnel is still wanted.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), decideTimeout)
	defer cancel()
	req := request{dest: hostport}
	src, err := netip.ParseAddrPort(r.RemoteAddr)
	if err == nil {
		// Identifying asks the runtime (the engine): a sandbox opening connections in a
		// loop must not turn into as many engine calls at once.
		select {
		case p.identifying <- struct{}{}:
			req.sb, err = p.cfg.Identify(ctx, src.Addr().Unmap())
			<-p.identifying
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		req.dec = refuse(ReasonUnknownSandbox, "source %s: %v", r.RemoteAddr, err)
		return req
	}
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		req.dec = refuse(ReasonBadRequest, "destination %q has no port", hostport)
		return req
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		req.dec = refuse(ReasonBadRequest, "destination %q: bad port", hostport)
		return req
	}
	if req.sb.Policy == nil {
		req.dec = refuse(ReasonNotAllowed, "the sandbox's profile allows no egress")
		return req
	}
	req.dec = req.sb.Policy.Decide(ctx, p.cfg.Resolver, p.cfg.Internal, host, uint16(port))
	return req
}

// refused logs, counts and remembers a refused connection.
func (p *Proxy) refused(ctx context.Context, req request) {
	p.denied.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", string(req.dec.Reason))))
	p.log.LogAttrs(ctx, slog.LevelWarn, "sandbox_egress_denied",
		slog.String("chat_id", req.sb.ChatID), slog.String("session_id", req.sb.SessionID),
		slog.String("destination", req.dest), slog.String("reason", string(req.dec.Reason)),
		slog.String("detail", req.dec.Detail))
	if req.sb.ChatID != "" {
		p.denials.add(req.sb.ChatID, Denial{Time: p.cfg.Now().UTC(), SessionID: req.sb.SessionID,
			Destination: req.dest, Reason: req.dec.Reason, Detail: req.dec.Detail})
	}
}

func forbidden(req request) string {
	return fmt.Sprintf("sandboxd egress proxy: %s refused (%s): %s\n", req.dest, req.dec.Reason, req.dec.Detail)
}

func (p *Proxy) connect(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
	req := p.decide(ctx.Req, host)
	if !req.dec.Allowed() {
		p.refused(ctx.Req.Context(), req)
		ctx.Resp = goproxy.NewResponse(ctx.Req, "text/plain", http.StatusForbidden, forbidden(req))
		return goproxy.RejectConnect, host
	}
	name := ""
	if h, _, err := net.SplitHostPort(host); err == nil {
		if _, err := netip.ParseAddr(strings.Trim(h, "[]")); err != nil {
			name = normalizeName(h)
		}
	}
	ctx.Dialer = func(dctx context.Context, _, _ string) (net.Conn, error) {
		return p.dial(context.WithoutCancel(dctx), req, name) // bounded by the dial timeout
	}
	return goproxy.OkConnect, host
}

func (p *Proxy) plain(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
	hostport := r.URL.Host
	if r.URL.Port() == "" {
		hostport = net.JoinHostPort(r.URL.Hostname(), "80")
	}
	req := p.decide(r, hostport)
	if req.dec.Allowed() && r.URL.Scheme != "http" {
		req.dec = refuse(ReasonBadRequest, "scheme %q: plain requests are http only (https goes through CONNECT)", r.URL.Scheme)
	}
	if !req.dec.Allowed() {
		p.refused(r.Context(), req)
		return r, goproxy.NewResponse(r, "text/plain", http.StatusForbidden, forbidden(req))
	}
	ctx.RoundTripper = goproxy.RoundTripperFunc(func(r *http.Request, _ *goproxy.ProxyCtx) (*http.Response, error) {
		tr := &http.Transport{
			DialContext:           func(dctx context.Context, _, _ string) (net.Conn, error) { return p.dial(dctx, req, "") },
			DisableKeepAlives:     true, // a connection serves one sandbox's one request
			ResponseHeaderTimeout: 5 * time.Minute,
			Proxy:                 nil,
		}
		return tr.RoundTrip(r)
	})
	return r, nil
}

// dial connects to the first of the decided addresses that answers; sniHost, when set,
// is the name the tunnel's TLS server name must match.
func (p *Proxy) dial(ctx context.Context, req request, sniHost string) (net.Conn, error) {
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	var errs []error
	for _, a := range req.dec.Addrs {
		c, err := d.DialContext(ctx, "tcp", a.String())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		up := &upstream{Conn: c, sniHost: sniHost}
		up.onClose = func(sent, received int64) {
			bg := context.Background()
			p.bytes.Add(bg, sent, metric.WithAttributes(attribute.String("direction", "sent")))
			p.bytes.Add(bg, received, metric.WithAttributes(attribute.String("direction", "received")))
			p.log.LogAttrs(bg, slog.LevelDebug, "sandbox_egress",
				slog.String("chat_id", req.sb.ChatID), slog.String("session_id", req.sb.SessionID),
				slog.String("destination", req.dest), slog.String("address", a.String()),
				slog.Int64("sent", sent), slog.Int64("received", received))
		}
		up.onSNI = func(sni string) {
			r := req
			r.dec = refuse(ReasonSNIMismatch, "the TLS server name %q is not %s", sni, sniHost)
			p.refused(context.Background(), r)
		}
		return up, nil
	}
	return nil, fmt.Errorf("egress: dial %s: %w", req.dest, errors.Join(errs...))
}
