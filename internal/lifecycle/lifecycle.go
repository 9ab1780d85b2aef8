// Package lifecycle holds the use cases of sandboxd (create-or-reuse, delete, the expiry
// sweep, reconciliation, and what agents do inside their sandbox: exec, workspace files,
// keepalive) and the ports they consume. It knows no infrastructure: it imports
// the domain, the standard library and the OpenTelemetry API only.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// ScopeName is the instrumentation scope of the lifecycle's meter and tracer.
const ScopeName = "github.com/sandboxd/sandboxd/internal/lifecycle"

// Defaults of Config's optional settings, the values sandboxd runs with unless configured
// otherwise (internal/config takes its defaults from here).
const (
	DefaultSweepBatch       = 1000
	DefaultSweepParallelism = 16
	DefaultReconcileGrace   = time.Minute
	DefaultOpTimeout        = 2 * time.Minute
	// DefaultRegistryTimeout bounds each call to the registry (Store, Binding), so that
	// a hung database holds no use case, job or lock longer (Config.RegistryTimeout).
	DefaultRegistryTimeout   = 5 * time.Second
	DefaultExecTimeout       = 30 * time.Second
	DefaultExecMaxTimeout    = 10 * time.Minute
	DefaultExecOutputCap     = 1 << 20
	DefaultExecMaxConcurrent = 16
	DefaultMaxFileBytes      = 100 << 20
	DefaultMaxLifetime       = 24 * time.Hour
	// DefaultMaxSandboxes is the service-wide cap sandboxd runs with unless configured
	// (limits.max_sandboxes); Config.MaxSandboxes itself is 0, no cap, when unset.
	DefaultMaxSandboxes = 1000
)

// Config holds the dependencies of a Service. Store, Locker, Runtime and TTL are required;
// the rest default to no-ops or the real clock.
type Config struct {
	Store   Store
	Locker  Locker
	Runtime Runtime
	TTL     time.Duration

	Admitter  Admitter  // checks create requests; nil accepts them as they are
	Executor  Executor  // needed by Exec only
	Terminals Terminals // needed by Terminal only
	Events    EventSink // hears what happens to each sandbox; nil: nobody
	Files     Files     // needed by the file use cases only
	Inventory Inventory // needed by Reconcile only
	// Workspaces, needed by DeleteWorkspace and SweepWorkspaces, also hears when each
	// sandbox ends (its folder's last use), and has Create keep a folder the caller
	// provides to one chat (sandbox.ErrWorkspaceInUse while another chat's sandbox uses
	// it; without Workspaces, Create takes folders as they come). WorkspaceRetention (0: never) is how long a
	// folder no session uses is kept after its last use; RemoveProvidedWorkspaces lets
	// the retention remove folders the caller provided too, not only those derived for a
	// chat.
	Workspaces               Workspaces
	WorkspaceRetention       time.Duration
	RemoveProvidedWorkspaces bool
	// Binding, with Inventory, ties the registry and the runtime to each other (see
	// Binding): CheckRegistry checks both ways at start-up, Reconcile and the first Create
	// check the registry's runtime, and Reconcile removes only the sandboxes of this
	// registry. Nil: no check, every sandbox is this registry's.
	Binding Binding
	// Adopt takes over what another registry recorded (an operator's decision, for one
	// start): the registry is tied to this runtime whatever it was tied to, and
	// CheckRegistry rebuilds the records of the sandboxes of other registries (or none)
	// from their labels instead of refusing to start.
	Adopt bool
	// ForceMassRemoval lets a reconciliation remove more than MassRemovalMin sandboxes
	// and more than half of the instance's at once, which it otherwise refuses.
	ForceMassRemoval bool
	Clock            Clock            // default: the system clock
	NewID            func() uuid.UUID // new session ids; default uuid.New

	// SweepBatch caps how many expired sessions one sweep takes (default
	// DefaultSweepBatch); SweepParallelism how many chats it cleans at once (default
	// DefaultSweepParallelism).
	SweepBatch       int
	SweepParallelism int
	// ReconcileGrace is how old a labelled container without a record must be before the
	// reconciler removes it (default DefaultReconcileGrace): younger ones may be a create
	// in flight.
	ReconcileGrace time.Duration
	// OpTimeout bounds the work a use case does once it holds the lock; that work is
	// detached from the caller's cancellation so a caller that leaves mid-way cannot
	// leave a half-made sandbox behind (default DefaultOpTimeout).
	OpTimeout time.Duration
	// RegistryTimeout bounds each call to the Store and the Binding (default
	// DefaultRegistryTimeout); a call past it fails with the context's deadline error.
	// Waiting for a chat's lock is bounded by OpTimeout.
	RegistryTimeout time.Duration

	// ExecDefaultTimeout (default DefaultExecTimeout) and ExecMaxTimeout (default
	// DefaultExecMaxTimeout) bound commands; ExecOutputCap (default DefaultExecOutputCap)
	// caps the output one command may return.
	ExecDefaultTimeout time.Duration
	ExecMaxTimeout     time.Duration
	ExecOutputCap      int64
	// ExecMaxConcurrent bounds the commands one sandbox runs at once through this
	// service (default DefaultExecMaxConcurrent); one more is refused with sandbox.ErrBusy.
	ExecMaxConcurrent int
	// MaxSandboxes caps the sessions the registry may hold (0: no cap): a create for a
	// chat without one, at the cap, is refused with sandbox.ErrBusy before anything is
	// made.
	MaxSandboxes int
	// MaxFileBytes caps one uploaded file (default DefaultMaxFileBytes).
	MaxFileBytes int64
	// MaxLifetime caps how far keepalive may push expiry past creation (default
	// DefaultMaxLifetime).
	MaxLifetime time.Duration
	// ExtendOnActivity says whether exec and file calls of an agent's sandbox extend its
	// TTL (nil: never).
	ExtendOnActivity func(agentID string) bool
	// Tenants holds the limits of each tenant, by name; a tenant not in it (the default
	// tenant of a setup without tenants) has none. The caller's tenant comes with the
	// context (sandbox.WithTenant).
	Tenants map[string]TenantLimits

	Logger        *slog.Logger
	MeterProvider metric.MeterProvider
	Tracer        trace.TracerProvider
}

