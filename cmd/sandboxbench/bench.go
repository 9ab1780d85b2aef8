package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/moby/moby/client"

	sbclient "github.com/sandboxd/sandboxd/internal/client"
	"github.com/sandboxd/sandboxd/internal/config"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/pgstore"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/sqlitestore"
)

// bench holds what every measurement shares.
type bench struct {
	opts  options
	cli   *client.Client // the engine, for the baselines and exec-readiness
	bin   string         // sandboxd
	image string
	runID string // prefix of every instance id of this run
	tmp   string
	hc    *http.Client // the one HTTP client of sandboxd and the trivial server
	log   io.Writer
	rows  []Row
}

// registry makes a fresh, empty registry for one sandboxd: its DSN and a cleanup.
type registry struct {
	name  string
	fresh func(ctx context.Context, dir string) (dsn string, drop func(), err error)
}

func sqliteRegistry() registry {
	return registry{name: "sqlite", fresh: func(_ context.Context, dir string) (string, func(), error) {
		return "sqlite:" + filepath.Join(dir, "sandboxd.db"), func() {}, nil
	}}
}

func postgresRegistry(admin string, maxConns int) registry {
	return registry{name: "postgres", fresh: func(ctx context.Context, _ string) (string, func(), error) {
		dsn, drop, err := newDatabase(ctx, admin)
		if err != nil || maxConns <= 0 {
			return dsn, drop, err
		}
		u, err := url.Parse(dsn)
		if err != nil {
			drop()
			return "", nil, err
		}
		q := u.Query()
		q.Set("pool_max_conns", strconv.Itoa(maxConns))
		u.RawQuery = q.Encode()
		return u.String(), drop, nil
	}}
}

// store is what the bench uses of a registry directly.
type store interface {
	lifecycle.Store
	Ping(ctx context.Context) error
	Close() error
}

func openStore(ctx context.Context, dsn string) (store, error) {
	kind, target, err := config.ParseRegistry(dsn)
	if err != nil {
		return nil, err
	}
	if kind == "sqlite" {
		return sqlitestore.Open(ctx, target)
	}
	return pgstore.Open(ctx, target)
}

func (b *bench) add(r Row) {
	b.rows = append(b.rows, r)
	fmt.Fprintf(b.log, "  %-40s %12s vs %12s  ratio %.3f\n", r.Name, format(r.Value, r.Unit), format(r.Baseline, r.Unit), r.Ratio)
}

// world is one sandboxd's data folder, volume root and instance id.
type world struct {
	dir, volumes, instance, dsn string
	drop                        func()
}

func (b *bench) newWorld(ctx context.Context, reg registry, tag string) (*world, error) {
	dir, err := os.MkdirTemp(b.tmp, reg.name+"-"+tag+"-")
	if err != nil {
		return nil, err
	}
	w := &world{dir: dir, volumes: filepath.Join(dir, "volumes"), instance: b.runID + "-" + reg.name + "-" + tag}
	if err := os.MkdirAll(w.volumes, 0o755); err != nil {
		return nil, err
	}
	w.dsn, w.drop, err = reg.fresh(ctx, dir)
	return w, err
}

func (b *bench) start(ctx context.Context, w *world, settings ...string) (*child, *sbclient.Client, error) {
	srv, err := startSandboxd(ctx, sandboxdSetup{
		bin: b.bin, registry: w.dsn, instance: w.instance, dataDir: w.dir,
		volumeRoot: w.volumes, image: b.image, settings: settings,
	})
	if err != nil {
		return nil, nil, err
	}
	api, err := sbclient.New(srv.base, benchToken, b.hc)
	if err != nil {
		srv.kill()
		return nil, nil, err
	}
	return srv, api, nil
}

