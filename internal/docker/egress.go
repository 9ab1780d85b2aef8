package docker

// The egress network: the sandboxes of profiles with network "egress" join one internal
// bridge network of the instance (no route out, no traffic between its containers), on
// whose gateway address, on the host, sandboxd's egress proxy listens; a firewall guard
// on the bridge lets them reach that address and port and nothing else of the host.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync/atomic"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/google/uuid"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/sandboxd/sandboxd/internal/poolset"
	"github.com/sandboxd/sandboxd/internal/profile"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// EgressNetwork is the instance's egress network as the engine made it.
type EgressNetwork struct {
	Name, ID string
	Bridge   string       // the bridge's interface on the host
	Gateway  netip.Addr   // the host's address on it: where the proxy listens
	Subnet   netip.Prefix // the sandboxes' addresses
	Port     int          // the proxy's port
}

// ProxyURL is the proxy's URL as the sandboxes are given it.
func (n EgressNetwork) ProxyURL() string {
	return "http://" + netip.AddrPortFrom(n.Gateway, uint16(n.Port)).String()
}

// egressState is what StartEgress set up (nil before, or with no egress profile).
type egressState = atomic.Pointer[EgressNetwork]

// EgressNetworkName is the name of an instance's egress network.
func EgressNetworkName(instance string) string { return "sandboxd-egress-" + instance }

// egressBridge is the interface name of an instance's bridge: at most 15 characters.
func egressBridge(instance string) string {
	sum := sha256.Sum256([]byte(instance))
	return "sbx-" + hex.EncodeToString(sum[:])[:10]
}

// NeedsEgress reports whether a profile has network "egress".
func (r *Runtime) NeedsEgress() bool {
	for _, p := range append([]profile.Profile{r.profiles.Default()}, profilesOf(r.profiles)...) {
		if p.Network == profile.NetworkEgress {
			return true
		}
	}
	return false
}

// StartEgress makes the instance's egress network (or, after a restart, finds the one it
// made) and puts the firewall guard on its bridge, so that its sandboxes reach the host
// only at the proxy's address and port; creates of egress profiles need it first. With
// no egress profile (NeedsEgress) it does nothing and returns a zero EgressNetwork. Errors wrap sandbox.ErrUnavailable (engine, firewall) or
// sandbox.ErrConflict (a network of that name that is not this instance's egress network).
func (r *Runtime) StartEgress(ctx context.Context, proxyPort int) (EgressNetwork, error) {
	name := EgressNetworkName(r.instance)
	if !r.NeedsEgress() {
		return EgressNetwork{}, nil
	}
	if proxyPort < 1 || proxyPort > 65535 {
		return EgressNetwork{}, fmt.Errorf("docker: egress: proxy port %d: %w", proxyPort, sandbox.ErrInvalid)
	}
	res, err := r.cli.NetworkInspect(ctx, name, client.NetworkInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		_, err = r.cli.NetworkCreate(ctx, name, client.NetworkCreateOptions{
			Driver:   "bridge",
			Internal: true, // no route out of the network
			Options: map[string]string{
				"com.docker.network.bridge.enable_icc": "false", // sandboxes cannot reach each other
				"com.docker.network.bridge.name":       egressBridge(r.instance),
			},
			Labels: map[string]string{LabelManagedBy: ManagedBy, LabelInstance: r.instance},
		})
		if err != nil && !cerrdefs.IsConflict(err) { // a replica made it meanwhile: fine
			return EgressNetwork{}, fmt.Errorf("docker: egress: create network %s: %w", name, engineError("network create", err))
		}
		res, err = r.cli.NetworkInspect(ctx, name, client.NetworkInspectOptions{})
	}
	if err != nil {
		return EgressNetwork{}, fmt.Errorf("docker: egress: inspect network %s: %w", name, engineError("network inspect", err))
	}
	n, err := r.egressNetwork(res.Network)
	if err != nil {
		return EgressNetwork{}, err
	}
	n.Port = proxyPort
	if err := guardBridge(ctx, n); err != nil {
		return EgressNetwork{}, fmt.Errorf("docker: egress: %w: %w", sandbox.ErrUnavailable, err)
	}
	r.egress.Store(&n)
	return n, nil
}

