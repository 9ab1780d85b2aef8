package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/moby/moby/client"

	sbclient "github.com/sandboxd/sandboxd/client"
)

// egressThroughput: a download of egressDownloadBytes with busybox wget in a sandbox of the
// egress profile, through sandboxd's proxy (which checks, resolves, dials loopback and
// counts every byte), against the same download by the same wget in a sandbox on Docker's
// default bridge, straight from the server at the bridge's gateway (no proxy). Each is
// timed by the exec's own duration; rounds alternate, the median is reported.
func (b *bench) egressThroughput(ctx context.Context, ew *egressWorld) error {
	proxied, direct := uuid.NewString(), uuid.NewString()
	if _, _, err := ew.api.Create(ctx, proxied, sbclient.CreateBody{AgentID: "net"}); err != nil {
		return err
	}
	defer func() { _, _ = ew.api.Delete(context.WithoutCancel(ctx), proxied) }()
	d, _, err := ew.api.Create(ctx, direct, sbclient.CreateBody{AgentID: "direct"})
	if err != nil {
		return err
	}
	defer func() { _, _ = ew.api.Delete(context.WithoutCancel(ctx), direct) }()
	gw, err := bridgeGateway(ctx, b, d.ContainerID)
	if err != nil {
		return err
	}
	size := b.egressDownloadBytes()
	get := func(chat, url string) (time.Duration, error) {
		script := fmt.Sprintf("wget -q -O - %s | wc -c", url)
		res, err := ew.api.Exec(ctx, chat, sbclient.ExecBody{Cmd: []string{"sh", "-c", script}, TimeoutS: 300})
		if err != nil {
			return 0, err
		}
		if got := strings.TrimSpace(res.Stdout); res.ExitCode != 0 || got != strconv.FormatInt(size, 10) {
			return 0, fmt.Errorf("%s: exit %d, %q bytes (%s)", url, res.ExitCode, got, res.Stderr)
		}
		return time.Duration(res.DurationMS) * time.Millisecond, nil
	}
	rounds := b.opts.Rounds
	var viaProxy, straight []time.Duration
	for i := range rounds + 1 { // the first round warms up
		p, err := get(proxied, fmt.Sprintf("http://bench.test:%s/%d", ew.dataPort, size))
		if err != nil {
			return fmt.Errorf("through the proxy: %w", err)
		}
		s, err := get(direct, fmt.Sprintf("http://%s:%s/%d", gw, ew.dataPort, size))
		if err != nil {
			return fmt.Errorf("direct: %w", err)
		}
		if i > 0 {
			viaProxy, straight = append(viaProxy, p), append(straight, s)
		}
	}
	mb := float64(size) / 1e6
	rate := func(ds []time.Duration) float64 { return mb / (quantile(ds, 0.5) / 1000) }
	b.add(newRow("sqlite", fmt.Sprintf("egress download of %d MB through the proxy", size>>20), "MB/s", rate(viaProxy), rate(straight),
		"the same download without the proxy (a sandbox on Docker's default bridge)", len(viaProxy)))
	b.rows[len(b.rows)-1].Note = "busybox wget in the sandbox, the server on the host; medians of the exec's duration"
	return nil
}

// bridgeGateway is the gateway of the default bridge as container id sees it.
func bridgeGateway(ctx context.Context, b *bench, id string) (string, error) {
	res, err := b.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return "", err
	}
	for _, n := range res.Container.NetworkSettings.Networks {
		if n.Gateway.IsValid() {
			return n.Gateway.String(), nil
		}
	}
	return "", fmt.Errorf("container %s has no gateway", id)
}