// runRegistry takes every measurement on one registry.
func (b *bench) runRegistry(ctx context.Context, reg registry) (err error) {
	fmt.Fprintf(b.log, "%s:\n", reg.name)
	w, err := b.newWorld(ctx, reg, "main")
	if err != nil {
		return err
	}
	defer w.drop()
	settings := []string{
		"SANDBOXD_TTL=1h",
		"SANDBOXD_SWEEP_INTERVAL=" + b.opts.SweepInterval.String(),
		"SANDBOXD_SWEEP_PARALLELISM=" + strconv.Itoa(b.opts.DrainParallel),
	}
	srv, api, err := b.start(ctx, w, settings...)
	if err != nil {
		return err
	}
	defer func() { srv.kill() }()
	// restart stops sandboxd, runs edit while it is down, and starts it again on the same
	// data: the registry may only be changed behind sandboxd's back while it is down (an
	// SQLite registry belongs to one process, which caches what it read).
	restart := func(edit func() error) (*sbclient.Client, error) {
		if err := srv.stop(); err != nil {
			return nil, err
		}
		if err := edit(); err != nil {
			return nil, err
		}
		var err error
		srv, api, err = b.start(ctx, w, settings...)
		return api, err
	}
	d, err := newDirect(b.cli, w.instance+"-direct", w.volumes, b.image)
	if err != nil {
		return err
	}
	defer d.close()
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\nsandboxd's last log lines:\n%s", err, srv.logTail())
		}
	}()

	if err := b.reuse(ctx, reg.name, srv.base, api); err != nil {
		return fmt.Errorf("%s: reuse: %w", reg.name, err)
	}
	cold, err := b.cold(ctx, reg.name, api, d)
	if err != nil {
		return fmt.Errorf("%s: cold create: %w", reg.name, err)
	}
	if err := b.parallelCreates(ctx, reg.name, api, d); err != nil {
		return fmt.Errorf("%s: parallel creates: %w", reg.name, err)
	}
	if err := b.drain(ctx, reg.name, w, api, restart, d); err != nil {
		return fmt.Errorf("%s: sweep drain: %w", reg.name, err)
	}
	if err := srv.stop(); err != nil {
		return err
	}
	if len(b.opts.PoolEnv) > 0 {
		if err := b.pool(ctx, reg, cold); err != nil {
			return fmt.Errorf("%s: warm pool: %w", reg.name, err)
		}
	}
	if err := b.memory(ctx, reg); err != nil {
		return fmt.Errorf("%s: memory: %w", reg.name, err)
	}
	if err := b.registryOps(ctx, reg); err != nil {
		return fmt.Errorf("%s: registry operations: %w", reg.name, err)
	}
	return nil
}

