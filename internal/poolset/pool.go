package poolset

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

const (
	// fillParallelism bounds the sandboxes one profile's pool makes at once.
	fillParallelism = 4
	// claimAttempts bounds the members one create tries before it is cold.
	claimAttempts = 2
)

// Pool is a runtime's warm pool: for each pooled profile, sandboxes made ahead, kept at a
// target between the profile's pool.min and pool.max (one more after a check period in
// which a create found none ready, one fewer after one in which none did), replaced when
// they die, and handed out to creates. M is what the runtime knows a pooled sandbox by
// (an id, a name). Making, checking, handing out and removing one are the runtime's
// (Config); so is what a pool leaves behind (its leftovers). It is safe for concurrent
// use.
//
// Invariant, kept here: a member is in its profile's ready list at most once, and leaves
// it (under mu) before it is handed out or removed, so a claim and a check never both act
// on it.
type Pool[M comparable] struct {
	cfg     Config[M]
	set     *Set[Profile[M]]
	metrics *Metrics

	mu      sync.Mutex
	started bool
	drained bool
	cancel  context.CancelFunc
	claims  sync.WaitGroup // claims in progress; Add only under mu while !drained
	loops   sync.WaitGroup // one refill loop per profile, and the runtime's own (Run)
}

// Profile is one pooled profile's share of a Pool.
type Profile[M comparable] struct {
	Name    string // DefaultName or the agent id: the metrics' profile
	Profile profile.Profile
	kick    chan struct{} // wakes the refill loop; buffered, never blocks

	// guarded by Pool.mu
	ready  []M
	target int
	empty  bool // a create found the pool empty since the last check
}

// Config is what a Pool needs of its runtime. Every field but Log is required.
type Config[M comparable] struct {
	Profiles    *profile.Set
	Meter       metric.Meter
	MissReasons []string      // every reason a create of a pooled profile may be cold for
	Interval    time.Duration // how often each profile's members are checked
	Log         *slog.Logger
	// LogStoppedFills logs the fills that fail once the pool is stopping too (what
	// Make could not remove then is named there); else only the others are.
	LogStoppedFills bool

	// ID names a member in logs (container.id).
	ID func(M) string
	// Make makes one member of pp, ready to be handed out, or removes what it made
	// before it fails. ctx ends when the pool stops.
	Make func(ctx context.Context, pp *Profile[M]) (M, error)
	// Dead returns those of ready (all of pp's at the check) that no longer serve;
	// none when it cannot tell.
	Dead func(ctx context.Context, pp *Profile[M], ready []M) []M
	// Destroy removes a member, even when ctx has ended.
	Destroy func(ctx context.Context, m M) error
}

