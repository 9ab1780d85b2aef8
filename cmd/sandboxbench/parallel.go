package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/moby/moby/client"

	sbclient "github.com/sandboxd/sandboxd/client"
)

// atOnce: n creates at once (create(i)), timed until every one returned; then, untimed,
// a remove of every i (8 at a time), created or not.
func atOnce(ctx context.Context, n int, create, remove func(ctx context.Context, i int) error) (time.Duration, error) {
	start := time.Now()
	err := parallel(ctx, n, n, create)
	wall := time.Since(start)
	return wall, errors.Join(err, parallel(ctx, n, 8, remove))
}

// createsAtOnce: rounds rounds of n distinct chats created at once through sandboxd
// (timed until every PUT answered, then forgotten) against one round of the baseline
// (base: its wall time), the sides alternating first; the walls of each side.
func createsAtOnce(ctx context.Context, rounds, n int, sb viaSandboxd, base func() (time.Duration, error)) (sWalls, dWalls []time.Duration, err error) {
	err = alternate(rounds, func(int) error {
		chats := make([]string, n)
		for i := range chats {
			chats[i] = uuid.NewString()
		}
		wall, err := atOnce(ctx, n, func(ctx context.Context, i int) error {
			_, _, err := sb.api.Create(ctx, chats[i], sbclient.CreateBody{})
			return err
		}, func(ctx context.Context, i int) error { return sb.forget(ctx, chats[i]) })
		sWalls = append(sWalls, wall)
		return err
	}, func(int) error {
		wall, err := base()
		dWalls = append(dWalls, wall)
		return err
	})
	return sWalls, dWalls, err
}

// parallelCreates: Parallel distinct chats at once, wall time until every PUT answered,
// against as many direct create+starts at once; the median of Rounds rounds.
func (b *bench) parallelCreates(ctx context.Context, reg string, api *sbclient.Client, d *direct) error {
	n := b.opts.Parallel
	sWalls, dWalls, err := createsAtOnce(ctx, b.opts.Rounds, n, b.sandboxdOnDocker(api), func() (time.Duration, error) {
		opts := make([]client.ContainerCreateOptions, n)
		for i := range opts {
			var err error
			if opts[i], _, err = d.prepare(uuid.New(), time.Now().Add(time.Hour)); err != nil {
				return 0, err
			}
		}
		ids := make([]string, n)
		return atOnce(ctx, n, func(ctx context.Context, i int) error {
			var err error
			ids[i], err = d.createStart(ctx, opts[i])
			return err
		}, func(ctx context.Context, i int) error {
			if ids[i] == "" {
				return nil
			}
			return removeContainer(ctx, b.cli, ids[i])
		})
	})
	if err != nil {
		return err
	}
	b.add(newRow(reg, fmt.Sprintf("%d distinct creates at once, wall", n), "ms", median(sWalls), median(dWalls),
		fmt.Sprintf("%d Engine API create+starts at once", n), len(sWalls),
		Target{On: "ratio", Op: "<=", Limit: 1.25}))
	return nil
}