// reuse: PUTs on live sessions, Workers at once, against the trivial route of the same
// sandboxd (GET /healthz: same process, http.Server, mux, huma API and middleware; see
// healthz), and, for context only, against a bare net/http handler in a process of its own.
func (b *bench) reuse(ctx context.Context, reg string, base string, api *sbclient.Client) error {
	chats := make([]string, b.opts.Workers)
	for i := range chats {
		chats[i] = uuid.NewString()
		if _, _, err := api.Create(ctx, chats[i], sbclient.CreateBody{}); err != nil {
			return err
		}
	}
	defer func() {
		for _, c := range chats {
			_, _ = api.Delete(context.WithoutCancel(ctx), c)
		}
	}()
	bare, err := startTrivial(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = bare.stop() }()
	bapi, err := sbclient.New(bare.base, benchToken, b.hc)
	if err != nil {
		return err
	}

	type side struct {
		op        func(ctx context.Context, worker int) error
		lat       []time.Duration
		wall      time.Duration
		recording bool
	}
	put := func(api *sbclient.Client) func(ctx context.Context, i int) error {
		return func(ctx context.Context, i int) error {
			_, res, err := api.Create(ctx, chats[i], sbclient.CreateBody{})
			if err == nil && res != sbclient.Reused {
				err = fmt.Errorf("PUT on a live session: %s, want reused", res)
			}
			return err
		}
	}
	sides := []*side{
		{op: put(api)}, // sandboxd
		{op: func(ctx context.Context, _ int) error { return b.healthz(ctx, base) }}, // the ceiling
		{op: put(bapi)}, // context only
	}
	burst := func(s *side, total int) error {
		per := max(1, total/len(chats))
		lat := make([][]time.Duration, len(chats))
		start := time.Now()
		err := parallel(ctx, len(chats), len(chats), func(ctx context.Context, i int) error {
			lat[i] = make([]time.Duration, 0, per)
			for range per {
				t := time.Now()
				if err := s.op(ctx, i); err != nil {
					return err
				}
				lat[i] = append(lat[i], time.Since(t))
			}
			return nil
		})
		if s.recording {
			s.lat, s.wall = append(s.lat, slices.Concat(lat...)...), s.wall+time.Since(start)
		}
		return err
	}
	// Warm every side (connections, caches), then alternate halves in rotating order so
	// that drift hits all alike.
	for _, s := range sides {
		if err := burst(s, min(200, b.opts.Reuse)); err != nil {
			return err
		}
		s.recording = true
	}
	for half := range 2 {
		for k := range sides {
			if err := burst(sides[(k+half)%len(sides)], b.opts.Reuse/2); err != nil {
				return err
			}
		}
	}
	s, h, t := sides[0], sides[1], sides[2]
	tput := func(x *side) float64 { return float64(len(x.lat)) / x.wall.Seconds() }
	hName := "GET /healthz, same sandboxd"
	b.add(newRow(reg, fmt.Sprintf("reuse throughput (%d clients)", len(chats)), "req/s",
		tput(s), tput(h), hName, len(s.lat), Target{On: "ratio", Op: ">=", Limit: 0.5}))
	b.rows[len(b.rows)-1].Note = "the ceiling is sandboxd's own trivial route on the same process, server, mux, huma API, auth and request-log middleware; " +
		"/healthz is outside /v1/, so the bearer token it carries is not checked, no body is read and its answer is smaller"
	b.add(newRow(reg, "reuse p50", "ms", quantile(s.lat, 0.5), quantile(h.lat, 0.5), hName, len(s.lat)))
	b.add(newRow(reg, "reuse p99", "ms", quantile(s.lat, 0.99), quantile(h.lat, 0.99), hName, len(s.lat)))
	b.add(newRow(reg, fmt.Sprintf("context: reuse throughput vs bare handler (%d clients)", len(chats)), "req/s",
		tput(s), tput(t), "bare net/http handler, other process", len(s.lat)))
	b.rows[len(b.rows)-1].Note = fmt.Sprintf("not the issue's ceiling: a constant answer from a bare handler with sandboxd's http.Server settings, "+
		"no router, middleware or logging (p50 %.2f ms, p99 %.2f ms); GET /healthz on sandboxd: %.0f req/s, %.2f of it",
		quantile(t.lat, 0.5), quantile(t.lat, 0.99), tput(h), tput(h)/tput(t))
	return nil
}

// healthz is one GET /healthz on sandboxd, sent like the API client's requests (bearer
// token, Accept: application/json) and its answer read and decoded as they are.
func (b *bench) healthz(ctx context.Context, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+benchToken)
	req.Header.Set("Accept", "application/json")
	resp, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var probe struct{ Status string }
	if err := json.Unmarshal(data, &probe); err != nil || resp.StatusCode != http.StatusOK || probe.Status != "ok" {
		return fmt.Errorf("GET /healthz: %s %q (%v)", resp.Status, data, err)
	}
	return nil
}

// createTimes are the creates of one kind: until the answer (the PUT's, or the Engine
// API's start), and until the first exec of `true` after it has finished.
type createTimes struct{ answer, firstExec []time.Duration }

func (c *createTimes) add(answer, firstExec time.Duration) {
	c.answer, c.firstExec = append(c.answer, answer), append(c.firstExec, firstExec)
}

// provenReady is the exec-readiness check after a timed create: one exec of `true` in
// the container, at once and without retry. It must succeed, or the create handed out a
// sandbox that was not exec-ready and the run fails.
func (b *bench) provenReady(ctx context.Context, what, id string) error {
	if err := execTrue(ctx, b.cli, id); err != nil {
		return fmt.Errorf("%s %s was not exec-ready when it answered: %w", what, id, err)
	}
	return nil
}

