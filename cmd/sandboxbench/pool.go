package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// pool: creates through a sandboxd whose warm pool is on, against the cold creates
// through sandboxd of the same run. Before each create the pool is full (polled on
// /metrics, untimed); a create counts as a pool measurement only when sandbox_pool_hits
// grew by one across it.
func (b *bench) pool(ctx context.Context, reg registry, cold createTimes) error {
	w, err := b.newWorld(ctx, reg, "pool")
	if err != nil {
		return err
	}
	defer w.drop()
	srv, api, err := b.start(ctx, w, append([]string{"SANDBOXD_TTL=1h"}, b.opts.PoolEnv...)...)
	if err != nil {
		return err
	}
	defer srv.kill()
	want := poolMin(b.opts.PoolEnv)
	hit, creates, err := b.poolCreates(ctx, srv.base, b.sandboxdOnDocker(api), b.opts.N, want,
		poolWait{within: time.Minute, words: "a minute", poll: 10 * time.Millisecond, what: "sandboxes"})
	if err != nil {
		return err
	}
	base := "cold create via sandboxd"
	note := fmt.Sprintf("%d of %d creates were pool hits (sandbox_pool_hits_total deltas); only hits are counted. The pool held %d ready sandboxes before each create (polled on /metrics, untimed)",
		len(hit.answer), creates, want)
	p50, p99 := quantile(hit.answer, 0.5), quantile(hit.answer, 0.99)
	b.add(newRow(reg.name, "pool create p50 (answered, exec-ready)", "ms", p50, quantile(cold.answer, 0.5), base, len(hit.answer),
		Target{On: "value", Op: "<", Limit: 50}, Target{On: "ratio", Op: "<=", Limit: 0.2}))
	b.rows[len(b.rows)-1].Note = note
	b.add(newRow(reg.name, "pool create p99 (answered, exec-ready)", "ms", p99, quantile(cold.answer, 0.99), base, len(hit.answer),
		Target{On: "value", Op: "<", Limit: 150}))
	b.add(newRow(reg.name, "pool create p50 + first exec", "ms", quantile(hit.firstExec, 0.5), quantile(cold.firstExec, 0.5), base+" + first exec", len(hit.firstExec)))
	b.add(newRow(reg.name, "pool create p99 + first exec", "ms", quantile(hit.firstExec, 0.99), quantile(cold.firstExec, 0.99), base+" + first exec", len(hit.firstExec)))
	return srv.stop()
}

// poolWait is how long poolCreates waits for a full pool before each create (within,
// said in words), how often it polls, and what the pool holds.
type poolWait struct {
	within      time.Duration
	words, what string
	poll        time.Duration
}

// poolCreates: n+1 creates through sandboxd (at base) whose pool is on, the first a
// warm-up, each after the pool holds want (polled on /metrics, untimed). Only the pool
// hits are returned (sandbox_pool_hits_total grew by one across the create, read after
// the create was proven exec-ready), with how many creates were counted; none is an error.
func (b *bench) poolCreates(ctx context.Context, base string, sb viaSandboxd, n, want int, wait poolWait) (hit createTimes, creates int, err error) {
	full := func() (hits float64, err error) {
		for deadline := time.Now().Add(wait.within); ; time.Sleep(wait.poll) {
			m, err := b.poolMetrics(ctx, base)
			if err != nil {
				return 0, err
			}
			if m.size >= float64(want) {
				return m.hits, nil
			}
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("the warm pool holds %g %s %s after the last create, want %d", m.size, wait.what, wait.words, want)
			}
		}
	}
	for i := range n + 1 { // the first create warms up and is not recorded
		before, err := full()
		if err != nil {
			return hit, creates, err
		}
		var m poolState
		answer, firstExec, err := sb.create(ctx, func() (err error) {
			m, err = b.poolMetrics(ctx, base)
			return err
		})
		if err != nil {
			return hit, creates, err
		}
		if i == 0 {
			continue
		}
		creates++
		if m.hits-before == 1 {
			hit.add(answer, firstExec)
		}
	}
	if len(hit.answer) == 0 {
		return hit, creates, fmt.Errorf("none of %d creates was served by the pool", creates)
	}
	return hit, creates, nil
}

// poolMin is the default profile's pool.min that settings set (1 if they do not say).
func poolMin(settings []string) int {
	want := 1
	for _, kv := range settings {
		if v, ok := strings.CutPrefix(kv, "SANDBOXD_AGENTS_DEFAULT_POOL_MIN="); ok {
			want, _ = strconv.Atoi(v)
		}
	}
	return want
}

// poolState is what /metrics says of the default profile's pool.
type poolState struct{ size, hits float64 }

// poolMetrics reads sandbox_pool_size and sandbox_pool_hits_total of the default profile
// from sandboxd's /metrics (Prometheus text; a counter not yet incremented is absent: 0).
func (b *bench) poolMetrics(ctx context.Context, base string) (poolState, error) {
	var st poolState
	data, err := b.metrics(ctx, base)
	if err != nil {
		return st, err
	}
	sized := false
	for _, line := range strings.Split(data, "\n") {
		name, rest, ok := strings.Cut(line, "{")
		if !ok || !strings.Contains(rest, `profile="default"`) {
			continue
		}
		_, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return st, fmt.Errorf("GET /metrics: %q: %w", line, err)
		}
		switch name {
		case "sandbox_pool_size":
			st.size, sized = v, true
		case "sandbox_pool_hits_total":
			st.hits = v
		}
	}
	if !sized {
		return st, errors.New("GET /metrics: no sandbox_pool_size of the default profile (is the pool on?)")
	}
	return st, nil
}

// metrics is sandboxd's /metrics (Prometheus text).
func (b *bench) metrics(ctx context.Context, base string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return string(data), nil
}
