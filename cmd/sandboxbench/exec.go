package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	sbclient "github.com/sandboxd/sandboxd/client"
)

// execBlock is how many commands one side runs before the other's turn.
const execBlock = 25

// execs: commands in one live sandbox through sandboxd's API (POST exec, which runs them
// through the in-sandbox agent), against the Engine API's exec of the same command in
// the same sandbox, issued by this process straight to the engine (create, attach, read
// to the end, inspect until it ended: what the engine needs to run a command and report
// its exit code). The two sides alternate in blocks of execBlock commands, so drift hits
// both alike.
// sandboxd's fallback counter must not move: every sandboxd command went through the
// agent.
func (b *bench) execs(ctx context.Context, reg string, base string, api *sbclient.Client) error {
	chat := uuid.NewString()
	s, _, err := api.Create(ctx, chat, sbclient.CreateBody{})
	if err != nil {
		return err
	}
	defer func() { _, _ = api.Delete(context.WithoutCancel(ctx), chat) }()
	id := s.ContainerID
	fallbacksBefore, err := b.fallbacks(ctx, base)
	if err != nil {
		return err
	}

	viaSandboxd := func(ctx context.Context) error {
		res, err := api.Exec(ctx, chat, sbclient.ExecBody{Cmd: []string{"true"}})
		if err == nil && res.ExitCode != 0 {
			err = fmt.Errorf("true through sandboxd: exit %d", res.ExitCode)
		}
		return err
	}
	viaEngine := func(ctx context.Context) error { return execTrue(ctx, b.cli, id) }
	for range 20 { // warm both: the agent's attach, connections
		if err := viaSandboxd(ctx); err != nil {
			return err
		}
		if err := viaEngine(ctx); err != nil {
			return err
		}
	}
	// The sides alternate in blocks of execBlock commands: drift hits both alike, and
	// neither side's commands run in the wake of the other's. Right after an engine's
	// exec ends, the engine and the container's shim are still tearing it down (for a
	// few ms, on this 2-CPU machine), and a command through the agent, whose frames pass
	// through both, pays for it: one engine exec before each doubled the agent's
	// median here (BENCHMARKS.md), a cost no client of sandboxd's alone ever pays.
	var sLat, eLat []time.Duration
	for len(sLat) < b.opts.Execs {
		n := min(execBlock, b.opts.Execs-len(sLat))
		for range n {
			t := time.Now()
			if err := viaSandboxd(ctx); err != nil {
				return err
			}
			sLat = append(sLat, time.Since(t))
		}
		for range n {
			t := time.Now()
			if err := viaEngine(ctx); err != nil {
				return err
			}
			eLat = append(eLat, time.Since(t))
		}
	}
	engineName := "Engine API exec, same sandbox"
	b.add(newRow(reg, "exec `true` p50", "ms", quantile(sLat, 0.5), quantile(eLat, 0.5), engineName, len(sLat),
		Target{On: "ratio", Op: "<=", Limit: 0.2}, Target{On: "value", Op: "<", Limit: 5}))
	b.rows[len(b.rows)-1].Note = "sandboxd: POST /v1/chats/{chat}/sandbox/exec over HTTP (auth, lookup, exec slots, JSON answer) through the in-sandbox agent; " +
		"engine: exec create + attach + read + inspect until ended, from this process"
	b.add(newRow(reg, "exec `true` p99", "ms", quantile(sLat, 0.99), quantile(eLat, 0.99), engineName, len(sLat)))

	// 16 at once in the one sandbox (exec.max_concurrent), rounds alternating; the wall
	// time of each round.
	const width = 16
	var sWall, eWall []time.Duration
	for range max(3, b.opts.Execs/50) {
		for _, side := range []struct {
			op   func(context.Context) error
			wall *[]time.Duration
		}{{viaSandboxd, &sWall}, {viaEngine, &eWall}} {
			t := time.Now()
			if err := parallel(ctx, width, width, func(ctx context.Context, _ int) error { return side.op(ctx) }); err != nil {
				return err
			}
			*side.wall = append(*side.wall, time.Since(t))
		}
	}
	b.add(newRow(reg, fmt.Sprintf("%d concurrent execs of `true`, one sandbox (wall)", width), "ms",
		median(sWall), median(eWall), engineName, len(sWall)))

	// Time to the first byte of a streamed command's output.
	var sFirst, eFirst []time.Duration
	for range max(5, b.opts.Execs/10) {
		d, err := b.streamFirstByte(ctx, api, chat)
		if err != nil {
			return err
		}
		sFirst = append(sFirst, d)
		if d, err = engineFirstByte(ctx, b.cli, id); err != nil {
			return err
		}
		eFirst = append(eFirst, d)
	}
	b.add(newRow(reg, "streamed exec: time to first byte (p50)", "ms", median(sFirst), median(eFirst),
		"Engine API exec create + attach, first byte", len(sFirst)))
	b.rows[len(b.rows)-1].Note = "`sh -c 'echo x; sleep 0.1'`: sandboxd with Accept: application/x-ndjson until the first stdout event is written"

	fallbacksAfter, err := b.fallbacks(ctx, base)
	if err != nil {
		return err
	}
	if n := fallbacksAfter - fallbacksBefore; n != 0 {
		return fmt.Errorf("%v commands fell back to the engine's exec (sandbox_exec_fallback_total): the figures are not the agent's", n)
	}
	return nil
}

