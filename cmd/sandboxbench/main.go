// Command sandboxbench measures sandboxd against the Docker engine it drives, on the same
// machine in the same run. It starts the real sandboxd binary (built from this
// module unless -sandboxd names one) on SQLite and on PostgreSQL (a throwaway cluster, or
// -pg-dsn) with the real engine, on loopback, and measures each figure beside a baseline:
//
//   - exec: `true` through sandboxd's exec API (the in-sandbox agent: attached on SQLite,
//     a replica's own agent started through the engine's exec on PostgreSQL) against the
//     Engine API's exec in the same sandbox; 16 at once; a streamed command's time to
//     first byte;
//   - reuse: PUT on live sessions over HTTP against sandboxd's own trivial route (GET
//     /healthz on the same process, server, router and middleware), with a bare net/http
//     handler in a process of its own as context;
//   - cold create: PUT until sandboxd answers, against the same container config created
//     and started through the Engine API; every create is proven exec-ready by an exec of
//     `true` right after it (untimed; the "+ first exec" rows time it too);
//   - parallel creates of distinct chats: wall time against as many direct create+starts;
//   - hot chat: many clients PUT on one live chat, against GET /healthz (and the same
//     clients each on a chat of its own, for comparison);
//   - sweep drain: expired sandboxes from their common expiry until the engine lists none,
//     against removing as many containers directly in parallel;
//   - restart drain: sandboxd at its default settings restarted with sandboxes that expired
//     while it was down, from its start until the engine lists none, against the engine
//     force-removing as many (and the same with a 3 s stop grace);
//   - memory: sandboxd's RSS with many sessions in the registry against one session;
//   - registry operations per second on sqlitestore and pgstore against SELECT 1;
//   - density: idle sandboxes made until -density or a failed create, and the memory
//     of sandboxd and of the engine per sandbox (with -density-only, alone);
//   - with -pool-env, creates through a sandboxd whose warm pool is on (full before each
//     create, hits counted on /metrics), against the cold creates of the same run;
//   - with -egress (the default), creates of an egress profile's sandbox against network
//     none ones, and a 100 MB download through the egress proxy against the same download
//     without it (egresscreate.go, egressthroughput.go);
//   - with -kubeconfig, sandboxd with runtime: kubernetes on that cluster (kube.go): cold
//     create against the same claim and Pod made through the API, parallel creates, warm
//     pool creates, and exec against sandboxd on Docker and a bare pods/exec.
//
// -only takes some of these (see -h). It prints a table, writes it as JSON with -json, and
// removes every container it made.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/testing/sandboxdproc"
)

