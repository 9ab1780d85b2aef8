// Command sandboxd serves the sandbox API: every AI-agent chat gets its own hardened
// container. It sweeps expired sandboxes, reconciles the registry with the engine, exports
// metrics and traces, and shuts down gracefully on SIGINT or SIGTERM.
//
// Configuration comes from a YAML file (--config), SANDBOXD_... variables and flags, in
// increasing precedence; `sandboxd -h` lists the flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/net/netutil"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/config"
	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/egress"
	"github.com/sandboxd/sandboxd/internal/eventlog"
	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/keylock"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/mcpserver"
	"github.com/sandboxd/sandboxd/internal/periodic"
	"github.com/sandboxd/sandboxd/internal/pglock"
	"github.com/sandboxd/sandboxd/internal/pgstore"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/sqlitestore"
	"github.com/sandboxd/sandboxd/internal/telemetry"
	"github.com/sandboxd/sandboxd/internal/webui"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "sandboxd:", err)
		stop()
		os.Exit(1)
	}
}

// run builds sandboxd from args and env, serves until ctx ends, then shuts down: the
// listener closes, in-flight requests finish, the background jobs stop, telemetry is
// flushed. Logs go to stdout; usage (-h) too.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) (err error) {
	cfg, err := config.Load(args, env, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	// Log records go out through one writer goroutine: under load, one write to stdout
	// carries many records (one per request) instead of one each. Closed last, after
	// every closer has logged.
	logOut := newBatchWriter(stdout)
	defer logOut.Close()
	log := newLogger(cfg.Log, logOut)

	// Take the address first: a second sandboxd started by mistake on the same address
	// must fail here, before its start-up reconcile touches anything.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close() // closed by the server once it serves; this covers the early returns

	// Teardown runs after ctx has ended; it gets its own bounded context.
	var closers []func(context.Context) error
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		for i := len(closers) - 1; i >= 0; i-- {
			err = errors.Join(err, closers[i](sctx))
		}
	}()

	tel, err := telemetry.New(ctx, telemetry.Config{OTLPEndpoint: cfg.OTLP.Endpoint})
	if err != nil {
		return err
	}
	closers = append(closers, tel.Shutdown)

	reg, err := openRegistry(ctx, cfg.Registry, cfg.Sweep.Parallelism, cfg.LockLinger)
	if err != nil {
		return err
	}
	closers = append(closers, func(context.Context) error { return reg.close() })
	// Replicas decide expiry against the database's clock, whatever their own say.
	syncClock := func(ctx context.Context) error {
		offset, err := reg.syncClock(ctx)
		if err == nil {
			log.DebugContext(ctx, "clock_synced", slog.Duration("offset", offset))
		}
		return err
	}
	if reg.syncClock != nil {
		if err := syncClock(ctx); err != nil {
			return fmt.Errorf("registry clock: %w", err)
		}
	}

	profiles := cfg.Profiles // every agent's, resolved and checked by config.Load
	// Every sandbox carries the id of the registry that records it: a reconciler removes
	// only its own registry's.
	registryID, _, err := reg.binding.Registry(ctx)
	if err != nil {
		return err
	}
	srt, err := openRuntime(ctx, log, cfg, registryID, reg.replicas, tel.MeterProvider)
	if err != nil {
		return err
	}
	rt := srt.engine
	closers = append(closers, func(context.Context) error { return srt.close() })
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	engineUp := rt.Ping(pctx)
	if engineUp != nil {
		// Not fatal: the engine may come up after us; /readyz tells until it does.
		log.WarnContext(ctx, "runtime_unreachable", slog.String("runtime", cfg.Runtime), slog.String("error", engineUp.Error()))
	} else if err := srt.checkRuntimes(pctx); err != nil {
		// A profile's runtime (gVisor's runsc, say) that the engine lacks would fail
		// every create of that profile: refuse to start instead.
		return err
	}

	// What happens to each sandbox, kept in memory for the operator's page.
	events := eventlog.New(eventlog.Config{})
	svc, err := lifecycle.New(lifecycle.Config{
		Events:             events,
		Store:              reg.store,
		Locker:             reg.locker,
		Runtime:            rt,
		Admitter:           rt,
		Inventory:          rt,
		Workspaces:         srt.workspaces,
		Binding:            reg.binding,
		RegistryTimeout:    cfg.RegistryTimeout,
		Clock:              reg.clock,
		Adopt:              cfg.Adopt,
		ForceMassRemoval:   cfg.Reconcile.Force,
		Executor:           rt,
		Terminals:          rt,
		Files:              srt.files,
		ExtendOnActivity:   profiles.ExtendsOnActivity,
		TTL:                cfg.TTL,
		SweepParallelism:   cfg.Sweep.Parallelism,
		ReconcileGrace:     cfg.Reconcile.Grace,
		ExecDefaultTimeout: cfg.Exec.DefaultTimeout,
		ExecMaxTimeout:     cfg.Exec.MaxTimeout,
		ExecOutputCap:      cfg.Exec.OutputCap,
		ExecMaxConcurrent:  cfg.Exec.MaxConcurrent,
		MaxFileBytes:       cfg.Files.MaxBytes,
		MaxLifetime:        cfg.MaxLifetime,
		MaxSandboxes:       cfg.Limits.MaxSandboxes,
		Tenants:            tenantLimits(cfg.Tenants),
		// Folders no session uses go after their retention (0: never); those the caller
		// provided only when the configuration says so.
		WorkspaceRetention:       cfg.Workspace.Retention,
		RemoveProvidedWorkspaces: cfg.Workspace.RetentionProvided,
		Logger:                   log,
		MeterProvider:            tel.MeterProvider,
		Tracer:                   tel.TracerProvider,
	})
	if err != nil {
		return err
	}
	// A registry that records another engine's (or instance's) sandboxes, and an engine
	// that holds sandboxes of this instance that another registry (or none) recorded, are
	// refused here, before serving (or, with adopt, taken over). With the engine down, the
	// first create and every reconciliation check the registry's engine instead, and the
	// reconciler never removes another registry's sandboxes.
	switch err := engineUp; {
	case err == nil:
		cctx, cancel := context.WithTimeout(ctx, time.Minute) // an adoption saves one record per sandbox
		defer cancel()
		if err := svc.CheckRegistry(cctx); errors.Is(err, sandbox.ErrConflict) || (err != nil && cfg.Adopt) {
			return err
		} else if err != nil {
			log.WarnContext(ctx, "registry_unchecked", slog.String("error", err.Error()))
		}
	case cfg.Adopt:
		return fmt.Errorf("adopt: the engine cannot be reached, so nothing can be adopted: %w", err)
	}

	// Profiles with network egress: their network, its guard and the proxy, before any
	// sandbox (the pool's too) is made. Stopped after the pool is drained.
	proxy, err := startEgress(ctx, log, cfg, srt.docker, tel.MeterProvider)
	if err != nil {
		return err
	}
	closers = append(closers, func(ctx context.Context) error {
		if srt.docker == nil {
			return nil
		}
		rt := srt.docker
		if proxy == nil {
			// A network a previous run left, whose last sandbox went meanwhile (the
			// reconciler's work): removed too, but the engine may be gone by now.
			if err := rt.StopEgress(ctx); err != nil {
				log.WarnContext(ctx, "egress_cleanup_failed", slog.String("error", err.Error()))
			}
			return nil
		}
		return errors.Join(proxy.Shutdown(ctx), rt.StopEgress(ctx))
	})

	// A crash may have left containers without records or records without containers:
	// repair before serving. run is the reconciliation itself (ran: it was not skipped).
	reconcileWith := func(ctx context.Context, run func(context.Context) (lifecycle.ReconcileReport, bool, error)) error {
		rep, ran, err := run(ctx)
		if err == nil && ran {
			log.InfoContext(ctx, "reconciled", slog.Int("containers", rep.Containers),
				slog.Int("records", rep.Records), slog.Int("orphans_removed", rep.OrphansRemoved),
				slog.Int("records_repaired", rep.RecordsRepaired), slog.Int("errors", rep.Errors))
		}
		// Then the mounts of bounded workspaces that no container uses any more (a crash
		// between a mount and its container, or a container removed behind our back).
		released, mErr := srt.releaseMounts(ctx)
		for _, folder := range released {
			log.InfoContext(ctx, "workspace_unmounted", slog.String("path", folder), slog.String("reason", "unused"))
		}
		return errors.Join(err, mErr)
	}
	reconcile := func(ctx context.Context) error {
		return reconcileWith(ctx, func(ctx context.Context) (lifecycle.ReconcileReport, bool, error) {
			rep, err := svc.Reconcile(ctx)
			return rep, true, err
		})
	}
	// The engine's event stream: a sandbox that dies is repaired at once, and a
	// reconciliation follows every (re)connection of the stream. It is followed before
	// the start-up reconciliation, which waits for the stream to connect (briefly: an
	// engine that is down holds nothing up), so that one full reading of the registry and
	// the engine, done before serving, stands for both (ReconcileSince); before, the
	// stream's reconciliation ran again as the first requests came in.
	begun := svc.ReconcilesBegun()
	follower := svc.Follow(ctx, rt, 0, 0)
	if engineUp == nil {
		select {
		case <-follower.Connected():
		case <-time.After(streamWait):
		case <-ctx.Done():
		}
	}
	// Bounded as a periodic run is: a hung engine or registry delays the start, never
	// stops it.
	rctx, cancelReconcile := context.WithTimeout(ctx, cfg.Reconcile.Interval)
	if err := reconcileWith(rctx, func(ctx context.Context) (lifecycle.ReconcileReport, bool, error) {
		return svc.ReconcileSince(ctx, begun)
	}); err != nil {
		log.ErrorContext(ctx, "reconcile_failed", slog.String("error", err.Error()))
	}
	cancelReconcile()
	// The warm pool (profiles with pool.min > 0): leftovers of a previous run go first.
	// Drained at shutdown, once the requests in flight are done.
	if err := srt.startPool(ctx); err != nil {
		log.WarnContext(ctx, "sandbox_pool_start_failed", slog.String("error", err.Error()))
	}
	closers = append(closers, srt.drainPool)
	// Runs before the pool drain, the runtime and the registry close: use cases whose
	// callers left (creates, sweeps) finish their work first.
	closers = append(closers, svc.Drain)
	// The event stream's follower (started above) stops before Drain.
	closers = append(closers, func(context.Context) error { follower.Stop(); return nil })
	jobList := []periodic.Job{
		// Each run is cut off at its interval, when the next is due (a run stuck on a hung
		// dependency never stalls its job); every engine and registry call it makes has a
		// shorter deadline of its own. The first runs at once: what expired while sandboxd
		// was down goes now, not one interval later.
		{Name: "sweep", Interval: cfg.Sweep.Interval, Timeout: cfg.Sweep.Interval, Immediately: true, Run: func(ctx context.Context) error {
			_, err := svc.CleanupExpired(ctx)
			// Workspace folders past their retention (when one is set) go after the
			// sandboxes whose expiry ends their use.
			_, wsErr := svc.SweepWorkspaces(ctx)
			return errors.Join(err, wsErr)
		}},
		{Name: "reconcile", Interval: cfg.Reconcile.Interval, Timeout: cfg.Reconcile.Interval, Run: reconcile},
	}
	if reg.syncClock != nil {
		jobList = append(jobList, periodic.Job{Name: "clock", Interval: time.Minute, Timeout: cfg.RegistryTimeout, Run: syncClock})
	}
	jobs, err := periodic.Start(ctx, log, jobList...)
	if err != nil {
		return err
	}
	closers = append(closers, func(context.Context) error { jobs.Stop(); return nil })

	mcpHandler, err := mcpserver.New(mcpserver.Config{
		Sandboxes:      svc,
		Logger:         log,
		MeterProvider:  tel.MeterProvider,
		TracerProvider: tel.TracerProvider,
	})
	if err != nil {
		return err
	}
	page, err := webui.New(webui.Config{
		Sandboxes: svc,
		Events:    events,
		Usage:     usageOf(srt.docker),
		Pools:     srt.poolFill,
		ProfileOf: func(agentID string) string {
			if agentID != "" && profiles.Listed(agentID) {
				return agentID
			}
			return "default"
		},
		XtermDir: cfg.UI.XtermDir,
		Logger:   log,
	})
	if err != nil {
		return err
	}
	defaultTokens, tenantTokens := cfg.TenantTokens()
	var terminals sync.WaitGroup // the open terminals, which shutdown waits for
	handler, err := httpapi.New(httpapi.Config{
		Sandboxes:    svc,
		MCP:          mcpHandler,
		Tokens:       defaultTokens,
		Tenants:      tenantTokens,
		MaxBodyBytes: cfg.MaxBodyBytes,
		// Buffered exec answers are sized by the lifecycle's output cap.
		ExecOutputCap:        cfg.Exec.OutputCap,
		MaxBufferedExecBytes: cfg.Exec.MaxBufferedBytes,
		MinUploadRate:        minUploadRate(cfg.Files.MinUploadRate),
		Ready:                func(ctx context.Context) error { return errors.Join(reg.ping(ctx), rt.Ping(ctx)) },
		Metrics:              tel.Metrics,
		UI:                   page.API(),
		Stop:                 ctx,
		Terminals:            &terminals,
		Page:                 page.Files(),
		Logger:               log,
		Denials:              denialsOf(proxy),
	})
	if err != nil {
		return err
	}
	return serve(ctx, log, cfg, srt.instance, ln, handler, &terminals)
}

