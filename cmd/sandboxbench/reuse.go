package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/google/uuid"

	sbclient "github.com/sandboxd/sandboxd/client"
)

// reuse: PUTs on live sessions, Workers at once, against the trivial route of the same
// sandboxd (GET /healthz: same process, http.Server, mux, huma API and middleware; see
// healthz), and, for context only, against a bare net/http handler in a process of its own.
func (b *bench) reuse(ctx context.Context, reg string, base string, api *sbclient.Client) error {
	chats := make([]string, b.opts.Workers)
	defer deleteChats(ctx, api, chats)
	if err := createChats(ctx, api, chats); err != nil {
		return err
	}
	bare, err := startTrivial(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = bare.stop() }()
	bapi, err := sbclient.New(bare.base, benchToken, b.hc)
	if err != nil {
		return err
	}

	put := func(api *sbclient.Client) func(ctx context.Context, i int) error {
		return func(ctx context.Context, i int) error { return reusePut(ctx, api, chats[i]) }
	}
	sides := []*side{
		{op: put(api)}, // sandboxd
		{op: func(ctx context.Context, _ int) error { return b.healthz(ctx, base) }}, // the ceiling
		{op: put(bapi)}, // context only
	}
	if err := rotate(ctx, sides, len(chats), b.opts.Reuse); err != nil {
		return err
	}
	s, h, t := sides[0], sides[1], sides[2]
	tput := (*side).tput
	hName := "GET /healthz, same sandboxd"
	b.add(newRow(reg, fmt.Sprintf("reuse throughput (%d clients)", len(chats)), "req/s",
		tput(s), tput(h), hName, len(s.lat), Target{On: "ratio", Op: ">=", Limit: 0.5}))
	b.rows[len(b.rows)-1].Note = "the ceiling is sandboxd's own trivial route on the same process, server, mux, huma API, auth and request-log middleware; " +
		"/healthz is outside /v1/, so the bearer token it carries is not checked, no body is read and its answer is smaller"
	b.add(newRow(reg, "reuse p50", "ms", quantile(s.lat, 0.5), quantile(h.lat, 0.5), hName, len(s.lat)))
	b.add(newRow(reg, "reuse p99", "ms", quantile(s.lat, 0.99), quantile(h.lat, 0.99), hName, len(s.lat)))
	b.add(newRow(reg, fmt.Sprintf("context: reuse throughput vs bare handler (%d clients)", len(chats)), "req/s",
		tput(s), tput(t), "bare net/http handler, other process", len(s.lat)))
	b.rows[len(b.rows)-1].Note = fmt.Sprintf("not the issue's ceiling: a constant answer from a bare handler with sandboxd's http.Server settings, "+
		"no router, middleware or logging (p50 %.2f ms, p99 %.2f ms); GET /healthz on sandboxd: %.0f req/s, %.2f of it",
		quantile(t.lat, 0.5), quantile(t.lat, 0.99), tput(h), tput(h)/tput(t))
	return nil
}

// createChats gives each of chats (filled with new chat ids) a live sandbox.
func createChats(ctx context.Context, api *sbclient.Client, chats []string) error {
	for i := range chats {
		chats[i] = uuid.NewString()
		if _, _, err := api.Create(ctx, chats[i], sbclient.CreateBody{}); err != nil {
			return err
		}
	}
	return nil
}

// deleteChats deletes the sandboxes of chats, whatever happened to ctx.
func deleteChats(ctx context.Context, api *sbclient.Client, chats []string) {
	for _, c := range chats {
		if c != "" {
			_, _ = api.Delete(context.WithoutCancel(ctx), c)
		}
	}
}

// reusePut is one PUT on a live session, which must answer reused.
func reusePut(ctx context.Context, api *sbclient.Client, chat string) error {
	_, res, err := api.Create(ctx, chat, sbclient.CreateBody{})
	if err == nil && res != sbclient.Reused {
		err = fmt.Errorf("PUT on a live session: %s, want reused", res)
	}
	return err
}

// side is one thing measured for throughput: op, run by numbered clients at once.
type side struct {
	op        func(ctx context.Context, client int) error
	lat       []time.Duration
	wall      time.Duration
	recording bool
}

func (s *side) tput() float64 { return float64(len(s.lat)) / s.wall.Seconds() }

// rotate runs every side with clients at once: a warm-up of each (connections, caches),
// then total ops per side in two halves with the sides in rotating order, so that drift
// hits all alike.
func rotate(ctx context.Context, sides []*side, clients, total int) error {
	burst := func(s *side, total int) error {
		per := max(1, total/clients)
		lat := make([][]time.Duration, clients)
		start := time.Now()
		err := parallel(ctx, clients, clients, func(ctx context.Context, i int) error {
			lat[i] = make([]time.Duration, 0, per)
			for range per {
				t := time.Now()
				if err := s.op(ctx, i); err != nil {
					return err
				}
				lat[i] = append(lat[i], time.Since(t))
			}
			return nil
		})
		if s.recording {
			s.lat, s.wall = append(s.lat, slices.Concat(lat...)...), s.wall+time.Since(start)
		}
		return err
	}
	for _, s := range sides {
		if err := burst(s, min(200, total)); err != nil {
			return err
		}
		s.recording = true
	}
	for half := range 2 {
		for k := range sides {
			if err := burst(sides[(k+half)%len(sides)], total/2); err != nil {
				return err
			}
		}
	}
	return nil
}

// healthz is one GET /healthz on sandboxd, sent like the API client's requests (bearer
// token, Accept: application/json) and its answer read and decoded as they are.
func (b *bench) healthz(ctx context.Context, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+benchToken)
	req.Header.Set("Accept", "application/json")
	resp, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var probe struct{ Status string }
	if err := json.Unmarshal(data, &probe); err != nil || resp.StatusCode != http.StatusOK || probe.Status != "ok" {
		return fmt.Errorf("GET /healthz: %s %q (%v)", resp.Status, data, err)
	}
	return nil
}