// Service runs the use cases. It is safe for concurrent use.
type Service struct {
	store     Store
	locker    Locker
	runtime   Runtime
	ttl       time.Duration
	admitter  Admitter
	executor  Executor
	terminals Terminals
	events    EventSink
	files     Files
	inventory Inventory
	binding   Binding
	adopt     bool
	forceMass bool

	workspaces         Workspaces
	workspaceRetention time.Duration
	removeProvided     bool
	bound              atomic.Bool // the registry was found tied to this runtime
	clock              Clock
	newID              func() uuid.UUID

	sweepBatch       int
	sweepParallelism int
	reconcileGrace   time.Duration
	opTimeout        time.Duration

	execDefaultTimeout time.Duration
	execMaxTimeout     time.Duration
	execOutputCap      int64
	execSlots          slots[uuid.UUID] // commands running, by session
	maxFileBytes       int64
	maxLifetime        time.Duration
	maxSandboxes       int
	creating           atomic.Int64 // creates of new sessions between the cap's check and their save
	extendOnActivity   func(agentID string) bool

	tenants      map[string]TenantLimits
	tenantExec   slots[string] // commands running, by tenant
	tenantCreate pending       // creates of new sessions under way, by tenant

	log    *slog.Logger
	tracer trace.Tracer
	m      instruments

	busy inflight // use cases holding a chat lock

	snapshots Snapshots // the store's exact copies, for reuses without the lock; nil: none
	writes    writes    // the use cases changing chats now, for reuses without the lock

	reconciling chan struct{} // holds one token while a reconciliation runs (the job's, the event stream's)
	// reconciles counts the reconciliations begun (under the token); reconciled is the
	// count of the last one that succeeded, read and written under the token. They let
	// the event stream's reconciliation be skipped when one began after it connected.
	reconciles atomic.Uint64
	reconciled uint64
}

// inflight counts use cases under way so that shutdown can wait for them, and refuses
// new ones once shutdown has begun.
type inflight struct {
	mu      sync.Mutex
	n       int
	idle    chan struct{} // closed when n drops to 0
	closing bool
	closed  atomic.Bool // closing, read without mu
}

func (f *inflight) add() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return fmt.Errorf("sandboxd is shutting down: %w", sandbox.ErrUnavailable)
	}
	if f.n == 0 {
		f.idle = make(chan struct{})
	}
	f.n++
	return nil
}

func (f *inflight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 {
		close(f.idle)
	}
}

// Drain refuses new use cases (sandbox.ErrUnavailable) and waits until those under way
// (which run on after their callers left) have finished, or ctx ends. Call it at shutdown
// after the API and the background jobs have stopped and before the runtime and the
// registry are closed, so that no create is cut off between making its container and
// recording it, and none starts after.
func (s *Service) Drain(ctx context.Context) error {
	s.busy.mu.Lock()
	s.busy.closing = true
	s.busy.closed.Store(true)
	if s.busy.n == 0 {
		s.busy.mu.Unlock()
		return nil
	}
	idle, n := s.busy.idle, s.busy.n
	s.busy.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("lifecycle: %d use cases still under way: %w", n, ctx.Err())
	}
}