// usageOf reads a sandbox's resource use for the operator's page: Docker's stats (nil on
// Kubernetes, whose figures would need the cluster's metrics API).
func usageOf(rt *docker.Runtime) func(ctx context.Context, containerID string) (webui.Sample, error) {
	if rt == nil {
		return nil
	}
	return func(ctx context.Context, containerID string) (webui.Sample, error) {
		u, err := rt.Usage(ctx, containerID)
		return webui.Sample(u), err
	}
}

// startEgress makes the instance's egress network (when a profile has network egress;
// else it removes what a previous run left) and serves the egress proxy on its gateway,
// identifying each connection's sandbox by its source address through the runtime. nil
// when no profile needs it.
func startEgress(ctx context.Context, log *slog.Logger, cfg config.Config, rt *docker.Runtime, mp metric.MeterProvider) (*egress.Proxy, error) {
	if rt == nil {
		return nil, nil // Kubernetes: what a Pod reaches is for the cluster's NetworkPolicies
	}
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !rt.NeedsEgress() {
		// What a run with egress profiles left, if no sandbox is on it any more.
		if err := rt.StopEgress(ectx); err != nil {
			log.WarnContext(ctx, "egress_cleanup_failed", slog.String("error", err.Error()))
		}
		return nil, nil
	}
	n, err := rt.StartEgress(ectx, cfg.Egress.ProxyPort)
	if err != nil {
		return nil, fmt.Errorf("egress: profiles with network egress need their network at start-up: %w", err)
	}
	internal := []netip.Prefix{n.Subnet}
	if addrs, err := net.InterfaceAddrs(); err == nil { // the host's own addresses
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				internal = append(internal, netip.PrefixFrom(p.Addr().Unmap(), p.Addr().Unmap().BitLen()))
			}
		}
	}
	profiles := cfg.Profiles
	proxy, err := egress.New(egress.Config{
		Identify: func(ctx context.Context, a netip.Addr) (egress.Sandbox, error) {
			chat, session, agent, err := rt.SandboxAt(ctx, a)
			if errors.Is(err, sandbox.ErrNotFound) {
				return egress.Sandbox{}, egress.ErrUnknownSandbox
			} else if err != nil {
				return egress.Sandbox{}, err
			}
			return egress.Sandbox{ChatID: chat.String(), SessionID: session.String(), Policy: profiles.Of(agent).Egress}, nil
		},
		Resolver:      egress.Hosts{Names: cfg.Egress.Resolved},
		Internal:      internal,
		Logger:        log,
		MeterProvider: mp,
	})
	if err != nil {
		return nil, err
	}
	// Replicas on one engine share the network and its gateway: each serves the proxy
	// on the same address (SO_REUSEPORT), and any of them identifies any sandbox.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	addr := netip.AddrPortFrom(n.Gateway, uint16(n.Port)).String()
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("egress proxy: listen on %s: %w", addr, err)
	}
	go func() {
		if err := proxy.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.ErrorContext(ctx, "egress_proxy_failed", slog.String("error", err.Error()))
		}
	}()
	log.InfoContext(ctx, "egress_proxy_listening", slog.String("addr", addr), slog.String("network", n.Name),
		slog.String("bridge", n.Bridge))
	return proxy, nil
}

