package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	dockerclient "github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testing/dockertest"
	"github.com/sandboxd/sandboxd/internal/testing/pgtest"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
)

// BenchmarkExecInProcess runs sandboxd in this process (run, with the agent) and `true`
// through its exec API, as cmd/sandboxbench does through the binary: with -cpuprofile,
// where one exec's time goes on sandboxd's side.
func BenchmarkExecInProcess(b *testing.B) {
	for _, alternate := range []bool{false, true} {
		name := ""
		if alternate {
			name = "-alternating"
		}
		b.Run("sqlite"+name, func(b *testing.B) { benchExecInProcess(b, "", alternate) })
		b.Run("postgres"+name, func(b *testing.B) { benchExecInProcess(b, pgtest.DSN(b), alternate) })
	}
}

// benchExecInProcess measures execs through an in-process sandboxd on registry (""
// for SQLite); with alternate, each after an engine's exec of `true` in the same
// sandbox, untimed, as cmd/sandboxbench alternates its two sides.
func benchExecInProcess(b *testing.B, registry string, alternate bool) {
	cli := dockertest.Client(b)
	image := dockertest.Image(b, cli)
	instance := dockertest.Instance(b, cli)
	dir := b.TempDir()
	env := []string{
		"SANDBOXD_LISTEN=127.0.0.1:0",
		"SANDBOXD_REGISTRY=sqlite:" + filepath.Join(dir, "sandboxd.db"),
		"SANDBOXD_DOCKER_INSTANCE=" + instance,
		"SANDBOXD_DOCKER_VOLUME_ROOT=" + filepath.Join(dir, "volumes"),
		"SANDBOXD_AGENTS_DEFAULT_IMAGE=" + image,
		"SANDBOXD_DOCKER_AGENT=" + dockertest.Agent(b),
	}
	if registry != "" {
		env = append(env, "SANDBOXD_REGISTRY="+registry)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncbuf.Buffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, env, logs, io.Discard) }()
	defer func() {
		cancel()
		<-done
	}()
	var addr string
	for deadline := time.Now().Add(30 * time.Second); addr == ""; time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(logs.String(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				addr = rec.Addr
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("no listening:\n%s", logs.String())
		}
	}
	api, err := client.New("http://"+addr, "", &http.Client{Transport: &http.Transport{}})
	if err != nil {
		b.Fatal(err)
	}
	chat := uuid.NewString()
	s, _, err := api.Create(ctx, chat, client.CreateBody{})
	if err != nil {
		b.Fatal(err)
	}
	defer dockertest.Remove(b, cli, s.ContainerID)
	exec := func() {
		res, err := api.Exec(ctx, chat, client.ExecBody{Cmd: []string{"true"}})
		if err != nil || res.ExitCode != 0 {
			b.Fatal(res, err)
		}
	}
	for range 20 {
		exec()
	}
	var lat []time.Duration
	b.ResetTimer()
	for b.Loop() {
		if alternate {
			b.StopTimer()
			engineTrue(b, cli, s.ContainerID)
			b.StartTimer()
		}
		t := time.Now()
		exec()
		lat = append(lat, time.Since(t))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	if strings.Contains(logs.String(), "fallback") {
		b.Log("fallbacks in the log")
	}
}

// engineTrue runs `true` in the container through the engine's exec, to its end.
func engineTrue(b *testing.B, cli *dockerclient.Client, id string) {
	ctx := context.Background()
	created, err := cli.ExecCreate(ctx, id, dockerclient.ExecCreateOptions{Cmd: []string{"true"}, AttachStdout: true, AttachStderr: true})
	if err != nil {
		b.Fatal(err)
	}
	att, err := cli.ExecAttach(ctx, created.ID, dockerclient.ExecAttachOptions{})
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, att.Reader)
	att.Close()
	for {
		res, err := cli.ExecInspect(ctx, created.ID, dockerclient.ExecInspectOptions{})
		if err != nil || !res.Running {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
