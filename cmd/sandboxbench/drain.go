package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	sbclient "github.com/sandboxd/sandboxd/client"
)

// drain: Drain sandboxes made through sandboxd, all made to expire at the same instant
// (their expiry moved in the registry while sandboxd is stopped, then it starts again
// before that instant), timed from that instant until the engine lists none of them;
// against removing as many containers directly, DrainParallel at once.
func (b *bench) drain(ctx context.Context, reg string, w *world, api *sbclient.Client,
	restart func(edit func() error) (*sbclient.Client, error), d *direct) error {
	n := b.opts.Drain
	st, err := openStore(ctx, w.dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	var sDrains, dDrains []time.Duration
	for range b.opts.Rounds {
		chats := make([]uuid.UUID, n)
		sessions := make([]uuid.UUID, n)
		err := parallel(ctx, n, 8, func(ctx context.Context, i int) error {
			chats[i] = uuid.New()
			s, _, err := api.Create(ctx, chats[i].String(), sbclient.CreateBody{})
			if err != nil {
				return err
			}
			sessions[i], err = uuid.Parse(s.SessionID)
			return err
		})
		if err != nil {
			return err
		}
		// The margin covers stopping sandboxd, moving the expiries and starting it again.
		expiry := time.Now().Add(10*time.Second + time.Duration(n)*20*time.Millisecond)
		api, err = restart(func() error {
			for _, id := range sessions {
				if err := st.SetExpiry(ctx, id, expiry); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if time.Now().After(expiry) {
			return errors.New("restarting sandboxd with the expiries moved took longer than the margin")
		}
		time.Sleep(time.Until(expiry))
		deadline := time.Now().Add(5 * time.Minute)
		gone, err := untilNone(ctx, b.cli, w.instance, deadline, 20*time.Millisecond)
		if err != nil {
			return err
		}
		sDrains = append(sDrains, gone.Sub(expiry))
		for time.Now().Before(deadline) { // the sweep forgets the records after the containers
			if c, err := st.Count(ctx); err != nil || c == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}

		direct, err := b.directDrain(ctx, d, n, 20*time.Millisecond)
		if err != nil {
			return err
		}
		dDrains = append(dDrains, direct)
	}
	b.add(newRow(reg, fmt.Sprintf("sweep drain of %d expired", n), "ms", median(sDrains), median(dDrains),
		fmt.Sprintf("%d Engine API removes, %d at once", n, b.opts.DrainParallel), len(sDrains),
		Target{On: "ratio", Op: "<=", Limit: 1.25}))
	b.rows[len(b.rows)-1].Note = fmt.Sprintf("sweep interval %s, sweep parallelism %d; timed from the common expiry to the engine listing none (polled every 20 ms)",
		b.opts.SweepInterval, b.opts.DrainParallel)
	return nil
}

// directDrain makes n containers of the same config as sandboxd's directly, then
// force-removes them, DrainParallel at once, and returns the time from the first remove
// until the engine lists none of them, polled every poll (the polling's load on the
// engine and its granularity are the same as on sandboxd's side).
func (b *bench) directDrain(ctx context.Context, d *direct, n int, poll time.Duration) (time.Duration, error) {
	ids := make([]string, n)
	err := parallel(ctx, n, 8, func(ctx context.Context, i int) error {
		opts, _, err := d.prepare(uuid.New(), time.Now().Add(time.Hour))
		if err != nil {
			return err
		}
		ids[i], err = d.createStart(ctx, opts)
		return err
	})
	if err != nil {
		return 0, err
	}
	start := time.Now()
	removed := make(chan error, 1)
	go func() {
		removed <- parallel(ctx, n, b.opts.DrainParallel, func(ctx context.Context, i int) error {
			return removeContainer(ctx, b.cli, ids[i])
		})
	}()
	gone, err := untilNone(ctx, b.cli, d.instance, time.Now().Add(5*time.Minute), poll)
	if rerr := <-removed; rerr != nil {
		return 0, rerr
	}
	if err != nil {
		return 0, err
	}
	return gone.Sub(start), nil
}
