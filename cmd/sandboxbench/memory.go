package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	sbclient "github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// memory: sandboxd's RSS with Sessions records in its registry against one record. The
// records are written into the registry before sandboxd starts; all point at one real,
// running container of sandboxd's instance, so that the start-up reconciliation keeps
// them (a record whose container is gone would be repaired away).
func (b *bench) memory(ctx context.Context, reg registry) error {
	w, err := b.newWorld(ctx, reg, "mem")
	if err != nil {
		return err
	}
	defer w.drop()
	d, err := newDirect(b.cli, w.instance, w.volumes, b.image)
	if err != nil {
		return err
	}
	defer d.close()
	st, err := openStore(ctx, w.dsn)
	if err != nil {
		return err
	}
	defer st.Close()

	now := time.Now().UTC()
	expires := now.Add(time.Hour)
	opts, spec, err := d.prepare(uuid.New(), expires)
	if err != nil {
		return err
	}
	id, err := d.createStart(ctx, opts)
	if err != nil {
		return err
	}
	save := func(chat, session uuid.UUID) error {
		return st.Save(ctx, sandbox.Session{
			ID: session, ChatID: chat, ContainerID: id, Status: sandbox.StatusRunning,
			CreatedAt: now, ExpiresAt: expires, VolumeHostPath: filepath.Join(w.volumes, chat.String()),
		})
	}
	if err := save(spec.ChatID, spec.SessionID); err != nil {
		return err
	}

	measure := func(want int) (rss, peak int64, err error) {
		srv, api, err := b.start(ctx, w, "SANDBOXD_TTL=1h", "SANDBOXD_SWEEP_INTERVAL=1s")
		if err != nil {
			return 0, 0, err
		}
		defer srv.kill()
		// The same work in both runs: read the whole registry through the API, let two
		// sweeps pass, then read the RSS.
		seen := 0
		for after := ""; ; {
			page, err := api.List(ctx, sbclient.ListOptions{After: after, Limit: 1000})
			if err != nil {
				return 0, 0, err
			}
			seen += len(page.Items)
			if page.Next == "" {
				break
			}
			after = page.Next
		}
		if seen != want {
			return 0, 0, fmt.Errorf("sandboxd lists %d sessions, want %d (did the reconciler drop some?)", seen, want)
		}
		time.Sleep(b.opts.Settle)
		rss, peak, err = srv.rss()
		if err != nil {
			return 0, 0, err
		}
		return rss, peak, srv.stop()
	}
	rss1, peak1, err := measure(1)
	if err != nil {
		return err
	}
	for i := 1; i < b.opts.Sessions; i++ {
		if err := save(uuid.New(), uuid.New()); err != nil {
			return err
		}
	}
	rssN, peakN, err := measure(b.opts.Sessions)
	if err != nil {
		return err
	}
	if err := removeContainer(ctx, b.cli, id); err != nil {
		return err
	}
	b.add(newRow(reg.name, fmt.Sprintf("RSS with %d sessions", b.opts.Sessions), "MiB", mib(rssN), mib(rss1),
		"RSS with 1 session", 1))
	b.rows[len(b.rows)-1].Note = fmt.Sprintf("%.2f KiB per session ((RSS_N - RSS_1) / (N-1)); peak RSS (VmHWM) %.1f MiB vs %.1f MiB",
		float64(rssN-rss1)/1024/float64(b.opts.Sessions-1), mib(peakN), mib(peak1))
	return nil
}
