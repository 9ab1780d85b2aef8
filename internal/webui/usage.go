package webui

import (
	"context"
	"sync"
	"time"
)

// usageCache keeps the latest two readings of each sandbox's resource use, so that a list
// shown to any number of viewers, refreshed as often as they like, asks the engine about
// each sandbox at most once per period.
type usageCache struct {
	fetch func(context.Context, string) (Sample, error)
	every time.Duration
	now   func() time.Time

	mu      sync.Mutex
	entries map[string]*usageEntry
}

type usageEntry struct {
	last, prev Sample
	asked      time.Time // when the engine was last asked (or failed)
	seen       time.Time // when a list last showed it
	ok         bool
}

// reading is what a row shows.
type reading struct {
	cpu    *float64
	memory uint64
	limit  uint64
}

// usageParallel bounds the engine calls of one refresh, usageTimeout its time.
const (
	usageParallel = 4
	usageTimeout  = 3 * time.Second
	usageForget   = 10 * time.Minute
)

func newUsageCache(fetch func(context.Context, string) (Sample, error), every time.Duration, now func() time.Time) *usageCache {
	return &usageCache{fetch: fetch, every: every, now: now, entries: map[string]*usageEntry{}}
}

// get returns the readings of ids, asking the engine again about those read longer ago
// than the period.
func (c *usageCache) get(ctx context.Context, ids []string) map[string]reading {
	now := c.now()
	var stale []string
	c.mu.Lock()
	for id, e := range c.entries {
		if now.Sub(e.seen) > usageForget {
			delete(c.entries, id)
		}
	}
	for _, id := range ids {
		e := c.entries[id]
		if e == nil {
			e = &usageEntry{}
			c.entries[id] = e
		}
		e.seen = now
		if now.Sub(e.asked) >= c.every {
			e.asked = now // whoever comes next meanwhile takes what there is
			stale = append(stale, id)
		}
	}
	c.mu.Unlock()

	if len(stale) > 0 {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), usageTimeout)
		defer cancel()
		sem := make(chan struct{}, usageParallel)
		var wg sync.WaitGroup
		for _, id := range stale {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				s, err := c.fetch(ctx, id)
				if err != nil {
					return // the last reading stays, if any
				}
				c.mu.Lock()
				if e := c.entries[id]; e != nil {
					e.prev, e.last, e.ok = e.last, s, true
				}
				c.mu.Unlock()
			})
		}
		wg.Wait()
	}

	out := make(map[string]reading, len(ids))
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		e := c.entries[id]
		if e == nil || !e.ok {
			continue
		}
		rd := reading{memory: e.last.Memory, limit: e.last.MemLimit}
		if cpu, ok := cpuPercent(e.prev, e.last); ok {
			rd.cpu = &cpu
		}
		out[id] = rd
	}
	return out
}

// cpuPercent is the CPU the sandbox used between two readings, in percent of one CPU
// (as docker stats shows it: 200 is two CPUs busy).
func cpuPercent(prev, last Sample) (float64, bool) {
	if prev.SystemCPU == 0 || last.SystemCPU <= prev.SystemCPU || last.CPUNanos < prev.CPUNanos {
		return 0, false
	}
	cpus := float64(last.OnlineCPUs)
	if cpus == 0 {
		cpus = 1
	}
	return float64(last.CPUNanos-prev.CPUNanos) / float64(last.SystemCPU-prev.SystemCPU) * cpus * 100, true
}