// denialsOf is the egress route's view of proxy (none without a proxy).
func denialsOf(proxy *egress.Proxy) httpapi.Denials {
	if proxy == nil {
		return nil
	}
	return proxy.Denials
}

// minUploadRate is httpapi's form of files.min_upload_rate, whose 0 (no minimum) is
// httpapi's -1 (its 0 is its default).
func minUploadRate(rate int64) int64 {
	if rate == 0 {
		return -1
	}
	return rate
}

// tenantLimits is what the lifecycle enforces of the configured tenants.
func tenantLimits(tenants map[string]config.Tenant) map[string]lifecycle.TenantLimits {
	out := make(map[string]lifecycle.TenantLimits, len(tenants))
	for name, t := range tenants {
		limits := lifecycle.TenantLimits{MaxSandboxes: t.MaxSandboxes, MaxExecConcurrent: t.MaxExecConcurrent}
		if len(t.Agents) > 0 { // none listed: every agent
			limits.Agents = t.Agents
		}
		out[name] = limits
	}
	return out
}

// serve answers on ln until ctx ends, then stops accepting and waits (up to the shutdown
// timeout) for the requests in flight.
func serve(ctx context.Context, log *slog.Logger, cfg config.Config, instance string, ln net.Listener, handler http.Handler, terminals *sync.WaitGroup) error {
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		// A create may wait for a chat's lock and then make a container (bounded by the
		// lifecycle's operation timeout, lifecycle.DefaultOpTimeout).
		WriteTimeout:   5 * time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// Requests are not cancelled by the shutdown signal: they are let finish.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if n := cfg.Server.MaxConnections; n > 0 {
		// Past the cap, connections wait in the kernel's backlog until one closes.
		ln = netutil.LimitListener(ln, n)
	}
	log.InfoContext(ctx, "listening", slog.String("addr", ln.Addr().String()),
		slog.Bool("auth", len(cfg.Tokens) > 0 || len(cfg.Tenants) > 0), slog.Int("tenants", len(cfg.Tenants)),
		slog.String("runtime", cfg.Runtime), slog.String("instance", instance))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.InfoContext(ctx, "shutting_down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	<-served // http.ErrServerClosed
	// Open terminals (hijacked connections, which Shutdown does not wait for) ended with
	// ctx: wait until their shells are killed, before the runtime closes.
	waited := make(chan struct{})
	go func() { terminals.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-sctx.Done():
		log.WarnContext(ctx, "terminals_still_open", slog.String("error", sctx.Err().Error()))
	}
	return nil
}

