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

// cold: one create at a time, sandboxd and direct alternating, timed until the answer,
// each proven exec-ready right after (untimed in the main figure).
func (b *bench) cold(ctx context.Context, reg string, api *sbclient.Client, d *direct) (sandboxd createTimes, err error) {
	var s, e createTimes
	var probes []time.Duration
	viaSandboxd := func(record bool) error {
		chat := uuid.NewString()
		t := time.Now()
		got, _, err := api.Create(ctx, chat, sbclient.CreateBody{})
		if err != nil {
			return err
		}
		answer := time.Since(t)
		if err := b.provenReady(ctx, "sandbox", got.ContainerID); err != nil {
			return err
		}
		firstExec := time.Since(t)
		if _, err := api.Delete(ctx, chat); err != nil {
			return err
		}
		if record {
			s.add(answer, firstExec)
		}
		return nil
	}
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
	for i := range b.opts.N + 1 { // the first round warms up and is not recorded
		first, second := viaSandboxd, viaEngine
		if i%2 == 1 {
			first, second = viaEngine, viaSandboxd
		}
		if err := first(i > 0); err != nil {
			return s, err
		}
		if err := second(i > 0); err != nil {
			return s, err
		}
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
