package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"

	"github.com/moby/moby/client"

	sbclient "github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/config"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/pgstore"
	"github.com/sandboxd/sandboxd/internal/sqlitestore"
	"github.com/sandboxd/sandboxd/internal/testing/sandboxdproc"
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
	srv, err := startSandboxd(ctx, sandboxdproc.Config{
		Binary: b.bin, Registry: w.dsn, Instance: w.instance, Dir: w.dir,
		VolumeRoot: w.volumes, Image: b.image, Settings: settings,
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
	restartWith := func(settings []string, edit func() error) (*sbclient.Client, error) {
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
	restart := func(edit func() error) (*sbclient.Client, error) { return restartWith(settings, edit) }
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

	if b.opts.takes("reuse") {
		if err := b.reuse(ctx, reg.name, srv.base, api); err != nil {
			return fmt.Errorf("%s: reuse: %w", reg.name, err)
		}
	}
	if b.opts.takes("exec") {
		if err := b.execs(ctx, reg.name, srv.base, api); err != nil {
			return fmt.Errorf("%s: exec: %w", reg.name, err)
		}
	}
	if b.opts.takes("hotchat") {
		if err := b.hotChat(ctx, reg.name, srv.base, api); err != nil {
			return fmt.Errorf("%s: hot chat: %w", reg.name, err)
		}
	}
	var cold createTimes
	if b.opts.takes("cold") || b.opts.takes("pool") {
		if cold, err = b.cold(ctx, reg.name, api, d); err != nil {
			return fmt.Errorf("%s: cold create: %w", reg.name, err)
		}
	}
	if b.opts.takes("parallel") {
		if err := b.parallelCreates(ctx, reg.name, api, d); err != nil {
			return fmt.Errorf("%s: parallel creates: %w", reg.name, err)
		}
	}
	if b.opts.takes("drain") {
		if err := b.drain(ctx, reg.name, w, api, restart, d); err != nil {
			return fmt.Errorf("%s: sweep drain: %w", reg.name, err)
		}
	}
	if b.opts.takes("restartdrain") {
		if err := b.restartDrain(ctx, reg.name, w, api, restartWith, d); err != nil {
			return fmt.Errorf("%s: restart drain: %w", reg.name, err)
		}
	}
	if err := srv.stop(); err != nil {
		return err
	}
	if len(b.opts.PoolEnv) > 0 && b.opts.takes("pool") {
		if err := b.pool(ctx, reg, cold); err != nil {
			return fmt.Errorf("%s: warm pool: %w", reg.name, err)
		}
	}
	if b.opts.takes("memory") {
		if err := b.memory(ctx, reg); err != nil {
			return fmt.Errorf("%s: memory: %w", reg.name, err)
		}
	}
	if b.opts.takes("registry") {
		if err := b.registryOps(ctx, reg); err != nil {
			return fmt.Errorf("%s: registry operations: %w", reg.name, err)
		}
	}
	return nil
}
