package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NextHop is where the data plane sends encapsulated packets for a remote
// node, as the kernel resolves it: for a status line ("node2: via
// 172.30.0.1 on eth0, neighbour FAILED") where a drop counter cannot say
// which peer is affected.
type NextHop struct {
	// Peer is the remote node's underlay address.
	Peer netip.Addr
	// Gateway is the router the packets go to; invalid when the peer is
	// on-link.
	Gateway netip.Addr
	// Ifindex is the egress device.
	Ifindex int
	// MTU is the path MTU (a PMTU exception or the route's MTU; 0: the
	// device's).
	MTU int
	// Neighbour is the state of the next hop's neighbour entry, e.g.
	// "REACHABLE", "STALE", "FAILED", or "NONE" when there is none yet
	// (the first packet creates it).
	Neighbour string
}

// ErrNoNextHop is returned (wrapped) by LookupNextHop when the node's
// routing table has no usable route to the peer: its packets are dropped
// as NO_NEXTHOP.
var ErrNoNextHop = errors.New("no route to the node on the underlay")

// LookupNextHop resolves the next hop towards peer the way the data plane
// does (output route lookup from the underlay address through the uplink),
// in the caller's network namespace.
func (d *Datapath) LookupNextHop(peer netip.Addr) (NextHop, error) {
	if err := checkIP("peer", peer); err != nil {
		return NextHop{}, fmt.Errorf("lookup next hop: %w", err)
	}
	// No oif: with one the kernel would assume an unrouted peer on-link,
	// where the data plane's FIB lookup finds nothing.
	routes, err := netlink.RouteGetWithOptions(peer.AsSlice(), &netlink.RouteGetOptions{SrcAddr: d.cfg.UnderlayIP.AsSlice()})
	if err != nil || len(routes) == 0 {
		return NextHop{}, fmt.Errorf("lookup next hop to %s: %w (%v)", peer, ErrNoNextHop, err)
	}
	r := routes[0]
	if r.LinkIndex != d.cfg.UplinkIfindex {
		return NextHop{}, fmt.Errorf("lookup next hop to %s: %w (the route leaves through ifindex %d, not the uplink)", peer, ErrNoNextHop, r.LinkIndex)
	}
	nh := NextHop{Peer: peer, Ifindex: r.LinkIndex, MTU: r.MTU, Neighbour: "NONE"}
	target := peer
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && r.Gw != nil {
		nh.Gateway = gw.Unmap()
		target = nh.Gateway
	}
	neighs, err := netlink.NeighList(r.LinkIndex, unix.AF_INET)
	if err != nil {
		return nh, fmt.Errorf("lookup next hop to %s: list neighbours: %w", peer, err)
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == target {
			nh.Neighbour = neighState(n.State)
		}
	}
	return nh, nil
}

func neighState(s int) string {
	for _, c := range []struct {
		bit  int
		name string
	}{
		{netlink.NUD_PERMANENT, "PERMANENT"}, {netlink.NUD_REACHABLE, "REACHABLE"}, {netlink.NUD_STALE, "STALE"},
		{netlink.NUD_DELAY, "DELAY"}, {netlink.NUD_PROBE, "PROBE"}, {netlink.NUD_INCOMPLETE, "INCOMPLETE"},
		{netlink.NUD_FAILED, "FAILED"}, {netlink.NUD_NOARP, "NOARP"},
	} {
		if s&c.bit != 0 {
			return c.name
		}
	}
	return "NONE"
}
