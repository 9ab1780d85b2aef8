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

// parallelCreates: Parallel distinct chats at once, wall time until every PUT answered,
// against as many direct create+starts at once; the median of Rounds rounds.
func (b *bench) parallelCreates(ctx context.Context, reg string, api *sbclient.Client, d *direct) error {
	n := b.opts.Parallel
	var sWalls, dWalls []time.Duration
	for round := range b.opts.Rounds {
		viaSandboxd := func() error {
			chats := make([]string, n)
			for i := range chats {
				chats[i] = uuid.NewString()
			}
			start := time.Now()
			err := parallel(ctx, n, n, func(ctx context.Context, i int) error {
				_, _, err := api.Create(ctx, chats[i], sbclient.CreateBody{})
				return err
			})
			sWalls = append(sWalls, time.Since(start))
			return errors.Join(err, parallel(ctx, n, 8, func(ctx context.Context, i int) error {
				_, err := api.Delete(ctx, chats[i])
				return err
			}))
		}
		viaEngine := func() error {
			opts := make([]client.ContainerCreateOptions, n)
			for i := range opts {
				var err error
				if opts[i], _, err = d.prepare(uuid.New(), time.Now().Add(time.Hour)); err != nil {
					return err
				}
			}
			ids := make([]string, n)
			start := time.Now()
			err := parallel(ctx, n, n, func(ctx context.Context, i int) error {
				var err error
				ids[i], err = d.createStart(ctx, opts[i])
				return err
			})
			dWalls = append(dWalls, time.Since(start))
			return errors.Join(err, parallel(ctx, n, 8, func(ctx context.Context, i int) error {
				if ids[i] == "" {
					return nil
				}
				return removeContainer(ctx, b.cli, ids[i])
			}))
		}
		first, second := viaSandboxd, viaEngine
		if round%2 == 1 {
			first, second = viaEngine, viaSandboxd
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
	}
	b.add(newRow(reg, fmt.Sprintf("%d distinct creates at once, wall", n), "ms", median(sWalls), median(dWalls),
		fmt.Sprintf("%d Engine API create+starts at once", n), len(sWalls),
		Target{On: "ratio", Op: "<=", Limit: 1.25}))
	return nil
}
