package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moby/moby/client"
)

// Row is one measurement: sandboxd's figure, the baseline taken in the same run, and
// their ratio (Value / Baseline), with the targets when it sets some.
type Row struct {
	Registry     string   `json:"registry"` // sqlite, postgres
	Name         string   `json:"name"`
	Unit         string   `json:"unit"` // ms, req/s, ops/s, MiB
	Value        float64  `json:"value"`
	Baseline     float64  `json:"baseline"`
	BaselineName string   `json:"baseline_name"`
	Ratio        float64  `json:"ratio"`
	Targets      []Target `json:"targets,omitempty"`
	Met          *bool    `json:"met,omitempty"` // all targets met; absent without targets
	Samples      int      `json:"samples"`
	Note         string   `json:"note,omitempty"`
}

// Target is a bound on a row's ratio or its value.
type Target struct {
	On    string  `json:"on"` // "ratio" or "value"
	Op    string  `json:"op"` // "<=", "<", ">="
	Limit float64 `json:"limit"`
}

func (t Target) String() string {
	if t.On == "value" {
		return fmt.Sprintf("%s %g", t.Op, t.Limit)
	}
	return fmt.Sprintf("ratio %s %g", t.Op, t.Limit)
}

func (t Target) met(r Row) bool {
	v := r.Ratio
	if t.On == "value" {
		v = r.Value
	}
	switch t.Op {
	case "<=":
		return v <= t.Limit
	case "<":
		return v < t.Limit
	case ">=":
		return v >= t.Limit
	}
	return false
}

// newRow fills the ratio and whether the targets are met.
func newRow(registry, name, unit string, value, baseline float64, baselineName string, samples int, targets ...Target) Row {
	r := Row{Registry: registry, Name: name, Unit: unit, Value: value, Baseline: baseline,
		BaselineName: baselineName, Samples: samples, Targets: targets}
	if baseline > 0 {
		r.Ratio = value / baseline
	}
	if len(targets) > 0 {
		met := true
		for _, t := range targets {
			met = met && t.met(r)
		}
		r.Met = &met
	}
	return r
}

// Machine is what the figures were taken on.
type Machine struct {
	CPUs          int    `json:"cpus"`
	CPUModel      string `json:"cpu_model,omitempty"`
	MemoryBytes   int64  `json:"memory_bytes"`
	Kernel        string `json:"kernel"`
	DockerVersion string `json:"docker_version"`
	GoVersion     string `json:"go_version"`
}

func machine(ctx context.Context, cli *client.Client) Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			var kb int64
			if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
				m.MemoryBytes = kb << 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if v, err := cli.ServerVersion(ctx, client.ServerVersionOptions{}); err == nil {
		m.DockerVersion = v.Version
	}
	return m
}

// Report is what -json writes.
type Report struct {
	Started time.Time `json:"started"`
	Command string    `json:"command"`
	Machine Machine   `json:"machine"`
	Options options   `json:"options"`
	Rows    []Row     `json:"rows"`
	Error   string    `json:"error,omitempty"` // why the run ended early
}

func writeJSON(path string, rep Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func printTable(w io.Writer, rep Report) {
	m := rep.Machine
	fmt.Fprintf(w, "machine: %d CPUs (%s), %.1f GiB, kernel %s, Docker %s, %s\n\n",
		m.CPUs, cmp.Or(m.CPUModel, "?"), float64(m.MemoryBytes)/(1<<30), m.Kernel, m.DockerVersion, m.GoVersion)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "registry\tmeasurement\tsandboxd\tbaseline\tratio\ttarget\tmet\tn\t")
	rows := slices.Clone(rep.Rows)
	for _, r := range rows {
		var targets []string
		for _, t := range r.Targets {
			targets = append(targets, t.String())
		}
		met := ""
		if r.Met != nil {
			met = map[bool]string{true: "met", false: "NOT MET"}[*r.Met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.3f\t%s\t%s\t%d\t\n", r.Registry, r.Name,
			format(r.Value, r.Unit), format(r.Baseline, r.Unit)+" ("+r.BaselineName+")",
			r.Ratio, strings.Join(targets, ", "), met, r.Samples)
	}
	_ = tw.Flush()
	for _, r := range rows {
		if r.Note != "" {
			fmt.Fprintf(w, "  %s / %s: %s\n", r.Registry, r.Name, r.Note)
		}
	}
}

func format(v float64, unit string) string {
	switch unit {
	case "ms":
		return fmt.Sprintf("%.1f ms", v)
	case "MiB":
		return fmt.Sprintf("%.1f MiB", v)
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}

// quantile is the nearest-rank q-quantile of ds, in milliseconds.
func quantile(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	i = min(max(i, 0), len(s)-1)
	return ms(s[i])
}

func median(ds []time.Duration) float64 { return quantile(ds, 0.5) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