// egressNetwork checks that inspected is this instance's egress network, as StartEgress
// makes it, and reads its addresses.
func (r *Runtime) egressNetwork(inspected network.Inspect) (EgressNetwork, error) {
	bad := func(why string) (EgressNetwork, error) {
		return EgressNetwork{}, fmt.Errorf("docker: egress: network %s %s: remove it, or use another docker.instance: %w",
			inspected.Name, why, sandbox.ErrConflict)
	}
	switch {
	case inspected.Labels[LabelManagedBy] != ManagedBy || inspected.Labels[LabelInstance] != r.instance:
		return bad("is not this instance's (its labels)")
	case !inspected.Internal:
		return bad("is not internal")
	case inspected.Options["com.docker.network.bridge.enable_icc"] != "false":
		return bad("lets its containers reach each other")
	}
	n := EgressNetwork{Name: inspected.Name, ID: inspected.ID, Bridge: inspected.Options["com.docker.network.bridge.name"]}
	for _, c := range inspected.IPAM.Config {
		if c.Subnet.Addr().Is4() && c.Gateway.IsValid() {
			n.Subnet, n.Gateway = c.Subnet, c.Gateway
			break
		}
	}
	if !n.Gateway.IsValid() || n.Bridge == "" {
		return bad("has no IPv4 gateway or bridge name")
	}
	return n, nil
}

// StopEgress removes the instance's egress network and its guard when no container is on
// it (sandboxes outlive sandboxd; the guard must stay as long as they do). Called at
// shutdown, after the pool is drained, and at start-up when no profile needs egress.
func (r *Runtime) StopEgress(ctx context.Context) error {
	name := EgressNetworkName(r.instance)
	res, err := r.cli.NetworkInspect(ctx, name, client.NetworkInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("docker: egress: inspect network %s: %w", name, engineError("network inspect", err))
	}
	if res.Network.Labels[LabelManagedBy] != ManagedBy || res.Network.Labels[LabelInstance] != r.instance {
		return nil // not ours: never touched
	}
	if len(res.Network.Containers) > 0 {
		return nil
	}
	n := EgressNetwork{Bridge: res.Network.Options["com.docker.network.bridge.name"]}
	if n.Bridge != "" {
		if err := unguardBridge(ctx, n); err != nil {
			return fmt.Errorf("docker: egress: %w", err)
		}
	}
	if _, err := r.cli.NetworkRemove(ctx, res.Network.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		// A sandbox joined meanwhile (another replica): it stays, and so does the guard's
		// purpose; the next start puts the guard back.
		return fmt.Errorf("docker: egress: remove network %s: %w", name, engineError("network remove", err))
	}
	r.egress.Store(nil)
	return nil
}

// SandboxAt tells which sandbox has addr on the egress network: its chat and session
// (from its name, which ContainerName made; a pooled one has none until claimed) and
// its agent. It asks the engine every time, so an address that passed to another
// sandbox is never taken for the one that had it. Errors wrap sandbox.ErrNotFound for an
// address no claimed sandbox of this instance has, sandbox.ErrUnavailable when the
// engine cannot be asked.
func (r *Runtime) SandboxAt(ctx context.Context, addr netip.Addr) (chatID, sessionID uuid.UUID, agentID string, err error) {
	n := r.egress.Load()
	if n == nil {
		return uuid.Nil, uuid.Nil, "", fmt.Errorf("docker: egress: no egress network: %w", sandbox.ErrNotFound)
	}
	res, err := r.cli.NetworkInspect(ctx, n.ID, client.NetworkInspectOptions{})
	if err != nil {
		return uuid.Nil, uuid.Nil, "", fmt.Errorf("docker: egress: %w", engineError("network inspect", err))
	}
	for id, ep := range res.Network.Containers {
		if ep.IPv4Address.Addr() != addr {
			continue
		}
		c, err := r.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if err != nil {
			return uuid.Nil, uuid.Nil, "", fmt.Errorf("docker: egress: %w", engineError("inspect", err))
		}
		labels := c.Container.Config.Labels
		if labels[LabelManagedBy] != ManagedBy || labels[LabelInstance] != r.instance {
			break
		}
		chatID, sessionID, ok := claimedName([]string{c.Container.Name})
		if !ok {
			break // a pooled sandbox no chat has claimed
		}
		agentID = labels[LabelAgentID]
		if pool, pooled := labels[LabelPool]; pooled {
			if agentID = pool; agentID == poolset.DefaultName {
				agentID = ""
			}
		}
		return chatID, sessionID, agentID, nil
	}
	return uuid.Nil, uuid.Nil, "", fmt.Errorf("docker: egress: %s is no sandbox's: %w", addr, sandbox.ErrNotFound)
}

// egressEnv is what a sandbox of an egress profile finds in its environment: the proxy,
// for the tools that read the usual variables.
func egressEnv(n *EgressNetwork) map[string]string {
	u := n.ProxyURL()
	noProxy := "localhost,127.0.0.1,::1"
	return map[string]string{
		"HTTP_PROXY": u, "HTTPS_PROXY": u, "http_proxy": u, "https_proxy": u,
		"NO_PROXY": noProxy, "no_proxy": noProxy,
	}
}

var errNoEgress = errors.New("the egress network is not started (StartEgress)")

// portString is the proxy's port in a firewall rule.
func portString(p int) string { return strconv.Itoa(p) }