func main() {
	if os.Getenv(roleEnv) == "trivial" {
		if err := serveTrivial(); err != nil {
			fmt.Fprintln(os.Stderr, "sandboxbench trivial server:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signalContext()
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "sandboxbench:", err)
		stop()
		os.Exit(1)
	}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// options are the sizes of the run.
type options struct {
	N             int           `json:"n"`              // cold creates per side (and pool creates)
	Reuse         int           `json:"reuse"`          // reuse PUTs per side
	Workers       int           `json:"workers"`        // concurrent reuse clients, one live chat each
	HotClients    int           `json:"hot_clients"`    // concurrent reuse clients of the hot chat
	Parallel      int           `json:"parallel"`       // distinct chats created at once
	Drain         int           `json:"drain"`          // expired sandboxes the sweep drains
	DrainParallel int           `json:"drain_parallel"` // sweep parallelism, and direct removes at once
	SweepInterval time.Duration `json:"sweep_interval"`
	Rounds        int           `json:"rounds"` // rounds of the parallel and drain measurements (median)
	Sessions      int           `json:"sessions"`
	Density       int           `json:"density"`      // idle sandboxes the density measurement asks for (0: none)
	DensityOnly   bool          `json:"density_only"` // the density measurement alone
	RegistryOps   int           `json:"registry_ops"`
	Settle        time.Duration `json:"settle"` // wait before reading the RSS
	PoolEnv       []string      `json:"pool_env,omitempty"`
	Registries    []string      `json:"registries"`
	Quick         bool          `json:"quick"`
	Egress        bool          `json:"egress"`
	Execs         int           `json:"execs"`                 // execs of `true` per side
	KubeN         int           `json:"kube_n,omitempty"`      // cold and pool creates per side on Kubernetes
	KubeRounds    int           `json:"kube_rounds,omitempty"` // rounds of the parallel creates on Kubernetes
	Only          []string      `json:"only,omitempty"`

	pgDSN      string
	pgMaxConns int
	sandboxd   string
	image      string
	jsonPath   string
	runID      string
	kubeconfig string
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("sandboxbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.N, "n", 50, "cold creates per side (sandboxd, Engine API), and warm-pool creates")
	fs.IntVar(&o.Reuse, "reuse", 10000, "reuse PUTs per side (sandboxd, trivial handler)")
	fs.IntVar(&o.Workers, "workers", 4, "concurrent reuse clients, one live chat each")
	fs.IntVar(&o.HotClients, "hot-clients", 16, "concurrent reuse clients on one hot chat (and each on its own chat, for comparison)")
	fs.IntVar(&o.Parallel, "parallel", 50, "distinct chats created at once")
	fs.IntVar(&o.Drain, "drain", 100, "expired sandboxes the sweep drains")
	fs.IntVar(&o.DrainParallel, "drain-parallel", 16, "sweep parallelism of sandboxd, and direct removes at once")
	fs.DurationVar(&o.SweepInterval, "sweep-interval", 100*time.Millisecond, "sweep interval of sandboxd")
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds of the parallel-create and drain measurements (the median is reported)")
	fs.IntVar(&o.Sessions, "sessions", 10000, "sessions in the registry for the memory measurement")
	fs.IntVar(&o.Density, "density", 200, "idle sandboxes the density measurement creates (fewer if creates fail first; 0: no density measurement)")
	fs.BoolVar(&o.DensityOnly, "density-only", false, "take the density measurement alone, on the first of -registries")
	fs.IntVar(&o.RegistryOps, "registry-ops", 5000, "operations of each kind on the registry")
	fs.DurationVar(&o.Settle, "settle", 3*time.Second, "wait before reading sandboxd's RSS")
	poolEnv := fs.String("pool-env", "SANDBOXD_AGENTS_DEFAULT_POOL_MIN=4", "SANDBOXD_...=value settings (comma-separated) that turn the warm pool on; empty: no pool measurement")
	registries := fs.String("registries", "sqlite,postgres", "registries to measure on: sqlite, postgres or both (comma-separated)")
	fs.StringVar(&o.pgDSN, "pg-dsn", "", "PostgreSQL server DSN (a user allowed to create databases); empty: a throwaway cluster")
	fs.IntVar(&o.pgMaxConns, "pg-max-conns", 0, "pool_max_conns in sandboxd's PostgreSQL DSN, for both its pools (0: pgxpool's default, max(4, CPUs))")
	fs.StringVar(&o.sandboxd, "sandboxd", "", "sandboxd binary; empty: go build ./cmd/sandboxd of this module")
	fs.StringVar(&o.image, "image", "sandboxd-sandbox:latest", "sandbox image (scripts/build-image.sh)")
	fs.StringVar(&o.jsonPath, "json", "", "write the results as JSON to this file")
	fs.BoolVar(&o.Quick, "quick", false, "a CI-sized run: a few of everything")
	fs.BoolVar(&o.Egress, "egress", true, "measure egress profiles: create latency against network none, and a download through the proxy against one without (needs root and iptables)")
	fs.IntVar(&o.Execs, "execs", 500, "execs of `true` per side (sandboxd through the agent, Engine API)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of a cluster to measure sandboxd's Kubernetes runtime on (an admin's: the run makes and removes a namespace; the sandbox image must be on its nodes); empty: no Kubernetes measurement")
	fs.IntVar(&o.KubeN, "kube-n", 20, "cold creates per side on Kubernetes, and warm-pool creates")
	fs.IntVar(&o.KubeRounds, "kube-rounds", 2, "rounds of the parallel creates on Kubernetes (the median is reported)")
	only := fs.String("only", "", "measurements to take (comma-separated: "+strings.Join(measurements, ", ")+"); empty: all")
	fs.StringVar(&o.runID, "run-id", "", "prefix of the instance ids of this run's containers (empty: sbench-<random>)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.Registries = strings.Split(*registries, ",")
	for _, r := range o.Registries {
		if r != "sqlite" && r != "postgres" {
			return o, fmt.Errorf("-registries: unknown registry %q", r)
		}
	}
	if *poolEnv != "" {
		o.PoolEnv = strings.Split(*poolEnv, ",")
	}
	if *only != "" {
		o.Only = strings.Split(*only, ",")
		for _, m := range o.Only {
			if !slices.Contains(measurements, m) {
				return o, fmt.Errorf("-only: unknown measurement %q", m)
			}
		}
	}
	if o.Quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := func(name string, p *int, v int) {
			if !set[name] {
				*p = v
			}
		}
		quick("n", &o.N, 3)
		quick("reuse", &o.Reuse, 200)
		quick("workers", &o.Workers, 2)
		quick("hot-clients", &o.HotClients, 2)
		quick("parallel", &o.Parallel, 4)
		quick("drain", &o.Drain, 4)
		quick("drain-parallel", &o.DrainParallel, 4)
		quick("rounds", &o.Rounds, 1)
		quick("sessions", &o.Sessions, 200)
		quick("registry-ops", &o.RegistryOps, 100)
		quick("density", &o.Density, 2)
		quick("execs", &o.Execs, 20)
		quick("kube-n", &o.KubeN, 2)
		quick("kube-rounds", &o.KubeRounds, 1)
		if !set["settle"] {
			o.Settle = 500 * time.Millisecond
		}
	}
	if o.N < 1 || o.Reuse < 2 || o.Workers < 1 || o.HotClients < 1 || o.Parallel < 1 || o.Drain < 1 || o.DrainParallel < 1 ||
		o.Rounds < 1 || o.Sessions < 2 || o.RegistryOps < 1 || o.SweepInterval <= 0 || o.Density < 0 || o.Execs < 1 ||
		o.KubeN < 1 || o.KubeRounds < 1 {
		return o, errors.New("every size must be positive (-reuse and -sessions at least 2, -density 0 or more)")
	}
	if slices.Contains(o.Only, "kube") && o.kubeconfig == "" {
		return o, errors.New("-only kube needs -kubeconfig")
	}
	if o.DensityOnly && o.Density == 0 {
		return o, errors.New("-density-only needs -density above 0")
	}
	return o, nil
}

// run measures and reports; see the package comment.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	opts, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("docker engine: %w", err)
	}
	if _, err := cli.ImageInspect(ctx, opts.image); err != nil {
		return fmt.Errorf("image %s: %w (build it with scripts/build-image.sh)", opts.image, err)
	}

	tmp, err := os.MkdirTemp("", "sandboxbench-")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(tmp)) }()
	b := &bench{opts: opts, cli: cli, image: opts.image, tmp: tmp, log: stderr,
		runID: cmp.Or(opts.runID, "sbench-"+randomHex(4)),
		hc: &http.Client{Transport: &http.Transport{
			MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute,
		}}}
	defer b.hc.CloseIdleConnections()
	// Whatever happens, every container of this run goes: sandboxd's and the baselines'.
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		n, rmErr := removeRun(cctx, cli, b.runID)
		if n > 0 {
			fmt.Fprintf(stderr, "removed %d containers left by this run\n", n)
		}
		err = errors.Join(err, rmErr)
	}()

	b.bin = opts.sandboxd
	if b.bin == "" {
		fmt.Fprintln(stderr, "building sandboxd")
		if b.bin, err = sandboxdproc.Build(ctx, tmp, false); err != nil {
			return fmt.Errorf("%w (run from inside the sandboxd module or pass -sandboxd)", err)
		}
	}
	var registries []registry
	for _, name := range opts.Registries {
		if name == "sqlite" {
			registries = append(registries, sqliteRegistry())
			continue
		}
		admin := opts.pgDSN
		if admin == "" {
			c, err := startPG()
			if err != nil {
				return err
			}
			defer func() { err = errors.Join(err, c.Stop()) }()
			admin = c.DSN()
		}
		registries = append(registries, postgresRegistry(admin, opts.pgMaxConns))
	}

	rep := Report{Started: time.Now().UTC(), Command: "sandboxbench " + strings.Join(args, " "),
		Machine: machine(ctx, cli), Options: opts}
	// A failure on one registry ends the run, but what was measured is still reported.
	var runErr error
	for _, reg := range registries {
		if opts.DensityOnly {
			break
		}
		if runErr = b.runRegistry(ctx, reg); runErr != nil {
			break
		}
	}
	// Density once, on the first registry: hundreds of sandboxes are costly to make.
	if runErr == nil && opts.Density > 0 && opts.takes("density") {
		if runErr = b.density(ctx, registries[0]); runErr != nil {
			runErr = fmt.Errorf("%s: density: %w", registries[0].name, runErr)
		}
	}
	if runErr == nil && opts.Egress && !opts.DensityOnly && opts.takes("egress") {
		runErr = b.egress(ctx)
	}
	if runErr == nil && opts.kubeconfig != "" && !opts.DensityOnly && opts.takes("kube") {
		runErr = b.kube(ctx)
	}
	if runErr != nil {
		rep.Error = runErr.Error()
	}
	rep.Rows = b.rows
	fmt.Fprintln(stdout)
	printTable(stdout, rep)
	if opts.jsonPath != "" {
		runErr = errors.Join(runErr, writeJSON(opts.jsonPath, rep))
	}
	return runErr
}

// measurements are the names -only takes.
var measurements = []string{"reuse", "hotchat", "exec", "cold", "parallel", "drain", "restartdrain", "pool", "memory", "registry", "density", "egress", "kube"}

// takes says whether the run takes measurement m.
func (o options) takes(m string) bool { return len(o.Only) == 0 || slices.Contains(o.Only, m) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