// registry is the session store and the chat locker that goes with it.
type registry struct {
	store   lifecycle.Store
	binding lifecycle.Binding
	locker  lifecycle.Locker
	ping    func(context.Context) error
	close   func() error
	// PostgreSQL only: the database's clock, which every replica decides expiry against,
	// and how to measure this replica's offset from it (nil: the system clock).
	clock     lifecycle.Clock
	syncClock func(context.Context) (time.Duration, error)
	// replicas: several processes may serve the same sandboxes.
	replicas bool
}

// agentBinary is the in-sandbox agent's binary sandboxd gives its sandboxes (docker.agent),
// or "" and why there is none.
func agentBinary(setting string) (path, why string) {
	switch {
	case setting == "none":
		return "", "docker.agent is none: commands run through the engine's exec"
	case setting != "":
		return setting, "docker.agent"
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Sprintf("no executable path (%v): commands run through the engine's exec", err)
	}
	beside := filepath.Join(filepath.Dir(exe), "sandboxd-agent")
	if docker.CheckAgent(beside) != nil {
		return "", "no sandboxd-agent beside sandboxd (build it: CGO_ENABLED=0 go build -o bin/sandboxd-agent ./cmd/sandboxd-agent): commands run through the engine's exec"
	}
	return beside, "beside sandboxd"
}