// firstWrite records when its first Write comes.
type firstWrite struct {
	once sync.Once
	at   time.Time
}

func (w *firstWrite) Write(p []byte) (int, error) {
	w.once.Do(func() { w.at = time.Now() })
	return len(p), nil
}

const streamCmd = "echo x; sleep 0.1"

func (b *bench) streamFirstByte(ctx context.Context, api *sbclient.Client, chat string) (time.Duration, error) {
	var w firstWrite
	t := time.Now()
	res, err := api.ExecStream(ctx, chat, sbclient.ExecBody{Cmd: []string{"sh", "-c", streamCmd}}, &w, io.Discard)
	if err != nil {
		return 0, err
	}
	if res.ExitCode != 0 || w.at.IsZero() {
		return 0, fmt.Errorf("streamed exec: exit %d, output %v", res.ExitCode, !w.at.IsZero())
	}
	return w.at.Sub(t), nil
}

// engineFirstByte runs the streamed command through the Engine API's exec and returns
// the time to its first byte of output (it reads the rest and waits for the end untimed).
func engineFirstByte(ctx context.Context, cli *client.Client, id string) (time.Duration, error) {
	t := time.Now()
	created, err := cli.ExecCreate(ctx, id, client.ExecCreateOptions{
		Cmd: []string{"sh", "-c", streamCmd}, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return 0, fmt.Errorf("engine: exec create: %w", err)
	}
	att, err := cli.ExecAttach(ctx, created.ID, client.ExecAttachOptions{})
	if err != nil {
		return 0, fmt.Errorf("engine: exec attach: %w", err)
	}
	defer att.Close()
	var w firstWrite
	if _, err := stdcopy.StdCopy(&w, io.Discard, att.Reader); err != nil {
		return 0, fmt.Errorf("engine: exec read: %w", err)
	}
	if w.at.IsZero() {
		return 0, fmt.Errorf("engine: no output")
	}
	return w.at.Sub(t), nil
}

// fallbacks is sandboxd's sandbox_exec_fallback_total, summed over its reasons.
func (b *bench) fallbacks(ctx context.Context, base string) (float64, error) {
	data, err := b.metrics(ctx, base)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, line := range strings.Split(data, "\n") {
		if !strings.HasPrefix(line, "sandbox_exec_fallback_total") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("GET /metrics: %q: %w", line, err)
		}
		sum += v
	}
	return sum, nil
}
