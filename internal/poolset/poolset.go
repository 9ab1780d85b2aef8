// Package poolset is what every runtime's warm pool shares: which agent profiles are
// pooled (pool.min > 0) and which pool an agent's create draws from, and the pool's
// instruments (sandbox.pool.hits, sandbox.pool.misses, sandbox.pool.claim.duration,
// sandbox.pool.size), so that the Docker and Kubernetes pools count the same way, and the
// pool itself (Pool): each profile's refill loop and target, the ready lists, the checks
// that replace dead members, claims and their attempts, start and stop. How a pooled
// sandbox is made, checked, handed out and removed, and what a dead pool left, is each
// runtime's own (Config).
package poolset

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/sandboxd/sandboxd/internal/profile"
)

// DefaultName names the default profile's pool.
const DefaultName = "default"

// Set holds a runtime's pool of each pooled profile. It is read-only once made.
type Set[T any] struct {
	profiles *profile.Set
	def      *T            // the default profile's, or nil
	byAgent  map[string]*T // the listed profiles' that have one
	// All are every pooled profile's pools, the default one's first.
	All []*T
}

// New makes one pool with newPool for each profile of profiles whose pool.min is set:
// the default profile's named DefaultName, a listed one's by its agent id.
func New[T any](profiles *profile.Set, newPool func(name string, p profile.Profile) *T) *Set[T] {
	s := &Set[T]{profiles: profiles, byAgent: map[string]*T{}}
	add := func(name string, p profile.Profile) *T {
		if p.Pool.Min == 0 {
			return nil
		}
		pool := newPool(name, p)
		s.All = append(s.All, pool)
		return pool
	}
	s.def = add(DefaultName, profiles.Default())
	for _, agent := range profiles.Agents() {
		if pool := add(agent, profiles.Of(agent)); pool != nil {
			s.byAgent[agent] = pool
		}
	}
	return s
}

// For returns the pool of the profile agentID gets (its own when listed, else the
// default one), or nil when that profile has none.
func (s *Set[T]) For(agentID string) *T {
	if agentID != "" && s.profiles.Listed(agentID) {
		return s.byAgent[agentID]
	}
	return s.def
}

// Metrics are a pool's instruments, labelled by profile (the pool's name).
type Metrics struct {
	hits, misses metric.Int64Counter
	claimTime    metric.Float64Histogram
}

// NewMetrics makes the instruments on meter for the pools named profiles, each
// (profile, reason) of missReasons counted from 0 so that rate() works from the first
// scrape. ready reports each pool's ready sandboxes when the size gauge is read: it calls
// observe once per pool.
func NewMetrics(meter metric.Meter, profiles, missReasons []string, ready func(observe func(profile string, n int))) (*Metrics, error) {
	m := &Metrics{}
	var errs [4]error
	m.hits, errs[0] = meter.Int64Counter("sandbox.pool.hits",
		metric.WithDescription("Creates served by a pre-started sandbox."))
	m.misses, errs[1] = meter.Int64Counter("sandbox.pool.misses",
		metric.WithDescription("Creates of a pooled profile that fell back to a cold create, by reason."))
	m.claimTime, errs[2] = meter.Float64Histogram("sandbox.pool.claim.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to hand out a pre-started sandbox."))
	_, errs[3] = meter.Int64ObservableGauge("sandbox.pool.size",
		metric.WithDescription("Ready pre-started sandboxes."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			ready(func(profile string, n int) { o.Observe(int64(n), profileAttr(profile)) })
			return nil
		}))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("pool metrics: %w", err)
	}
	for _, p := range profiles {
		m.hits.Add(context.Background(), 0, profileAttr(p))
		for _, reason := range missReasons {
			m.Miss(context.Background(), p, reason, 0)
		}
	}
	return m, nil
}

// Hit counts a create served by profile's pool, whose claim took took.
func (m *Metrics) Hit(ctx context.Context, profile string, took time.Duration) {
	m.hits.Add(ctx, 1, profileAttr(profile))
	m.claimTime.Record(ctx, took.Seconds(), profileAttr(profile))
}

// Miss counts n creates of profile that were cold, for reason.
func (m *Metrics) Miss(ctx context.Context, profile, reason string, n int64) {
	m.misses.Add(ctx, n, metric.WithAttributes(attribute.String("profile", profile), attribute.String("reason", reason)))
}

func profileAttr(profile string) metric.MeasurementOption {
	return metric.WithAttributes(attribute.String("profile", profile))
}
