package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	sbclient "github.com/sandboxd/sandboxd/client"
)

// densityWidth is how many creates the density measurement runs at once.
const densityWidth = 4

// density: how many idle sandboxes this machine holds, and what each costs in memory.
// One sandboxd creates idle sandboxes (densityWidth at once) until it holds Density or a
// create fails; the RSS of sandboxd and of the engine (dockerd, containerd and the
// shims of this run's sandboxes) is read before the first create and after the last,
// and divided by the count. The engine's daemons are shared with whatever else runs on
// the machine, so their part is the growth from before to after; the shims are counted
// by the container they serve. Every sandbox is removed afterwards.
func (b *bench) density(ctx context.Context, reg registry) (err error) {
	n := b.opts.Density
	w, err := b.newWorld(ctx, reg, "density")
	if err != nil {
		return err
	}
	defer w.drop()
	srv, api, err := b.start(ctx, w, "SANDBOXD_TTL=1h", "SANDBOXD_SWEEP_INTERVAL=1m",
		"SANDBOXD_LIMITS_MAX_SANDBOXES="+strconv.Itoa(n))
	if err != nil {
		return err
	}
	defer srv.kill()
	defer func() { // every sandbox of the measurement goes, whatever happened
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		ids, lerr := instanceContainers(cctx, b.cli, w.instance)
		err = errors.Join(err, lerr, parallel(cctx, len(ids), 8, func(ctx context.Context, i int) error {
			return removeContainer(ctx, b.cli, ids[i])
		}))
	}()

	time.Sleep(b.opts.Settle)
	sd0, _, err := srv.rss()
	if err != nil {
		return err
	}
	eng0, err := engineRSS(nil)
	if err != nil {
		return err
	}

	var (
		made     atomic.Int64
		failed   atomic.Bool
		firstErr error
		errOnce  sync.Once
	)
	start := time.Now()
	_ = parallel(ctx, n, densityWidth, func(ctx context.Context, i int) error {
		if failed.Load() {
			return nil
		}
		if _, _, err := api.Create(ctx, uuid.NewString(), sbclient.CreateBody{}); err != nil {
			failed.Store(true)
			errOnce.Do(func() { firstErr = err })
			return err
		}
		made.Add(1)
		return nil
	})
	took := time.Since(start)
	count := int(made.Load())
	failure := "none"
	if firstErr != nil {
		failure = firstErr.Error()
	}
	fmt.Fprintf(b.log, "  density: %d of %d idle sandboxes in %s (first failure: %s)\n", count, n, took.Round(time.Second), failure)
	if count == 0 {
		return fmt.Errorf("no sandbox could be made: %w", firstErr)
	}

	time.Sleep(b.opts.Settle)
	sdN, sdPeak, err := srv.rss()
	if err != nil {
		return err
	}
	ids, err := instanceContainers(ctx, b.cli, w.instance)
	if err != nil {
		return err
	}
	engN, err := engineRSS(ids)
	if err != nil {
		return err
	}
	if len(ids) != count || engN.shims != count {
		return fmt.Errorf("the engine lists %d containers with %d shims of this run, sandboxd made %d", len(ids), engN.shims, count)
	}

	per := func(v int64) float64 { return float64(v) / float64(count) / (1 << 20) }
	daemons := (engN.dockerd - eng0.dockerd) + (engN.containerd - eng0.containerd)
	engine := daemons + engN.shimRSS
	asked := newRow(reg.name, "density: idle sandboxes held", "sandboxes", float64(count), float64(n), "asked (-density)", 1)
	asked.Note = fmt.Sprintf("made %d, %d at once, in %s; first failure: %s", count, densityWidth, took.Round(time.Second), failure)
	b.add(asked)
	total := newRow(reg.name, "density: memory per sandbox (sandboxd + engine)", "MiB", per(sdN+engine), per(engine),
		"engine alone (dockerd, containerd growth + shims) per sandbox", count)
	total.Note = fmt.Sprintf("sandboxd RSS %.1f MiB (peak %.1f) for %d sandboxes, %.1f MiB before; dockerd %+.1f MiB, containerd %+.1f MiB, %d shims %.1f MiB (PSS %.1f MiB: RSS counts their shared pages once each)",
		mib(sdN), mib(sdPeak), count, mib(sd0), mib(engN.dockerd-eng0.dockerd), mib(engN.containerd-eng0.containerd), engN.shims, mib(engN.shimRSS), mib(engN.shimPSS))
	b.add(total)
	b.add(newRow(reg.name, "density: sandboxd memory per tracked session", "KiB", float64(sdN-sd0)/float64(count)/1024,
		float64(engine)/float64(count)/1024, "engine memory per sandbox", count))
	return srv.stop()
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// pssOf is the Pss of the process at /proc/<pid> (smaps_rollup), in bytes; 0 when it
// cannot be read.
func pssOf(dir string) int64 {
	data, err := os.ReadFile(filepath.Join(dir, "smaps_rollup"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			if f := strings.Fields(v); len(f) == 2 && f[1] == "kB" {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

// rssOf is the RSS of the process at /proc/<pid>; 0 when it is gone.
func rssOf(dir string) int64 {
	rss, _, _ := readRSS(dir)
	return rss
}

// engineMemory is the RSS of the engine's processes, in bytes: its daemons, and the
// shims of the containers asked for.
type engineMemory struct {
	dockerd, containerd int64
	shims               int
	shimRSS             int64
	// shimPSS is the shims' proportional set size: their shared pages (the shim's own
	// binary above all) counted once among the processes that share them, not once each.
	shimPSS int64
}

// engineRSS reads the RSS of dockerd, containerd and the shims (containerd-shim-*) that
// serve one of containers (by the -id of their command line) from /proc.
func engineRSS(containers []string) (engineMemory, error) {
	want := make(map[string]bool, len(containers))
	for _, id := range containers {
		want[id] = true
	}
	var m engineMemory
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return m, err
	}
	for _, p := range procs {
		comm, err := os.ReadFile(filepath.Join(p, "comm"))
		if err != nil {
			continue // gone meanwhile
		}
		name := strings.TrimSpace(string(comm))
		switch {
		case name == "dockerd":
			m.dockerd += rssOf(p)
		case name == "containerd":
			m.containerd += rssOf(p)
		case strings.HasPrefix(name, "containerd-shim"):
			cmdline, err := os.ReadFile(filepath.Join(p, "cmdline"))
			if err != nil {
				continue
			}
			args := strings.Split(string(cmdline), "\x00")
			for i, a := range args {
				if a == "-id" && i+1 < len(args) && want[args[i+1]] {
					m.shims++
					m.shimRSS += rssOf(p)
					m.shimPSS += pssOf(p)
				}
			}
		}
	}
	if m.dockerd == 0 {
		return m, errors.New("engine memory: no dockerd process visible in /proc (run the bench on the engine's host, as root)")
	}
	return m, nil
}