// cold: one create at a time, sandboxd and direct alternating, timed until the answer,
// each proven exec-ready right after (untimed in the main figure).
func (b *bench) cold(ctx context.Context, reg string, api *sbclient.Client, d *direct) (sandboxd createTimes, err error) {
	var s, e createTimes
	var probes []time.Duration
	viaSandboxd := func(record bool) error {
		chat := uuid.NewString()
		t := time.Now()
		got, _, err := api.Create(ctx, chat, sbclient.CreateBody{})
		if err != nil {
			return err
		}
		answer := time.Since(t)
		if err := b.provenReady(ctx, "sandbox", got.ContainerID); err != nil {
			return err
		}
		firstExec := time.Since(t)
		if _, err := api.Delete(ctx, chat); err != nil {
			return err
		}
		if record {
			s.add(answer, firstExec)
		}
		return nil
	}
	viaEngine := func(record bool) error {
		opts, _, err := d.prepare(uuid.New(), time.Now().Add(time.Hour))
		if err != nil {
			return err
		}
		t := time.Now()
		id, err := d.createStart(ctx, opts)
		if err != nil {
			return err
		}
		answer := time.Since(t)
		if err := b.provenReady(ctx, "container", id); err != nil {
			return err
		}
		firstExec := time.Since(t)
		// The exec's own cost: one more exec of true, on the container that now runs.
		t = time.Now()
		if err := execTrue(ctx, b.cli, id); err != nil {
			return err
		}
		probe := time.Since(t)
		if err := removeContainer(ctx, b.cli, id); err != nil {
			return err
		}
		if record {
			e.add(answer, firstExec)
			probes = append(probes, probe)
		}
		return nil
	}
	for i := range b.opts.N + 1 { // the first round warms up and is not recorded
		first, second := viaSandboxd, viaEngine
		if i%2 == 1 {
			first, second = viaEngine, viaSandboxd
		}
		if err := first(i > 0); err != nil {
			return s, err
		}
		if err := second(i > 0); err != nil {
			return s, err
		}
	}
	base := "Engine API create+start"
	b.add(newRow(reg, "cold create p50 (answered, exec-ready)", "ms", quantile(s.answer, 0.5), quantile(e.answer, 0.5), base, len(s.answer),
		Target{On: "ratio", Op: "<=", Limit: 1.10}))
	b.add(newRow(reg, "cold create p99 (answered, exec-ready)", "ms", quantile(s.answer, 0.99), quantile(e.answer, 0.99), base, len(s.answer)))
	b.add(newRow(reg, "cold create p50 + first exec", "ms", quantile(s.firstExec, 0.5), quantile(e.firstExec, 0.5), base+" + first exec", len(s.firstExec)))
	b.add(newRow(reg, "cold create p99 + first exec", "ms", quantile(s.firstExec, 0.99), quantile(e.firstExec, 0.99), base+" + first exec", len(s.firstExec)))
	b.add(newRow(reg, "exec of true on a running sandbox p50", "ms", quantile(probes, 0.5), quantile(e.answer, 0.5), base, len(probes)))
	b.rows[len(b.rows)-1].Note = "one exec (ExecCreate, attach, inspect) on a container that already runs: the engine's own cost, in every \"+ first exec\" figure"
	return s, nil
}

