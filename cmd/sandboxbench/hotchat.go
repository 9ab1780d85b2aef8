package main

import (
	"context"
	"fmt"

	sbclient "github.com/sandboxd/sandboxd/client"
)

// hotChat: HotClients clients PUT on one live chat (a hot chat: every PUT a reuse of the
// same session), against the same clients each on a chat of its own, and against GET
// /healthz of the same sandboxd with as many clients, the sides in rotating order.
func (b *bench) hotChat(ctx context.Context, reg string, base string, api *sbclient.Client) error {
	n := b.opts.HotClients
	chats := make([]string, n)
	defer deleteChats(ctx, api, chats)
	if err := createChats(ctx, api, chats); err != nil {
		return err
	}
	hot := &side{op: func(ctx context.Context, _ int) error { return reusePut(ctx, api, chats[0]) }}
	spread := &side{op: func(ctx context.Context, i int) error { return reusePut(ctx, api, chats[i]) }}
	ceiling := &side{op: func(ctx context.Context, _ int) error { return b.healthz(ctx, base) }}
	if err := rotate(ctx, []*side{hot, spread, ceiling}, n, b.opts.Reuse); err != nil {
		return err
	}
	hName := fmt.Sprintf("GET /healthz, same sandboxd, %d clients", n)
	b.add(newRow(reg, fmt.Sprintf("hot chat reuse throughput (%d clients, 1 chat)", n), "req/s",
		hot.tput(), ceiling.tput(), hName, len(hot.lat), Target{On: "ratio", Op: ">=", Limit: 0.5}))
	b.add(newRow(reg, "hot chat reuse p99", "ms", quantile(hot.lat, 0.99), quantile(ceiling.lat, 0.99), hName, len(hot.lat)))
	b.add(newRow(reg, fmt.Sprintf("reuse throughput (%d clients, %d chats)", n, n), "req/s",
		spread.tput(), ceiling.tput(), hName, len(spread.lat)))
	b.rows[len(b.rows)-1].Note = fmt.Sprintf("the same clients each on a chat of its own: the hot chat's %.0f req/s is %.2f of it",
		hot.tput(), hot.tput()/spread.tput())
	return nil
}
