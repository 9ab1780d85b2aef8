package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	sbclient "github.com/sandboxd/sandboxd/client"
)

// graceForComparison is the stop grace sandboxd had by default before it had none
// (docker.stop_timeout 3s), measured beside the default of no grace.
const graceForComparison = 3 * time.Second

// restartPoll is how often the restart drain asks the engine what is left.
const restartPoll = 100 * time.Millisecond

// restartDrain: Drain sandboxes made through sandboxd expire while it is down (their
// expiry moved into the past in the registry); sandboxd starts again at its default
// settings (sweep interval, parallelism, no stop grace: only the TTL is set, to 1 h), timed
// from its start until the engine lists none of them, polled every restartPoll; against
// the engine force-removing as many containers of the same config, DrainParallel at once,
// timed from the first remove the same way. Then the same with graceForComparison.
func (b *bench) restartDrain(ctx context.Context, reg string, w *world, api *sbclient.Client,
	restartWith func(settings []string, edit func() error) (*sbclient.Client, error), d *direct) error {
	n := b.opts.Drain
	st, err := openStore(ctx, w.dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	defaults := []string{"SANDBOXD_TTL=1h"}
	grace := append(slices.Clone(defaults), "SANDBOXD_DOCKER_STOP_TIMEOUT="+graceForComparison.String())
	// once makes n sandboxes through the running sandboxd, restarts it with settings and
	// their expiries in the past, and times the drain.
	once := func(settings []string) (time.Duration, error) {
		sessions := make([]uuid.UUID, n)
		err := parallel(ctx, n, 8, func(ctx context.Context, i int) error {
			s, _, err := api.Create(ctx, uuid.NewString(), sbclient.CreateBody{})
			if err != nil {
				return err
			}
			sessions[i], err = uuid.Parse(s.SessionID)
			return err
		})
		if err != nil {
			return 0, err
		}
		var (
			start time.Time
			at    time.Time
			gone  = make(chan error, 1)
		)
		api, err = restartWith(settings, func() error {
			expired := time.Now().Add(-time.Second)
			for _, id := range sessions {
				if err := st.SetExpiry(ctx, id, expired); err != nil {
					return err
				}
			}
			start = time.Now() // sandboxd starts right after this returns
			go func() {
				var err error
				at, err = untilNone(ctx, b.cli, w.instance, start.Add(5*time.Minute), restartPoll)
				gone <- err
			}()
			return nil
		})
		if err != nil {
			return 0, err
		}
		if err := <-gone; err != nil {
			return 0, err
		}
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); { // records go after containers
			if c, err := st.Count(ctx); err != nil || c == 0 {
				break
			}
			time.Sleep(restartPoll)
		}
		return at.Sub(start), nil
	}
	var sDrains, gDrains, dDrains []time.Duration
	for range b.opts.Rounds {
		forced, err := once(defaults)
		if err != nil {
			return err
		}
		sDrains = append(sDrains, forced)
		graceful, err := once(grace)
		if err != nil {
			return err
		}
		gDrains = append(gDrains, graceful)
		direct, err := b.directDrain(ctx, d, n, restartPoll)
		if err != nil {
			return err
		}
		dDrains = append(dDrains, direct)
	}
	b.add(newRow(reg, fmt.Sprintf("restart drain of %d expired, default settings", n), "ms", median(sDrains), median(dDrains),
		fmt.Sprintf("%d Engine API force-removes, %d at once", n, b.opts.DrainParallel), len(sDrains),
		Target{On: "ratio", Op: "<=", Limit: 1.25}))
	b.rows[len(b.rows)-1].Note = fmt.Sprintf("sandboxd at its default settings, timed from its start (expired while it was down) "+
		"until the engine lists none, polled every %s; the baseline timed from the first remove the same way", restartPoll)
	b.add(newRow(reg, fmt.Sprintf("restart drain of %d expired, %s stop grace", n, graceForComparison), "ms", median(gDrains), median(dDrains),
		fmt.Sprintf("%d Engine API force-removes, %d at once", n, b.opts.DrainParallel), len(gDrains)))
	b.rows[len(b.rows)-1].Note = fmt.Sprintf("the same with docker.stop_timeout %s (a graceful stop, then the remove): the grace costs %.2f of the default drain",
		graceForComparison, median(gDrains)/median(sDrains)-1)
	return nil
}
