package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
)

// vethHopFloor builds the "one veth hop" floor for cross-node paths: a pod
// namespace on node `from` attached by a plain routed veth (no BPF, no
// encapsulation, kernel forwarding on the node), talking to node `to`'s own
// underlay address. Compared with the underlay it adds exactly what any
// veth-attached pod pays: one veth hop (a trip through the CPU's backlog
// queue) per direction, plus an IP forward on `from`. The overlay takes the
// same hop on the sending side (the host-side veth's ingress, where from_pod
// runs) and none on the receiving side (redirect_peer), so overlay / floor
// isolates what our programs and the encapsulation cost, and floor /
// underlay is the part of the overlay's gap that no veth-based data plane
// can close.
//
// The namespace is named like the sandbox's pods (gsb.<sandbox>.pod.<pod>)
// so that Down also removes it after a crash; the returned cleanup removes
// it and the routes now.
func vethHopFloor(sb *sandbox.Sandbox, from, to *sandbox.Node, pod string, podIP netip.Addr) (string, func() error, error) {
	fromNs, err := sb.Netns(from.Name)
	if err != nil {
		return "", nil, err
	}
	toNs, err := sb.Netns(to.Name)
	if err != nil {
		return "", nil, err
	}
	nsName := fmt.Sprintf("gsb.%s.pod.%s", sb.Name(), pod)
	fromName, toName := filepath.Base(fromNs), filepath.Base(toNs)
	host := "vh" + pod // host-side veth name in the node
	if len(host) > 15 {
		host = host[:15]
	}
	const gw = "169.254.1.1" // the node side of the veth, as seen from the pod
	podCIDR := netip.PrefixFrom(podIP, 24).Masked()
	cleanup := func() error {
		return errors.Join(
			ipCmd("-n", toName, "route", "del", podCIDR.String(), "via", from.UnderlayIP.String()),
			ipCmd("netns", "del", nsName))
	}
	steps := [][]string{
		{"netns", "add", nsName},
		{"-n", fromName, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", nsName},
		{"-n", nsName, "link", "set", "lo", "up"},
		{"-n", nsName, "addr", "add", podIP.String() + "/32", "dev", "eth0"},
		{"-n", nsName, "link", "set", "eth0", "up"},
		{"-n", nsName, "route", "add", gw, "dev", "eth0"},
		{"-n", nsName, "route", "add", "default", "via", gw, "dev", "eth0"},
		{"-n", fromName, "addr", "add", gw + "/32", "dev", host},
		{"-n", fromName, "link", "set", host, "up"},
		{"-n", fromName, "route", "add", podIP.String() + "/32", "dev", host},
		{"-n", toName, "route", "add", podCIDR.String(), "via", from.UnderlayIP.String()},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			cleanup()
			return "", nil, fmt.Errorf("veth-hop floor pod %s on %s: %w", pod, from.Name, err)
		}
	}
	// Forwarding on the sending node (the receiving node delivers locally).
	out, err := exec.Command("nsenter", "--net="+fromNs, "--", "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput()
	if err != nil {
		cleanup()
		return "", nil, fmt.Errorf("veth-hop floor: ip_forward on %s: %v: %s", from.Name, err, strings.TrimSpace(string(out)))
	}
	return "/run/netns/" + nsName, cleanup, nil
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
