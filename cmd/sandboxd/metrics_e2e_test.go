package main

import (
	"regexp"
	"syscall"
	"testing"
)

// After a restart, before any request, /metrics lists every counter under each label set
// it knows, at 0: rate() and absent() alerts work from the first scrape.
func TestMetricsStartAtZeroAfterARestart(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "SANDBOXD_AGENTS_DEFAULT_POOL_MIN=1")
	w.start().stop(syscall.SIGTERM)
	srv := w.start()
	m := metrics(t, srv)
	for _, want := range []struct{ name, labels string }{
		{"sandbox_create_total", `result="created"`},
		{"sandbox_create_total", `result="reused"`},
		{"sandbox_create_total", `result="replaced"`},
		{"sandbox_create_total", `result="conflict"`},
		{"sandbox_create_total", `result="error"`},
		{"sandbox_delete_total", `result="deleted"`},
		{"sandbox_delete_total", `result="not_found"`},
		{"sandbox_cleanup_total", `result="cleaned"`},
		{"sandbox_cleanup_error_total", `error_type="unavailable"`},
		{"sandbox_reconcile_total", `result="orphan_removed"`},
		{"sandbox_reconcile_total", `result="record_repaired"`},
		{"sandbox_reconcile_total", `result="error"`},
		{"sandbox_reconcile_total", `result="mass_removal_refused"`},
		{"sandbox_died_total", `reason="exited"`},
		{"sandbox_died_total", `reason="oom"`},
		{"sandbox_died_total", `reason="removed"`},
		{"sandbox_exec_total", `result="completed"`},
		{"sandbox_exec_total", `result="timed_out"`},
		{"sandbox_keepalive_total", `result="extended"`},
		{"sandbox_file_total", `op="write",.*result="ok"`},
		{"sandbox_file_total", `op="list",.*result="error"`},
		{"sandbox_pool_hits_total", `profile="default"`},
		{"sandbox_pool_misses_total", `profile="default",reason="empty"`},
	} {
		re := regexp.MustCompile(`(?m)^` + want.name + `\{[^}]*` + want.labels + `[^}]*\} 0$`)
		if !re.MatchString(m) {
			t.Errorf("/metrics after a restart lacks %s{%s} 0", want.name, want.labels)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", m)
	}
	srv.stop(syscall.SIGTERM)
}