type instruments struct {
	createTotal       metric.Int64Counter
	deleteTotal       metric.Int64Counter
	cleanupTotal      metric.Int64Counter
	cleanupErrorTotal metric.Int64Counter
	reconcileTotal    metric.Int64Counter
	diedTotal         metric.Int64Counter
	execTotal         metric.Int64Counter
	keepaliveTotal    metric.Int64Counter
	fileTotal         metric.Int64Counter
	workspaceRemoved  metric.Int64Counter
	execDuration      metric.Float64Histogram
	activeCount       metric.Int64Gauge
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// New checks cfg and builds a Service. A missing required dependency is an error.
func New(cfg Config) (*Service, error) {
	var missing []error
	if cfg.Store == nil {
		missing = append(missing, errors.New("Store"))
	}
	if cfg.Locker == nil {
		missing = append(missing, errors.New("Locker"))
	}
	if cfg.Runtime == nil {
		missing = append(missing, errors.New("Runtime"))
	}
	if cfg.TTL <= 0 {
		missing = append(missing, errors.New("TTL (> 0)"))
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("lifecycle: missing %w", errors.Join(missing...))
	}
	registryTimeout := orDefault(cfg.RegistryTimeout, DefaultRegistryTimeout)
	if cfg.Binding != nil {
		cfg.Binding = timedBinding{Binding: cfg.Binding, d: registryTimeout}
	}
	s := &Service{
		store: timedStore{Store: cfg.Store, d: registryTimeout}, locker: cfg.Locker, runtime: cfg.Runtime, ttl: cfg.TTL,
		admitter: cfg.Admitter, executor: cfg.Executor, terminals: cfg.Terminals, events: cfg.Events, files: cfg.Files, inventory: cfg.Inventory,
		binding: cfg.Binding, adopt: cfg.Adopt, forceMass: cfg.ForceMassRemoval,
		workspaces: cfg.Workspaces, workspaceRetention: cfg.WorkspaceRetention, removeProvided: cfg.RemoveProvidedWorkspaces,
		clock: cfg.Clock, newID: cfg.NewID, log: cfg.Logger,

		sweepBatch:       orDefault(cfg.SweepBatch, DefaultSweepBatch),
		sweepParallelism: orDefault(cfg.SweepParallelism, DefaultSweepParallelism),
		reconcileGrace:   orDefault(cfg.ReconcileGrace, DefaultReconcileGrace),
		opTimeout:        orDefault(cfg.OpTimeout, DefaultOpTimeout),

		execDefaultTimeout: orDefault(cfg.ExecDefaultTimeout, DefaultExecTimeout),
		execMaxTimeout:     orDefault(cfg.ExecMaxTimeout, DefaultExecMaxTimeout),
		execOutputCap:      orDefault(cfg.ExecOutputCap, DefaultExecOutputCap),
		execSlots:          slots[uuid.UUID]{max: orDefault(cfg.ExecMaxConcurrent, DefaultExecMaxConcurrent), taken: map[uuid.UUID]int{}},
		maxFileBytes:       orDefault(cfg.MaxFileBytes, DefaultMaxFileBytes),
		maxLifetime:        orDefault(cfg.MaxLifetime, DefaultMaxLifetime),
		maxSandboxes:       max(cfg.MaxSandboxes, 0),
		extendOnActivity:   cfg.ExtendOnActivity,
		reconciling:        make(chan struct{}, 1),
		tenants:            cfg.Tenants,
		tenantExec:         slots[string]{taken: map[string]int{}},
		tenantCreate:       pending{n: map[string]int{}},
	}
	s.snapshots, _ = cfg.Store.(Snapshots)
	if s.clock == nil {
		s.clock = systemClock{}
	}
	if s.newID == nil {
		s.newID = uuid.New
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	tp := cfg.Tracer
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	s.tracer = tp.Tracer(ScopeName)
	mp := cfg.MeterProvider
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m, err := newInstruments(mp.Meter(ScopeName))
	if err != nil {
		return nil, fmt.Errorf("lifecycle: instruments: %w", err)
	}
	s.m = m
	s.zeroCounters(context.Background())
	return s, nil
}

// newInstruments makes the lifecycle's metrics on meter.
func newInstruments(meter metric.Meter) (instruments, error) {
	var (
		m   instruments
		err error
	)
	counter := func(name, desc string) metric.Int64Counter {
		c, e := meter.Int64Counter(name, metric.WithDescription(desc))
		err = errors.Join(err, e)
		return c
	}
	m.createTotal = counter("sandbox.create.total", "Create requests by result.")
	m.deleteTotal = counter("sandbox.delete.total", "Delete requests by result.")
	m.cleanupTotal = counter("sandbox.cleanup.total", "Expired sandboxes cleaned by the sweep.")
	m.cleanupErrorTotal = counter("sandbox.cleanup.error.total", "Sweep failures by error type.")
	m.reconcileTotal = counter("sandbox.reconcile.total", "Reconciler repairs by result.")
	m.diedTotal = counter("sandbox.died.total", "Sandboxes that died on their own (or were removed behind sandboxd's back), by reason.")
	m.execTotal = counter("sandbox.exec.total", "Commands run in sandboxes by result.")
	m.keepaliveTotal = counter("sandbox.keepalive.total", "Keepalive requests by result.")
	m.fileTotal = counter("sandbox.file.total", "Workspace file operations by op and result.")
	m.workspaceRemoved = counter("sandbox.workspace.removed.total", "Workspace folders removed, by reason (request, retention).")
	h, e := meter.Float64Histogram("sandbox.exec.duration", metric.WithUnit("s"),
		metric.WithDescription("How long commands ran in sandboxes."))
	m.execDuration = h
	err = errors.Join(err, e)
	g, e := meter.Int64Gauge("sandbox.active.count", metric.WithDescription("Sessions the registry holds."))
	m.activeCount = g
	return m, errors.Join(err, e)
}

func orDefault[T time.Duration | int64 | int](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// locked runs fn holding the chat's lock. fn's context is detached from the caller's
// cancellation (bounded by OpTimeout) so a use case, once begun, runs to its end. fn
// counts as a write of the chat (writes): no create reuses the chat without the lock
// while it runs.
func (s *Service) locked(ctx context.Context, chatID uuid.UUID, fn func(ctx context.Context) error) error {
	return s.lockedAs(ctx, chatID, true, fn)
}

// lockedAs is locked; with write false fn is no write unless it marks one itself
// (s.writes.begin): a create, which mostly reuses. Waiting for the lock is bounded by
// OpTimeout too.
func (s *Service) lockedAs(ctx context.Context, chatID uuid.UUID, write bool, fn func(ctx context.Context) error) error {
	lockCtx, cancelLock := context.WithTimeout(ctx, s.opTimeout)
	unlock, err := s.locker.Lock(lockCtx, chatID)
	cancelLock()
	if err != nil {
		return fmt.Errorf("lock chat %s: %w", chatID, err)
	}
	defer unlock()
	if err := s.busy.add(); err != nil {
		return err
	}
	defer s.busy.done()
	if write {
		defer s.writes.begin(chatID)()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opTimeout)
	defer cancel()
	return fn(ctx)
}

// recordActive sets the active-count gauge to what the registry holds.
func (s *Service) recordActive(ctx context.Context) {
	n, err := s.store.Count(ctx)
	if err != nil {
		s.log.WarnContext(ctx, "sandbox_count_failed", slog.String("error", sandbox.ErrorType(err)))
		return
	}
	s.m.activeCount.Record(ctx, int64(n))
}

// logAttrs are the log attributes of an event of a session a caller asked for: those of
// sessionAttrs and, when it is not the default one, the session's tenant.
func logAttrs(s sandbox.Session) []any {
	attrs := sessionAttrs(s.ChatID, s.ID, s.ContainerID)
	if s.Tenant != "" && s.Tenant != sandbox.DefaultTenant {
		attrs = append(attrs, slog.String("tenant", s.Tenant))
	}
	return attrs
}

// tenantAttr is the span attribute of the caller's tenant.
func tenantAttr(tenant string) attribute.KeyValue { return attribute.String("sandboxd.tenant", tenant) }

// tenantMetric is the metric attribute of the caller's tenant: its name when configured
// (a bounded set), else "other", so that no caller can grow the metrics' cardinality.
func (s *Service) tenantMetric(tenant string) attribute.KeyValue {
	if _, ok := s.tenants[tenant]; !ok && tenant != sandbox.DefaultTenant {
		tenant = "other"
	}
	return attribute.String("tenant", tenant)
}

// sessionAttrs are the log attributes every lifecycle event carries.
func sessionAttrs(chatID, sessionID uuid.UUID, containerID string) []any {
	return []any{
		slog.String("chat_id", chatID.String()),
		slog.String("session_id", sessionID.String()),
		slog.String("container_id", containerID),
	}
}

func failSpan(span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

func result(r string) attribute.KeyValue { return attribute.String("result", r) }

func reasonAttr(r string) attribute.KeyValue { return attribute.String("reason", r) }
