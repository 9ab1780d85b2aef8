package main

import (
	"context"
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
	srv, api, err := b.start(ctx, w,
		"SANDBOXD_TTL=1h",
		"SANDBOXD_SWEEP_INTERVAL="+b.opts.SweepInterval.String(),
		"SANDBOXD_SWEEP_PARALLELISM="+strconv.Itoa(b.opts.DrainParallel))
	if err != nil {
		return err
	}
	defer srv.kill()
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

	if err := b.reuse(ctx, reg.name, api); err != nil {
		return fmt.Errorf("%s: reuse: %w", reg.name, err)
	}
	coldP50, coldP99, err := b.cold(ctx, reg.name, api, d)
	if err != nil {
		return fmt.Errorf("%s: cold create: %w", reg.name, err)
	}
	if err := b.parallelCreates(ctx, reg.name, api, d); err != nil {
		return fmt.Errorf("%s: parallel creates: %w", reg.name, err)
	}
	if err := b.drain(ctx, reg.name, w, api, d); err != nil {
		return fmt.Errorf("%s: sweep drain: %w", reg.name, err)
	}
	if err := srv.stop(); err != nil {
		return err
	}
	if len(b.opts.PoolEnv) > 0 {
		if err := b.pool(ctx, reg, coldP50, coldP99); err != nil {
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

// reuse: PUTs on live sessions, Workers at once, against the trivial handler.
func (b *bench) reuse(ctx context.Context, reg string, api *sbclient.Client) error {
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
	trivial, err := startTrivial(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = trivial.stop() }()
	tapi, err := sbclient.New(trivial.base, benchToken, b.hc)
	if err != nil {
		return err
	}

	burst := func(api *sbclient.Client, total int) ([]time.Duration, time.Duration, error) {
		per := max(1, total/len(chats))
		lat := make([][]time.Duration, len(chats))
		start := time.Now()
		err := parallel(ctx, len(chats), len(chats), func(ctx context.Context, i int) error {
			lat[i] = make([]time.Duration, 0, per)
			for range per {
				t := time.Now()
				_, res, err := api.Create(ctx, chats[i], sbclient.CreateBody{})
				if err != nil {
					return err
				}
				if res != sbclient.Reused {
					return fmt.Errorf("PUT on a live session: %s, want reused", res)
				}
				lat[i] = append(lat[i], time.Since(t))
			}
			return nil
		})
		return slices.Concat(lat...), time.Since(start), err
	}
	// Warm both (connections, caches), then alternate halves so drift hits both alike.
	for _, a := range []*sbclient.Client{tapi, api} {
		if _, _, err := burst(a, min(200, b.opts.Reuse)); err != nil {
			return err
		}
	}
	var (
		sLat, tLat   []time.Duration
		sWall, tWall time.Duration
	)
	for half := range 2 {
		order := []bool{true, false}
		if half == 1 {
			order = []bool{false, true}
		}
		for _, trivialFirst := range order {
			a := api
			if trivialFirst {
				a = tapi
			}
			lat, wall, err := burst(a, b.opts.Reuse/2)
			if err != nil {
				return err
			}
			if trivialFirst {
				tLat, tWall = append(tLat, lat...), tWall+wall
			} else {
				sLat, sWall = append(sLat, lat...), sWall+wall
			}
		}
	}
	base := "trivial handler"
	b.add(newRow(reg, fmt.Sprintf("reuse throughput (%d clients)", len(chats)), "req/s",
		float64(len(sLat))/sWall.Seconds(), float64(len(tLat))/tWall.Seconds(), base, len(sLat),
		Target{On: "ratio", Op: ">=", Limit: 0.5}))
	b.add(newRow(reg, "reuse p50", "ms", quantile(sLat, 0.5), quantile(tLat, 0.5), base, len(sLat)))
	b.add(newRow(reg, "reuse p99", "ms", quantile(sLat, 0.99), quantile(tLat, 0.99), base, len(sLat)))
	return nil
}

// cold: one create at a time until exec-ready, sandboxd and direct alternating.
func (b *bench) cold(ctx context.Context, reg string, api *sbclient.Client, d *direct) (p50, p99 float64, err error) {
	var sTotal, sPut, dTotal, dCreate, dProbe []time.Duration
	viaSandboxd := func(record bool) error {
		chat := uuid.NewString()
		t := time.Now()
		s, _, err := api.Create(ctx, chat, sbclient.CreateBody{})
		if err != nil {
			return err
		}
		put := time.Since(t)
		if err := execReady(ctx, b.cli, s.ContainerID); err != nil {
			return err
		}
		total := time.Since(t)
		if _, err := api.Delete(ctx, chat); err != nil {
			return err
		}
		if record {
			sTotal, sPut = append(sTotal, total), append(sPut, put)
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
		created := time.Since(t)
		if err := execReady(ctx, b.cli, id); err != nil {
			return err
		}
		total := time.Since(t)
		// The probe's own cost: one more exec of true, on the container that now runs.
		t = time.Now()
		if err := execTrue(ctx, b.cli, id); err != nil {
			return err
		}
		probe := time.Since(t)
		if err := removeContainer(ctx, b.cli, id); err != nil {
			return err
		}
		if record {
			dTotal, dCreate, dProbe = append(dTotal, total), append(dCreate, created), append(dProbe, probe)
		}
		return nil
	}
	for i := range b.opts.N + 1 { // the first round warms up and is not recorded
		first, second := viaSandboxd, viaEngine
		if i%2 == 1 {
			first, second = viaEngine, viaSandboxd
		}
		if err := first(i > 0); err != nil {
			return 0, 0, err
		}
		if err := second(i > 0); err != nil {
			return 0, 0, err
		}
	}
	base := "Engine API create+start"
	b.add(newRow(reg, "cold create p50 (to exec-ready)", "ms", quantile(sTotal, 0.5), quantile(dTotal, 0.5), base, len(sTotal),
		Target{On: "ratio", Op: "<=", Limit: 1.10}))
	b.add(newRow(reg, "cold create p99 (to exec-ready)", "ms", quantile(sTotal, 0.99), quantile(dTotal, 0.99), base, len(sTotal)))
	b.add(newRow(reg, "cold create p50, PUT vs create+start only", "ms", quantile(sPut, 0.5), quantile(dCreate, 0.5), base, len(sPut)))
	b.add(newRow(reg, "exec of true on a running sandbox p50", "ms", quantile(dProbe, 0.5), quantile(dTotal, 0.5), base+" to exec-ready", len(dProbe)))
	b.rows[len(b.rows)-1].Note = "the exec-ready probe alone (ExecCreate, attach, inspect), part of every figure to exec-ready"
	return quantile(sTotal, 0.5), quantile(sTotal, 0.99), nil
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
// (their expiry moved in the registry), timed from that instant until the engine lists
// none of them; against removing as many containers directly, DrainParallel at once.
func (b *bench) drain(ctx context.Context, reg string, w *world, api *sbclient.Client, d *direct) error {
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
		expiry := time.Now().Add(time.Second + time.Duration(n)*20*time.Millisecond)
		for _, id := range sessions {
			if err := st.SetExpiry(ctx, id, expiry); err != nil {
				return err
			}
		}
		if time.Now().After(expiry) {
			return errors.New("moving the expiries took longer than the margin")
		}
		time.Sleep(time.Until(expiry))
		deadline := time.Now().Add(5 * time.Minute)
		for {
			left, err := instanceContainers(ctx, b.cli, w.instance)
			if err != nil {
				return err
			}
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%d containers left 5 minutes after expiry", len(left))
			}
			time.Sleep(20 * time.Millisecond)
		}
		sDrains = append(sDrains, time.Since(expiry))
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
		start := time.Now()
		if err := parallel(ctx, n, b.opts.DrainParallel, func(ctx context.Context, i int) error {
			return removeContainer(ctx, b.cli, ids[i])
		}); err != nil {
			return err
		}
		dDrains = append(dDrains, time.Since(start))
	}
	b.add(newRow(reg, fmt.Sprintf("sweep drain of %d expired", n), "ms", median(sDrains), median(dDrains),
		fmt.Sprintf("%d Engine API removes, %d at once", n, b.opts.DrainParallel), len(sDrains),
		Target{On: "ratio", Op: "<=", Limit: 1.25}))
	b.rows[len(b.rows)-1].Note = fmt.Sprintf("sweep interval %s, sweep parallelism %d; timed from the common expiry to the engine listing none (polled every 20 ms)",
		b.opts.SweepInterval, b.opts.DrainParallel)
	return nil
}

// pool: creates through a sandboxd whose warm pool is on, to exec-ready, against the
// cold creates of the same run.
func (b *bench) pool(ctx context.Context, reg registry, coldP50, coldP99 float64) error {
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
	// Let the pool fill first: it holds pool.min containers of sandboxd's instance.
	want := 1
	for _, kv := range b.opts.PoolEnv {
		if v, ok := strings.CutPrefix(kv, "SANDBOXD_AGENTS_DEFAULT_POOL_MIN="); ok {
			want, _ = strconv.Atoi(v)
		}
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		ids, err := instanceContainers(ctx, b.cli, w.instance)
		if err != nil {
			return err
		}
		if len(ids) >= want {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the warm pool holds %d containers a minute after start, want %d", len(ids), want)
		}
	}
	var lat, puts []time.Duration
	for i := range b.opts.N + 1 {
		// Give the pool the time to refill between creates, as a chat rate below the
		// refill rate would; the wait is not timed.
		time.Sleep(b.opts.PoolGap)
		chat := uuid.NewString()
		t := time.Now()
		s, _, err := api.Create(ctx, chat, sbclient.CreateBody{})
		if err != nil {
			return err
		}
		put := time.Since(t)
		if err := execReady(ctx, b.cli, s.ContainerID); err != nil {
			return err
		}
		if i > 0 {
			lat, puts = append(lat, time.Since(t)), append(puts, put)
		}
		if _, err := api.Delete(ctx, chat); err != nil {
			return err
		}
	}
	base := "cold create via sandboxd"
	p50, p99 := quantile(lat, 0.5), quantile(lat, 0.99)
	b.add(newRow(reg.name, "pool create p50 (to exec-ready)", "ms", p50, coldP50, base, len(lat),
		Target{On: "value", Op: "<", Limit: 50}, Target{On: "ratio", Op: "<=", Limit: 0.2}))
	b.add(newRow(reg.name, "pool create p99 (to exec-ready)", "ms", p99, coldP99, base, len(lat),
		Target{On: "value", Op: "<", Limit: 150}))
	b.add(newRow(reg.name, "pool create p50, PUT only (no exec)", "ms", quantile(puts, 0.5), coldP50, base, len(puts)))
	return srv.stop()
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
