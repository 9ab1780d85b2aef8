package main

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	sbclient "github.com/sandboxd/sandboxd/client"
)

// createTimes are the creates of one kind: until the answer (the PUT's, or the Engine
// API's start), and until the first exec of `true` after it has finished.
type createTimes struct{ answer, firstExec []time.Duration }

func (c *createTimes) add(answer, firstExec time.Duration) {
	c.answer, c.firstExec = append(c.answer, answer), append(c.firstExec, firstExec)
}

// provenReady is the exec-readiness check after a timed create: one exec of `true` in
// the container, at once and without retry. It must succeed, or the create handed out a
// sandbox that was not exec-ready and the run fails.
func (b *bench) provenReady(ctx context.Context, what, id string) error {
	if err := execTrue(ctx, b.cli, id); err != nil {
		return fmt.Errorf("%s %s was not exec-ready when it answered: %w", what, id, err)
	}
	return nil
}

// viaSandboxd is how a scenario drives sandboxd on one runtime: how a sandbox it
// created is proven exec-ready (ready, given its container or Pod) and how a chat is
// forgotten after its measurement (untimed).
type viaSandboxd struct {
	api    *sbclient.Client
	ready  func(ctx context.Context, id string) error
	forget func(ctx context.Context, chat string) error
}

// sandboxdOnDocker: proven exec-ready by an exec of `true` over the Engine API, forgotten
// by a DELETE of the sandbox.
func (b *bench) sandboxdOnDocker(api *sbclient.Client) viaSandboxd {
	return viaSandboxd{
		api:   api,
		ready: func(ctx context.Context, id string) error { return b.provenReady(ctx, "sandbox", id) },
		forget: func(ctx context.Context, chat string) error {
			_, err := api.Delete(ctx, chat)
			return err
		},
	}
}

// create is one create of a new chat, timed until the answer and until the sandbox was
// proven exec-ready (firstExec); then, untimed, then (if any) and the chat is forgotten.
func (v viaSandboxd) create(ctx context.Context, then func() error) (answer, firstExec time.Duration, err error) {
	chat := uuid.NewString()
	t := time.Now()
	got, _, err := v.api.Create(ctx, chat, sbclient.CreateBody{})
	if err != nil {
		return 0, 0, err
	}
	answer = time.Since(t)
	if err := v.ready(ctx, got.ContainerID); err != nil {
		return 0, 0, err
	}
	firstExec = time.Since(t)
	if then != nil {
		if err := then(); err != nil {
			return 0, 0, err
		}
	}
	return answer, firstExec, v.forget(ctx, chat)
}

// alternate runs rounds rounds of two sides, a first in even rounds and b first in odd
// ones; it stops at the first error.
func alternate(rounds int, a, b func(round int) error) error {
	for round := range rounds {
		first, second := a, b
		if round%2 == 1 {
			first, second = b, a
		}
		if err := first(round); err != nil {
			return err
		}
		if err := second(round); err != nil {
			return err
		}
	}
	return nil
}

// coldCreates: n+1 rounds of one create through sandboxd against one create of the
// baseline (base, told whether to record), alternating; the first round warms up and
// is not recorded. It returns sandboxd's times.
func coldCreates(ctx context.Context, n int, sb viaSandboxd, base func(record bool) error) (createTimes, error) {
	var s createTimes
	err := alternate(n+1, func(round int) error {
		answer, firstExec, err := sb.create(ctx, nil)
		if err == nil && round > 0 {
			s.add(answer, firstExec)
		}
		return err
	}, func(round int) error { return base(round > 0) })
	return s, err
}

// cold: one create at a time, sandboxd and direct alternating, timed until the answer,
// each proven exec-ready right after (untimed in the main figure).
func (b *bench) cold(ctx context.Context, reg string, api *sbclient.Client, d *direct) (sandboxd createTimes, err error) {
	var e createTimes
	var probes []time.Duration
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
		answer := time.Since(t)
		if err := b.provenReady(ctx, "container", id); err != nil {
			return err
		}
		firstExec := time.Since(t)
		// The exec's own cost: one more exec of true, on the container that now runs.
		t = time.Now()
		if err := execTrue(ctx, b.cli, id); err != nil {
			return err
		}
		probe := time.Since(t)
		if err := removeContainer(ctx, b.cli, id); err != nil {
			return err
		}
		if record {
			e.add(answer, firstExec)
			probes = append(probes, probe)
		}
		return nil
	}
	s, err := coldCreates(ctx, b.opts.N, b.sandboxdOnDocker(api), viaEngine)
	if err != nil {
		return s, err
	}
	base := "Engine API create+start"
	b.add(newRow(reg, "cold create p50 (answered, exec-ready)", "ms", quantile(s.answer, 0.5), quantile(e.answer, 0.5), base, len(s.answer),
		Target{On: "ratio", Op: "<=", Limit: 1.10}))
	b.add(newRow(reg, "cold create p99 (answered, exec-ready)", "ms", quantile(s.answer, 0.99), quantile(e.answer, 0.99), base, len(s.answer)))
	b.add(newRow(reg, "cold create p50 + first exec", "ms", quantile(s.firstExec, 0.5), quantile(e.firstExec, 0.5), base+" + first exec", len(s.firstExec)))
	b.add(newRow(reg, "cold create p99 + first exec", "ms", quantile(s.firstExec, 0.99), quantile(e.firstExec, 0.99), base+" + first exec", len(s.firstExec)))
	b.add(newRow(reg, "exec of true on a running sandbox p50", "ms", quantile(probes, 0.5), quantile(e.answer, 0.5), base, len(probes)))
	b.rows[len(b.rows)-1].Note = "one exec (ExecCreate, attach, inspect) on a container that already runs: the engine's own cost, in every \"+ first exec\" figure"
	return s, nil
}
