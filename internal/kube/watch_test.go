package kube_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/profile"
)

// TestWatchReportsEndings follows the instance's Pods: a sandbox whose main process died
// is reported (once) with its exit code, a Pod deleted behind sandboxd's back as removed,
// and another instance's Pods not at all.
func TestWatchReportsEndings(t *testing.T) {
	f := newRuntime(t, profile.Agents{})
	other := newRuntime(t, profile.Agents{}, func(c *kube.Config) { c.Namespace = f.ns })
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu     sync.Mutex
		ends   []lifecycle.Ending
		change = make(chan struct{}, 100)
	)
	connected := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- f.rt.Watch(ctx, func() { close(connected) }, func(e lifecycle.Ending) {
			mu.Lock()
			ends = append(ends, e)
			mu.Unlock()
			change <- struct{}{}
		})
	}()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v after its context ended; want context.Canceled", err)
		}
	}()
	select {
	case <-connected:
	case err := <-done:
		t.Fatalf("Watch: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the watch did not connect")
	}
	wait := func(what string, ok func([]lifecycle.Ending) bool) {
		t.Helper()
		deadline := time.After(time.Minute)
		for {
			mu.Lock()
			got := append([]lifecycle.Ending(nil), ends...)
			mu.Unlock()
			if ok(got) {
				return
			}
			select {
			case <-change:
			case <-deadline:
				t.Fatalf("%s: not reported; reported: %+v", what, got)
			}
		}
	}

	theirs := other.create(t, spec(""))
	died := f.create(t, spec(""))
	// The sandbox's main process (the image's sleep infinity) is killed: the container
	// ends, and with it the Pod (restartPolicy Never).
	f.sh(t, died.ContainerID, `for p in /proc/[0-9]*; do [ "$(tr '\0' ' ' <$p/cmdline)" = "sleep infinity " ] && kill -9 ${p#/proc/}; done; true`)
	wait("the death", func(es []lifecycle.Ending) bool {
		for _, e := range es {
			if e.ContainerID == died.ContainerID && !e.Removed && e.ExitCode == 137 && e.ChatID == died.ChatID && e.SessionID == died.ID {
				return true
			}
		}
		return false
	})

	deleted := f.create(t, spec(""))
	zero := int64(0)
	if err := f.cs.CoreV1().Pods(f.ns).Delete(ctx, deleted.ContainerID, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	wait("the deletion", func(es []lifecycle.Ending) bool {
		for _, e := range es {
			if e.ContainerID == deleted.ContainerID && e.Removed && e.ChatID == deleted.ChatID && e.SessionID == deleted.ID {
				return true
			}
		}
		return false
	})
	mu.Lock()
	defer mu.Unlock()
	ended := 0
	for _, e := range ends {
		if e.ContainerID == theirs.ContainerID {
			t.Errorf("another instance's pod was reported: %+v", e)
		}
		if e.ContainerID == died.ContainerID && !e.Removed {
			ended++
		}
	}
	if ended != 1 {
		t.Errorf("the dead pod's end was reported %d times; want once", ended)
	}
}

// TestTerminal drives a shell on a pseudo-terminal over the pods/exec subresource: what is
// typed runs as the sandbox's user, the size and later sizes reach the terminal, the exit
// code comes back, and a caller that leaves kills the shell and what it started.
func TestTerminal(t *testing.T) {
	f := newRuntime(t, profile.Agents{})
	s := f.create(t, spec(""))
	ctx := context.Background()

	t.Run("type, resize, exit", func(t *testing.T) {
		typed, typing := io.Pipe()
		defer typing.Close()
		sized := make(chan struct{})
		out := &signalWriter{on: "size=30x100", ch: sized}
		resize := make(chan lifecycle.TermSize, 1)
		done := make(chan error, 1)
		var code int
		go func() {
			var err error
			code, err = f.rt.Terminal(ctx, s.ContainerID, lifecycle.TerminalIO{
				Stdin: typed, Stdout: out, Size: lifecycle.TermSize{Cols: 100, Rows: 30}, Resize: resize,
			})
			done <- err
		}()
		go func() {
			_, _ = io.WriteString(typing, "echo size=$(stty size | tr ' ' x) user=$(id -u) pwd=$PWD term=$TERM\n")
		}()
		select {
		case <-sized:
		case err := <-done:
			t.Fatalf("the terminal ended (%v) before the size came: %q", err, out.String())
		case <-time.After(30 * time.Second):
			t.Fatalf("no size in the output: %q", out.String())
		}
		for _, want := range []string{"user=1000", "pwd=/workspace", "term=xterm-256color"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output %q lacks %q", out.String(), want)
			}
		}
		resize <- lifecycle.TermSize{Cols: 120, Rows: 40}
		// The resize is asynchronous: ask until the new size shows.
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(out.String(), "now=40x120") && time.Now().Before(deadline) {
			_, _ = io.WriteString(typing, "echo now=$(stty size | tr ' ' x)\n")
			time.Sleep(300 * time.Millisecond)
		}
		if !strings.Contains(out.String(), "now=40x120") {
			t.Fatalf("the resize did not reach the terminal: %q", out.String())
		}
		_, _ = io.WriteString(typing, "exit 7\n")
		select {
		case err := <-done:
			if err != nil || code != 7 {
				t.Fatalf("Terminal = %d, %v; want 7", code, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the shell did not end on exit")
		}
	})

	t.Run("a caller that leaves kills the shell and what it started", func(t *testing.T) {
		typed, typing := io.Pipe()
		defer typing.Close()
		started := make(chan struct{})
		out := &signalWriter{on: "started", ch: started}
		tctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := f.rt.Terminal(tctx, s.ContainerID, lifecycle.TerminalIO{Stdin: typed, Stdout: out})
			done <- err
		}()
		go func() { _, _ = io.WriteString(typing, "sleep 2001 & setsid sleep 2002 & echo start''ed\n") }()
		select {
		case <-started:
		case <-time.After(30 * time.Second):
			t.Fatalf("the background commands did not start: %q", out.String())
		}
		if ps, _, _ := f.sh(t, s.ContainerID, "ps -o args | grep -c 'sleep 200[12]$' || true"); ps != "2" {
			t.Fatalf("%s sleeps running before the caller left; want 2", ps)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Terminal = %v; want context.Canceled", err)
		}
		if ps, _, _ := f.sh(t, s.ContainerID, "ps -o args | grep 'sleep 200[12]$' || true"); ps != "" {
			t.Fatalf("left running after the caller left:\n%s", ps)
		}
	})
}