// parallelCreates: Parallel distinct chats at once, wall time until every PUT answered,
// against as many direct create+starts at once; the median of Rounds rounds.
func (b *bench) parallelCreates(ctx context.Context, reg string, api *sbclient.Client, d *direct) error {
	n := b.opts.Parallel
	var sWalls, dWalls []time.Duration
	for round := range b.opts.Rounds {
		viaSandboxd := func() error {
			chats := make([]string, n)
			for i := range chats {
				chats[i] = uuid.NewString()
			}
			start := time.Now()
			err := parallel(ctx, n, n, func(ctx context.Context, i int) error {
				_, _, err := api.Create(ctx, chats[i], sbclient.CreateBody{})
				return err
			})
			sWalls = append(sWalls, time.Since(start))
			return errors.Join(err, parallel(ctx, n, 8, func(ctx context.Context, i int) error {
				_, err := api.Delete(ctx, chats[i])
				return err
			}))
		}
		viaEngine := func() error {
			opts := make([]client.ContainerCreateOptions, n)
			for i := range opts {
				var err error
				if opts[i], _, err = d.prepare(uuid.New(), time.Now().Add(time.Hour)); err != nil {
					return err
				}
			}
			ids := make([]string, n)
			start := time.Now()
			err := parallel(ctx, n, n, func(ctx context.Context, i int) error {
				var err error
				ids[i], err = d.createStart(ctx, opts[i])
				return err
			})
			dWalls = append(dWalls, time.Since(start))
			return errors.Join(err, parallel(ctx, n, 8, func(ctx context.Context, i int) error {
				if ids[i] == "" {
					return nil
				}
				return removeContainer(ctx, b.cli, ids[i])
			}))
		}
		first, second := viaSandboxd, viaEngine
		if round%2 == 1 {
			first, second = viaEngine, viaSandboxd
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
	}
	b.add(newRow(reg, fmt.Sprintf("%d distinct creates at once, wall", n), "ms", median(sWalls), median(dWalls),
		fmt.Sprintf("%d Engine API create+starts at once", n), len(sWalls),
		Target{On: "ratio", Op: "<=", Limit: 1.25}))
	return nil
}

// drain: Drain sandboxes made through sandboxd, all made to expire at the same instant
// (their expiry moved in the registry while sandboxd is stopped, then it starts again
// before that instant), timed from that instant until the engine lists none of them;
// against removing as many containers directly, DrainParallel at once.
func (b *bench) drain(ctx context.Context, reg string, w *world, api *sbclient.Client,
	restart func(edit func() error) (*sbclient.Client, error), d *direct) error {
	n := b.opts.Drain
	st, err := openStore(ctx, w.dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	var sDrains, dDrains []time.Duration
	for range b.opts.Rounds {
		chats := make([]uuid.UUID, n)
		sessions := make([]uuid.UUID, n)
		err := parallel(ctx, n, 8, func(ctx context.Context, i int) error {
			chats[i] = uuid.New()
			s, _, err := api.Create(ctx, chats[i].String(), sbclient.CreateBody{})
			if err != nil {
				return err
			}
			sessions[i], err = uuid.Parse(s.SessionID)
			return err
		})
		if err != nil {
			return err
		}
		// The margin covers stopping sandboxd, moving the expiries and starting it again.
		expiry := time.Now().Add(10*time.Second + time.Duration(n)*20*time.Millisecond)
		api, err = restart(func() error {
			for _, id := range sessions {
				if err := st.SetExpiry(ctx, id, expiry); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if time.Now().After(expiry) {
			return errors.New("restarting sandboxd with the expiries moved took longer than the margin")
		}
		time.Sleep(time.Until(expiry))
		deadline := time.Now().Add(5 * time.Minute)
		gone, err := untilNone(ctx, b.cli, w.instance, deadline)
		if err != nil {
			return err
		}
		sDrains = append(sDrains, gone.Sub(expiry))
		for time.Now().Before(deadline) { // the sweep forgets the records after the containers
			if c, err := st.Count(ctx); err != nil || c == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}

		ids := make([]string, n)
		err = parallel(ctx, n, 8, func(ctx context.Context, i int) error {
			opts, _, err := d.prepare(uuid.New(), time.Now().Add(time.Hour))
			if err != nil {
				return err
			}
			ids[i], err = d.createStart(ctx, opts)
			return err
		})
		if err != nil {
			return err
		}
		// Timed as sandboxd's side is: until the engine lists none, polled every 20 ms
		// (the polling's load on the engine and its granularity are on both sides).
		start := time.Now()
		removed := make(chan error, 1)
		go func() {
			removed <- parallel(ctx, n, b.opts.DrainParallel, func(ctx context.Context, i int) error {
				return removeContainer(ctx, b.cli, ids[i])
			})
		}()
		gone, err = untilNone(ctx, b.cli, d.instance, time.Now().Add(5*time.Minute))
		if rerr := <-removed; rerr != nil {
			return rerr
		}
		if err != nil {
			return err
		}
		dDrains = append(dDrains, gone.Sub(start))
	}
	b.add(newRow(reg, fmt.Sprintf("sweep drain of %d expired", n), "ms", median(sDrains), median(dDrains),
		fmt.Sprintf("%d Engine API removes, %d at once", n, b.opts.DrainParallel), len(sDrains),
		Target{On: "ratio", Op: "<=", Limit: 1.25}))
	b.rows[len(b.rows)-1].Note = fmt.Sprintf("sweep interval %s, sweep parallelism %d; timed from the common expiry to the engine listing none (polled every 20 ms)",
		b.opts.SweepInterval, b.opts.DrainParallel)
	return nil
}

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
	want := 1
	for _, kv := range b.opts.PoolEnv {
		if v, ok := strings.CutPrefix(kv, "SANDBOXD_AGENTS_DEFAULT_POOL_MIN="); ok {
			want, _ = strconv.Atoi(v)
		}
	}
	full := func() (hits float64, err error) {
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
			m, err := b.poolMetrics(ctx, srv.base)
			if err != nil {
				return 0, err
			}
			if m.size >= float64(want) {
				return m.hits, nil
			}
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("the warm pool holds %g sandboxes a minute after the last create, want %d", m.size, want)
			}
		}
	}
	var hit createTimes
	creates := 0
	for i := range b.opts.N + 1 { // the first create warms up and is not recorded
		before, err := full()
		if err != nil {
			return err
		}
		chat := uuid.NewString()
		t := time.Now()
		s, _, err := api.Create(ctx, chat, sbclient.CreateBody{})
		if err != nil {
			return err
		}
		answer := time.Since(t)
		if err := b.provenReady(ctx, "sandbox", s.ContainerID); err != nil {
			return err
		}
		firstExec := time.Since(t)
		m, err := b.poolMetrics(ctx, srv.base)
		if err != nil {
			return err
		}
		if _, err := api.Delete(ctx, chat); err != nil {
			return err
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
		return fmt.Errorf("none of %d creates was served by the pool", creates)
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

// poolState is what /metrics says of the default profile's pool.
type poolState struct{ size, hits float64 }

// poolMetrics reads sandbox_pool_size and sandbox_pool_hits_total of the default profile
// from sandboxd's /metrics (Prometheus text; a counter not yet incremented is absent: 0).
func (b *bench) poolMetrics(ctx context.Context, base string) (poolState, error) {
	var st poolState
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return st, err
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sized := false
	for _, line := range strings.Split(string(data), "\n") {
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

// memory: sandboxd's RSS with Sessions records in its registry against one record. The
// records are written into the registry before sandboxd starts; all point at one real,
// running container of sandboxd's instance, so that the start-up reconciliation keeps
// them (a record whose container is gone would be repaired away).
func (b *bench) memory(ctx context.Context, reg registry) error {
	w, err := b.newWorld(ctx, reg, "mem")
	if err != nil {
		return err
	}
	defer w.drop()
	d, err := newDirect(b.cli, w.instance, w.volumes, b.image)
	if err != nil {
		return err
	}
	defer d.close()
	st, err := openStore(ctx, w.dsn)
	if err != nil {
		return err
	}
	defer st.Close()

	now := time.Now().UTC()
	expires := now.Add(time.Hour)
	opts, spec, err := d.prepare(uuid.New(), expires)
	if err != nil {
		return err
	}
	id, err := d.createStart(ctx, opts)
	if err != nil {
		return err
	}
	save := func(chat, session uuid.UUID) error {
		return st.Save(ctx, sandbox.Session{
			ID: session, ChatID: chat, ContainerID: id, Status: sandbox.StatusRunning,
			CreatedAt: now, ExpiresAt: expires, VolumeHostPath: filepath.Join(w.volumes, chat.String()),
		})
	}
	if err := save(spec.ChatID, spec.SessionID); err != nil {
		return err
	}

	measure := func(want int) (rss, peak int64, err error) {
		srv, api, err := b.start(ctx, w, "SANDBOXD_TTL=1h", "SANDBOXD_SWEEP_INTERVAL=1s")
		if err != nil {
			return 0, 0, err
		}
		defer srv.kill()
		// The same work in both runs: read the whole registry through the API, let two
		// sweeps pass, then read the RSS.
		seen := 0
		for after := ""; ; {
			page, err := api.List(ctx, sbclient.ListOptions{After: after, Limit: 1000})
			if err != nil {
				return 0, 0, err
			}
			seen += len(page.Items)
			if page.Next == "" {
				break
			}
			after = page.Next
		}
		if seen != want {
			return 0, 0, fmt.Errorf("sandboxd lists %d sessions, want %d (did the reconciler drop some?)", seen, want)
		}
		time.Sleep(b.opts.Settle)
		rss, peak, err = srv.rss()
		if err != nil {
			return 0, 0, err
		}
		return rss, peak, srv.stop()
	}
	rss1, peak1, err := measure(1)
	if err != nil {
		return err
	}
	for i := 1; i < b.opts.Sessions; i++ {
		if err := save(uuid.New(), uuid.New()); err != nil {
			return err
		}
	}
	rssN, peakN, err := measure(b.opts.Sessions)
	if err != nil {
		return err
	}
	if err := removeContainer(ctx, b.cli, id); err != nil {
		return err
	}
	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	b.add(newRow(reg.name, fmt.Sprintf("RSS with %d sessions", b.opts.Sessions), "MiB", mib(rssN), mib(rss1),
		"RSS with 1 session", 1))
	b.rows[len(b.rows)-1].Note = fmt.Sprintf("%.2f KiB per session ((RSS_N - RSS_1) / (N-1)); peak RSS (VmHWM) %.1f MiB vs %.1f MiB",
		float64(rssN-rss1)/1024/float64(b.opts.Sessions-1), mib(peakN), mib(peak1))
	return nil
}

// registryOps: the store's operations, one at a time on a fresh registry, against the
// round trip of a trivial statement (Ping, SELECT 1) on the same store.
func (b *bench) registryOps(ctx context.Context, reg registry) error {
	w, err := b.newWorld(ctx, reg, "ops")
	if err != nil {
		return err
	}
	defer w.drop()
	st, err := openStore(ctx, w.dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	n := b.opts.RegistryOps
	now := time.Now().UTC()
	sessions := make([]sandbox.Session, n)
	for i := range sessions {
		exp := now.Add(time.Hour)
		if i%2 == 0 {
			exp = now.Add(-time.Hour)
		}
		chat := uuid.New()
		sessions[i] = sandbox.Session{ID: uuid.New(), ChatID: chat, ContainerID: fmt.Sprintf("%064x", i),
			Status: sandbox.StatusRunning, CreatedAt: now, ExpiresAt: exp,
			VolumeHostPath: filepath.Join(w.volumes, chat.String())}
	}
	rate := func(count int, fn func(i int) error) (float64, error) {
		start := time.Now()
		for i := range count {
			if err := fn(i); err != nil {
				return 0, err
			}
		}
		return float64(count) / time.Since(start).Seconds(), nil
	}
	ping, err := rate(n, func(int) error { return st.Ping(ctx) })
	if err != nil {
		return err
	}
	lists := max(10, n/10)
	ops := []struct {
		name  string
		count int
		fn    func(i int) error
	}{
		{"Save", n, func(i int) error { return st.Save(ctx, sessions[i]) }},
		{"Get", n, func(i int) error { _, err := st.Get(ctx, sessions[i].ChatID); return err }},
		{"ListExpired (limit 100)", lists, func(int) error { _, err := st.ListExpired(ctx, now, lifecycle.ExpiredAfter{}, 100); return err }},
		{"Remove", n, func(i int) error { return st.Remove(ctx, sessions[i].ID) }},
	}
	for _, op := range ops {
		r, err := rate(op.count, op.fn)
		if err != nil {
			return fmt.Errorf("%s: %w", op.name, err)
		}
		b.add(newRow(reg.name, "registry "+op.name, "ops/s", r, ping, "Ping (SELECT 1)", op.count))
	}
	return nil
}