// openRegistry opens the registry dsn names: SQLite (one process, locks in memory) or
// PostgreSQL (replicas, advisory locks kept as leases for linger, under which the store
// caches). sweepParallelism sizes the lock pool.
func openRegistry(ctx context.Context, dsn string, sweepParallelism int, linger time.Duration) (registry, error) {
	kind, target, err := config.ParseRegistry(dsn)
	if err != nil {
		return registry{}, err
	}
	switch kind {
	case "sqlite":
		if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
			return registry{}, fmt.Errorf("registry: %w", err)
		}
		st, err := sqlitestore.Open(ctx, target)
		if err != nil {
			return registry{}, err
		}
		return registry{store: st, binding: st, locker: keylock.New(), ping: st.Ping, close: st.Close}, nil
	case "postgres":
		// The locker gets a pool of its own: a lock holder must never wait for a
		// connection that only other holders and waiters have.
		pcfg, err := lockPoolConfig(target, sweepParallelism)
		if err != nil {
			return registry{}, fmt.Errorf("registry: lock pool: malformed dsn: %w", sandbox.ErrInvalid)
		}
		pool, err := pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			return registry{}, fmt.Errorf("registry: lock pool: %w", sandbox.ErrUnavailable)
		}
		// Before anything relies on a session advisory lock (the migrations, the chats'
		// locks): behind a transaction-pooling proxy they silently stop excluding.
		if err := pglock.CheckSessionLocks(ctx, pool); err != nil {
			pool.Close()
			return registry{}, err
		}
		st, err := pgstore.Open(ctx, target)
		if err != nil {
			pool.Close()
			return registry{}, err
		}
		locker, err := pglock.New(pglock.Config{Pool: pool, Linger: linger})
		if err != nil {
			pool.Close()
			_ = st.Close()
			return registry{}, err
		}
		if linger > 0 {
			st.CacheUnder(locker)
		}
		clock := st.Clock(time.Now)
		return registry{store: st, binding: st, locker: locker, ping: st.Ping, close: func() error {
			lerr := locker.Close() // ends the leases before the store can be written by others
			pool.Close()
			return errors.Join(lerr, st.Close())
		}, clock: clock, syncClock: clock.Sync, replicas: true}, nil
	}
	return registry{}, fmt.Errorf("registry: unknown kind %q", kind)
}

// streamWait bounds how long the start-up reconciliation waits for the engine's event
// stream to connect, so as to stand for the connection's own; past it, both run.
const streamWait = 2 * time.Second

// lockPoolHeadroom is how many chats the lock pool can lock besides a full sweep's.
const lockPoolHeadroom = 16

// lockPoolConfig configures the locker's pool. pglock holds one connection per chat being
// locked for the whole use case (a stop or a create: seconds), so pgxpool's default size,
// max(4, NumCPU), is no more than the default sweep's 4 chats at once: a sweep of slow
// stops would hold every connection, and every other chat's request would wait for one
// (and fail after pglock's wait). Unless dsn sets pool_max_conns, the pool is made big
// enough for a sweep and lockPoolHeadroom other chats.
func lockPoolConfig(dsn string, sweepParallelism int) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = max(cfg.MaxConns, int32(sweepParallelism+lockPoolHeadroom))
	}
	return cfg, nil
}

func newLogger(cfg config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level)) // checked by config
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(cfg.Format, "text") {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
