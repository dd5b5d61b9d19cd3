package sandbox

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Underlay topologies of Options.Underlay.
const (
	// UnderlayFlat puts every node on one L2 segment (bridge br0 in the
	// fabric namespace, UnderlayPrefix).
	UnderlayFlat = "flat"
	// UnderlayRouted spreads the nodes over RoutedSegments L2 segments
	// (bridges br0, br1, ... in the fabric namespace; node i on segment
	// (i-1) mod RoutedSegments), joined by a router namespace with
	// ip_forward. Nodes on one segment reach each other directly, the
	// others through the router, so one 3-node sandbox has both kinds of
	// pairs: node1-node3 on-link, node1-node2 and node2-node3 routed.
	UnderlayRouted = "routed"
)

// RoutedSegments is the number of L2 segments of a routed underlay.
const RoutedSegments = 2

// routerAddr is the router's host number on every segment.
const routerAddr = 1

// segmentPrefix returns the underlay prefix of segment seg (0-based):
// 172.30.<seg>.0/24. Segment 0 is the flat underlay's UnderlayPrefix.
func segmentPrefix(seg int) netip.Prefix {
	a := UnderlayPrefix.Addr().As4()
	a[2] += byte(seg)
	return netip.PrefixFrom(netip.AddrFrom4(a), UnderlayPrefix.Bits())
}

// routedSupernet covers every segment (the nodes' route to the router).
var routedSupernet = netip.MustParsePrefix("172.30.0.0/16")

func validateUnderlay(u string) error {
	switch u {
	case UnderlayFlat, UnderlayRouted:
		return nil
	}
	return fmt.Errorf("underlay %q: want %q or %q", u, UnderlayFlat, UnderlayRouted)
}

// nodeSegment is the segment of node i (1-based).
func (s *Sandbox) nodeSegment(i int) int {
	if s.st.Underlay != UnderlayRouted {
		return 0
	}
	return (i - 1) % RoutedSegments
}

// buildRouter creates the router namespace of a routed underlay: one veth
// per segment into the fabric's bridge brN (port rN), addressed .1 of the
// segment, and ip_forward on.
func (s *Sandbox) buildRouter() error {
	path, err := createNetns(nsPrefix(s.st.Name) + "router")
	if err != nil {
		return err
	}
	s.st.Router = path
	if err := SetSysctl(path, "net/ipv4/ip_forward", "1"); err != nil {
		return fmt.Errorf("sandbox %q: router: %w", s.st.Name, err)
	}
	for seg := range RoutedSegments {
		if seg > 0 {
			if err := addBridge(s.st.Fabric, fmt.Sprintf("br%d", seg)); err != nil {
				return fmt.Errorf("sandbox %q: fabric: %w", s.st.Name, err)
			}
		}
		port, ifc := fmt.Sprintf("r%d", seg), fmt.Sprintf("seg%d", seg)
		if err := vethBetween(s.st.Fabric, port, path, ifc, 0); err != nil {
			return fmt.Errorf("sandbox %q: router: %w", s.st.Name, err)
		}
		if err := setMaster(s.st.Fabric, port, fmt.Sprintf("br%d", seg)); err != nil {
			return fmt.Errorf("sandbox %q: router: %w", s.st.Name, err)
		}
		p := segmentPrefix(seg)
		if err := addAddr(path, ifc, netip.PrefixFrom(nthAddr(p, routerAddr), p.Bits()).String()); err != nil {
			return fmt.Errorf("sandbox %q: router: %w", s.st.Name, err)
		}
	}
	return nil
}

// routeViaRouter gives a node of a routed underlay its route to the other
// segments.
func (s *Sandbox) routeViaRouter(n *Node, seg int) error {
	gw := nthAddr(segmentPrefix(seg), routerAddr)
	return withLink(n.Netns, NodeUplink, func(h *netlink.Handle, l netlink.Link) error {
		dst := routedSupernet
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixIPNet(dst), Gw: gw.AsSlice()}
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("node %s: route %s via %s: %w", n.Name, dst, gw, err)
		}
		return nil
	})
}

// SetRouterMTU sets the MTU the router forwards with into segment seg
// (0-based) of a routed underlay, as if the link beyond the router were
// that narrow: packets bigger than mtu with DF set are answered with ICMP
// "fragmentation needed", as a real router does. It is the route MTU of the
// segment's connected route (the interfaces keep their MTU, so the L2
// segment stays consistent); mtu 0 restores the interface MTU.
func (s *Sandbox) SetRouterMTU(seg, mtu int) error {
	if s.st.Underlay != UnderlayRouted || s.st.Router == "" {
		return fmt.Errorf("sandbox %q: router mtu: the underlay is not routed", s.st.Name)
	}
	if seg < 0 || seg >= RoutedSegments {
		return fmt.Errorf("sandbox %q: router mtu: segment %d: want 0 to %d", s.st.Name, seg, RoutedSegments-1)
	}
	p := segmentPrefix(seg)
	ifc := fmt.Sprintf("seg%d", seg)
	return withLink(s.st.Router, ifc, func(h *netlink.Handle, l netlink.Link) error {
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixIPNet(p), Src: nthAddr(p, routerAddr).AsSlice(),
			Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_KERNEL, MTU: mtu}
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("sandbox %q: router: route %s mtu %d: %w", s.st.Name, p, mtu, err)
		}
		return nil
	})
}

// Underlay returns the sandbox's underlay topology (UnderlayFlat or
// UnderlayRouted).
func (s *Sandbox) Underlay() string {
	if s.st.Underlay == "" {
		return UnderlayFlat
	}
	return s.st.Underlay
}

// RouterNetns returns the path of the router namespace ("" when flat).
func (s *Sandbox) RouterNetns() string { return s.st.Router }

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
