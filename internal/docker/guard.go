package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// The firewall guard of the egress bridge. An internal Docker network has no route out,
// and with inter-container communication off its containers cannot reach each other; but
// the host's own addresses are still theirs to reach (its gateway address and every other
// one, through the default route the engine gives them): any service of the host that
// listens on all addresses (sandboxd's API on 0.0.0.0, the engine's TCP socket, sshd)
// would be open to every sandbox. The guard is a chain of the host's INPUT, for packets
// that come in on the bridge: TCP to the proxy's address and port is accepted, everything
// else dropped (IPv6 all dropped). It is put in place before any sandbox joins, kept as
// long as the network has containers, and removed with the network.

// guardChain is the chain of the guard of bridge.
func guardChain(bridge string) string { return "SANDBOXD-" + bridge }

// guardBridge puts (or puts back, after a restart) the guard of n's bridge in place.
func guardBridge(ctx context.Context, n EgressNetwork) error {
	chain := guardChain(n.Bridge)
	v4 := [][]string{
		{"-A", chain, "-p", "tcp", "-d", n.Gateway.String(), "--dport", portString(n.Port), "-j", "ACCEPT"},
		{"-A", chain, "-j", "DROP"},
	}
	if err := guard(ctx, "iptables", n.Bridge, chain, v4); err != nil {
		return err
	}
	if _, err := exec.LookPath("ip6tables"); err != nil {
		return nil // no IPv6 firewall: the network has no IPv6 (it is made without)
	}
	return guard(ctx, "ip6tables", n.Bridge, chain, [][]string{{"-A", chain, "-j", "DROP"}})
}

func guard(ctx context.Context, tool, bridge, chain string, rules [][]string) error {
	if _, err := ipt(ctx, tool, "-F", chain); err != nil { // a chain left by a previous run is refilled
		if _, err := ipt(ctx, tool, "-N", chain); err != nil {
			return err
		}
	}
	for _, r := range rules {
		if _, err := ipt(ctx, tool, r...); err != nil {
			return err
		}
	}
	jump := []string{"INPUT", "-i", bridge, "-j", chain}
	if _, err := ipt(ctx, tool, append([]string{"-C"}, jump...)...); err != nil {
		if _, err := ipt(ctx, tool, append([]string{"-I", "INPUT", "1"}, jump[1:]...)...); err != nil {
			return err
		}
	}
	return nil
}

// unguardBridge removes the guard of n's bridge (what is already gone is no error).
func unguardBridge(ctx context.Context, n EgressNetwork) error {
	chain := guardChain(n.Bridge)
	var errs []error
	for _, tool := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(tool); err != nil {
			continue
		}
		for range 10 { // every jump, should there be several
			if _, err := ipt(ctx, tool, "-D", "INPUT", "-i", n.Bridge, "-j", chain); err != nil {
				break
			}
		}
		if _, err := ipt(ctx, tool, "-F", chain); err == nil {
			if _, err := ipt(ctx, tool, "-X", chain); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// GuardInPlace reports whether the guard of the instance's bridge is in place: its chain
// jumped to from INPUT (for tests and checks).
func GuardInPlace(ctx context.Context, instance string) bool {
	bridge := egressBridge(instance)
	_, err := ipt(ctx, "iptables", "-C", "INPUT", "-i", bridge, "-j", guardChain(bridge))
	return err == nil
}

// Unguard removes the guard of the instance's bridge (for tests that clean up after a
// failure; StopEgress removes it with the network).
func Unguard(ctx context.Context, instance string) error {
	return unguardBridge(ctx, EgressNetwork{Bridge: egressBridge(instance)})
}

func ipt(ctx context.Context, tool string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, append([]string{"-w", "5"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}
