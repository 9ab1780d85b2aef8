package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/agentproto"
	"github.com/sandboxd/sandboxd/internal/docker"
	"github.com/sandboxd/sandboxd/internal/testing/pgtest"
)

// Two replicas on one PostgreSQL registry run commands at once in the same sandbox, each
// through an agent of its own (started through the engine's exec): every command gets
// exactly its own input back and its own output, none falls back to the engine's exec,
// and a replica's first command kills nothing the other runs.
func TestPostgresReplicasShareASandboxesAgent(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "SANDBOXD_REGISTRY="+pgtest.DSN(t))
	a, b := w.start(), w.start()
	chat := newChat()
	if _, _, err := a.api.Create(context.Background(), chat, client.CreateBody{}); err != nil {
		t.Fatal(err)
	}

	long := make(chan error, 1)
	go func() {
		res, err := a.api.Exec(context.Background(), chat, client.ExecBody{Cmd: []string{"sh", "-c", "sleep 2; echo done"}})
		if err == nil && (res.ExitCode != 0 || res.Stdout != "done\n") {
			err = fmt.Errorf("exit %d, stdout %q", res.ExitCode, res.Stdout)
		}
		long <- err
	}()

	const perReplica = 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*perReplica)
	for i := range 2 * perReplica {
		srv := a
		if i%2 == 1 {
			srv = b
		}
		wg.Go(func() {
			in := make([]byte, 24<<10)
			_, _ = rand.Read(in)
			stdin, tag := hex.EncodeToString(in), fmt.Sprintf("command-%d", i)
			// Its input back, then output of several frames.
			res, err := srv.api.Exec(context.Background(), chat, client.ExecBody{
				Cmd: []string{"sh", "-c", `cat; yes "$0" | head -c 300000`, tag}, Stdin: stdin})
			want := stdin + strings.Repeat(tag+"\n", 300000/(len(tag)+1)) + (tag + "\n")[:300000%(len(tag)+1)]
			if err != nil || res.ExitCode != 0 || res.Stdout != want || res.Stderr != "" {
				errs <- fmt.Errorf("command %d: exit %d, %v, %d bytes out (want %d, same: %v), stderr %q",
					i, res.ExitCode, err, len(res.Stdout), len(want), res.Stdout == want, res.Stderr)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := <-long; err != nil {
		t.Errorf("replica a's command, across replica b's first: %v", err)
	}

	fallbacks := regexp.MustCompile(`(?m)^sandbox_exec_fallback_total\{[^}]*\} [1-9]`)
	for name, srv := range map[string]*server{"a": a, "b": b} {
		res, err := srv.api.Exec(context.Background(), chat, client.ExecBody{Cmd: []string{"sh", "-c", `tr '\0' ' ' </proc/$PPID/cmdline`}})
		if want := docker.AgentTarget + " " + agentproto.ChannelArg + " "; err != nil || res.Stdout != want {
			t.Errorf("replica %s: the command's parent is %q (%v), want %q", name, res.Stdout, err, want)
		}
		if m := metrics(t, srv); fallbacks.MatchString(m) {
			t.Errorf("replica %s fell back to the engine's exec:\n%s", name, fallbacks.FindAllString(m, -1))
		}
	}
	a.stop(syscall.SIGTERM)
	b.stop(syscall.SIGTERM)
}