// NewPool makes the pool of every profile of cfg.Profiles whose pool.min is set, and its
// instruments. It starts nothing (Start, Run).
func NewPool[M comparable](cfg Config[M]) (*Pool[M], error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	p := &Pool[M]{cfg: cfg}
	p.set = New(cfg.Profiles, func(name string, prof profile.Profile) *Profile[M] {
		return &Profile[M]{Name: name, Profile: prof, target: prof.Pool.Min, kick: make(chan struct{}, 1)}
	})
	names := make([]string, 0, len(p.set.All))
	for _, pp := range p.set.All {
		names = append(names, pp.Name)
	}
	var err error
	p.metrics, err = NewMetrics(cfg.Meter, names, cfg.MissReasons, func(observe func(string, int)) {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, pp := range p.set.All {
			observe(pp.Name, len(pp.ready))
		}
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Pooled reports whether any profile is pooled.
func (p *Pool[M]) Pooled() bool { return len(p.set.All) > 0 }

// Fill is how full one profile's warm pool is.
type Fill struct {
	Profile string
	Ready   int // pre-started sandboxes ready to be claimed
	Target  int // how many the pool keeps ready now (between pool.min and pool.max)
	Max     int
}

// Fill reports every pooled profile's fill, in configuration order.
func (p *Pool[M]) Fill() []Fill {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Fill, 0, len(p.set.All))
	for _, pp := range p.set.All {
		out = append(out, Fill{Profile: pp.Name, Ready: len(pp.ready), Target: pp.target, Max: pp.Profile.Pool.Max})
	}
	return out
}

// Start marks the pool started. It fails if the pool was started or stopped before.
func (p *Pool[M]) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started || p.drained {
		return errors.New("started already")
	}
	p.started = true
	return nil
}

// Run starts every profile's refill loop, and the runtime's loops also, each in a
// goroutine of its own on a context (with ctx's values) that ends when the pool stops.
// It starts nothing when the pool has been stopped meanwhile.
func (p *Pool[M]) Run(ctx context.Context, also ...func(context.Context)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drained {
		return
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	for _, loop := range also {
		p.loops.Go(func() { loop(lctx) })
	}
	for _, pp := range p.set.All {
		p.loops.Go(func() { p.run(lctx, pp) })
	}
}

// Stop ends the pool: its loops end, its ready members are forgotten (the runtime removes
// them with the rest of its leftovers) and claims in progress are waited for. Creates
// after it are cold. It reports false when the pool was stopped before (and does nothing).
func (p *Pool[M]) Stop() bool {
	p.mu.Lock()
	if p.drained {
		p.mu.Unlock()
		return false
	}
	p.drained = true
	cancel := p.cancel
	for _, pp := range p.set.All {
		pp.ready = nil
	}
	p.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	p.loops.Wait()
	p.claims.Wait()
	return true
}

// run is one profile's refill loop: fill, then wait for a claim (kick) or the next check.
func (p *Pool[M]) run(ctx context.Context, pp *Profile[M]) {
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	for {
		p.fill(ctx, pp)
		select {
		case <-ctx.Done():
			return
		case <-pp.kick:
		case <-tick.C:
			p.check(ctx, pp)
			p.mu.Lock()
			if pp.empty {
				pp.target = min(pp.target+1, pp.Profile.Pool.Max)
			} else if pp.target > pp.Profile.Pool.Min {
				pp.target--
			}
			pp.empty = false
			p.mu.Unlock()
		}
	}
}

// fill makes members, at most fillParallelism at once, until pp holds its target. After a
// failure it stops until the next check or claim: a failing engine or cluster is not
// hammered.
func (p *Pool[M]) fill(ctx context.Context, pp *Profile[M]) {
	for ctx.Err() == nil {
		p.mu.Lock()
		need := pp.target - len(pp.ready)
		p.mu.Unlock()
		if need <= 0 {
			return
		}
		var (
			wg     sync.WaitGroup
			failed atomic.Bool
		)
		for range min(need, fillParallelism) {
			wg.Go(func() {
				m, err := p.cfg.Make(ctx, pp)
				if err != nil {
					failed.Store(true)
					if p.cfg.LogStoppedFills || ctx.Err() == nil {
						p.cfg.Log.WarnContext(ctx, "sandbox_pool_fill_failed", slog.String("profile", pp.Name),
							slog.String("error", err.Error()))
					}
					return
				}
				p.mu.Lock()
				pp.ready = append(pp.ready, m)
				p.mu.Unlock()
			})
		}
		wg.Wait()
		if failed.Load() {
			return
		}
	}
}

// check removes the ready members that Dead finds dead; fill replaces them.
func (p *Pool[M]) check(ctx context.Context, pp *Profile[M]) {
	p.mu.Lock()
	ready := append([]M(nil), pp.ready...)
	p.mu.Unlock()
	if len(ready) == 0 {
		return
	}
	for _, m := range p.cfg.Dead(ctx, pp, ready) {
		if !p.take(pp, m) {
			continue // claimed meanwhile: the claim looks again
		}
		p.cfg.Log.WarnContext(ctx, "sandbox_pool_member_dead", slog.String("profile", pp.Name),
			slog.String("container.id", p.cfg.ID(m)))
		if err := p.cfg.Destroy(ctx, m); err != nil {
			p.cfg.Log.WarnContext(ctx, "sandbox_pool_remove_failed", slog.String("error", err.Error()))
		}
	}
}

// take removes m from pp's ready list; false if it is not there.
func (p *Pool[M]) take(pp *Profile[M], m M) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, r := range pp.ready {
		if r == m {
			pp.ready = append(pp.ready[:i], pp.ready[i+1:]...)
			return true
		}
	}
	return false
}

// PutBack returns a member that a hand-out left untouched to pp's ready list, or removes
// it if the pool has been stopped meanwhile.
func (p *Pool[M]) PutBack(ctx context.Context, pp *Profile[M], m M) {
	p.mu.Lock()
	drained := p.drained
	if !drained {
		pp.ready = append(pp.ready, m)
	}
	p.mu.Unlock()
	if drained {
		_ = p.cfg.Destroy(ctx, m)
	}
}

// Claim hands out a ready member of the pool spec's agent draws from as the RUNNING
// sandbox of spec (its container id the member's ID), or reports false: then a cold
// create must follow. A profile without a pool is no miss; any other cold create is
// counted as one (sandbox.pool.misses), a hand-out as a hit with the time it took.
//
// cold, asked first, returns why no member will do for this create ("" when one may):
// the create is cold for that reason. Then handOut makes a member the sandbox of spec,
// the member having left the ready list: nil is a hit. An error from Cold ends the
// claim as that miss; any other is logged (sandbox_pool_claim_failed) and the next
// member tried, unless the error is Final, up to claimAttempts members: a miss for
// "error". A member handOut fails with is the runtime's to put back (PutBack) or remove.
// A miss for "empty" when none is ready.
func (p *Pool[M]) Claim(ctx context.Context, spec lifecycle.CreateSpec, cold func() string,
	handOut func(ctx context.Context, pp *Profile[M], m M) error) (sandbox.Session, bool) {
	pp := p.set.For(spec.AgentID)
	if pp == nil {
		return sandbox.Session{}, false
	}
	start := time.Now()
	if reason := cold(); reason != "" {
		p.miss(ctx, pp, reason)
		return sandbox.Session{}, false
	}
	for range claimAttempts {
		p.mu.Lock()
		if p.drained || len(pp.ready) == 0 {
			pp.empty = pp.empty || !p.drained
			p.mu.Unlock()
			p.miss(ctx, pp, "empty")
			return sandbox.Session{}, false
		}
		m := pp.ready[0]
		pp.ready = pp.ready[1:]
		p.claims.Add(1)
		p.mu.Unlock()

		err := handOut(ctx, pp, m)
		p.claims.Done()
		select {
		case pp.kick <- struct{}{}:
		default:
		}
		var c coldError
		switch {
		case err == nil:
			p.metrics.Hit(ctx, pp.Name, time.Since(start))
			return sandbox.Session{
				ID:          spec.SessionID,
				ChatID:      spec.ChatID,
				ContainerID: p.cfg.ID(m),
				Status:      sandbox.StatusRunning,
				CreatedAt:   spec.CreatedAt,
				ExpiresAt:   spec.ExpiresAt,
				AgentID:     spec.AgentID,
			}, true
		case errors.As(err, &c):
			p.miss(ctx, pp, c.reason)
			return sandbox.Session{}, false
		}
		p.cfg.Log.WarnContext(ctx, "sandbox_pool_claim_failed", slog.String("profile", pp.Name),
			slog.String("container.id", p.cfg.ID(m)), slog.String("error", err.Error()))
		if errors.As(err, new(finalError)) {
			break
		}
	}
	p.miss(ctx, pp, "error")
	return sandbox.Session{}, false
}

func (p *Pool[M]) miss(ctx context.Context, pp *Profile[M], reason string) {
	p.metrics.Miss(ctx, pp.Name, reason, 1)
}

// Cold is what a hand-out returns when the create must be cold for reason (one of
// Config.MissReasons): no other member is tried and nothing is logged.
func Cold(reason string) error { return coldError{reason} }

type coldError struct{ reason string }

func (e coldError) Error() string { return "pool: cold: " + e.reason }

// Final marks the error of a hand-out after which no other member may be tried (the
// chat holds something of this one now). It reads as err.
func Final(err error) error { return finalError{err} }

type finalError struct{ err error }

func (e finalError) Error() string { return e.err.Error() }
func (e finalError) Unwrap() error { return e.err }
