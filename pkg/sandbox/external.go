package sandbox

import (
	"fmt"
	"net/netip"
	"os/exec"

	"github.com/vishvananda/netlink"
)

// ExternalPrefix is the stand-in for the outside world: an "external"
// namespace holds an address of it (198.18.0.0/15 is the benchmarking
// range of RFC 2544). Like the underlay, it exists only inside the
// sandbox's own namespaces.
var ExternalPrefix = netip.MustParsePrefix("198.18.0.0/24")

// externalLinkHost is the external namespace's host number on underlay
// segment 0 (172.30.0.250), below the nodes' .10+i only for >240 nodes.
const externalLinkHost = 250

// External is an external namespace: a host outside every VPC, on the
// underlay's segment 0 at LinkIP, answering on IP (in ExternalPrefix).
// Only the nodes given a route to ExternalPrefix (RouteExternal) reach it,
// so a pod reaches it only through an egress gateway on such a node.
type External struct {
	Netns  string
	IP     netip.Addr
	LinkIP netip.Addr
}

// Endpoint is where sockets of the external host are opened.
func (e *External) Endpoint() Endpoint { return Endpoint{Netns: e.Netns} }

// AddExternal builds the external namespace (one per sandbox, named
// gsb.<name>.external, removed by Down with the others) and routes
// ExternalPrefix to it from the nodes via (the gateways). It routes the
// underlay back through the router on a routed underlay.
func (s *Sandbox) AddExternal(via ...string) (*External, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	path, err := createNetns(nsPrefix(s.st.Name) + "external")
	if err != nil {
		return nil, err
	}
	seg0 := segmentPrefix(0)
	e := &External{Netns: path, IP: nthAddr(ExternalPrefix, 10), LinkIP: nthAddr(seg0, externalLinkHost)}
	fail := func(err error) (*External, error) { return nil, fmt.Errorf("sandbox %q: external: %w", s.st.Name, err) }
	if err := vethBetween(s.st.Fabric, "x0", path, "eth0", 0); err != nil {
		return fail(err)
	}
	if err := setMaster(s.st.Fabric, "x0", "br0"); err != nil {
		return fail(err)
	}
	if err := addAddr(path, "eth0", netip.PrefixFrom(e.LinkIP, seg0.Bits()).String()); err != nil {
		return fail(err)
	}
	if err := addAddr(path, "eth0", netip.PrefixFrom(e.IP, 32).String()); err != nil {
		return fail(err)
	}
	if s.st.Underlay == UnderlayRouted {
		gw := nthAddr(seg0, routerAddr)
		if err := addRouteNetlink(path, "eth0", routedSupernet, gw); err != nil {
			return fail(err)
		}
		if err := addRouteNetlink(s.st.Router, "seg0", ExternalPrefix, e.LinkIP); err != nil {
			return fail(err)
		}
	}
	s.ext = e
	for _, n := range via {
		if err := s.routeExternalLocked(n); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// RouteExternal gives node a route to ExternalPrefix (through the router
// from another segment).
func (s *Sandbox) RouteExternal(node string) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return s.routeExternalLocked(node)
}

func (s *Sandbox) routeExternalLocked(node string) error {
	if s.ext == nil {
		return fmt.Errorf("sandbox %q: no external namespace (AddExternal)", s.st.Name)
	}
	n, err := s.Node(node)
	if err != nil {
		return err
	}
	gw := s.ext.LinkIP
	for i, m := range s.st.Nodes {
		if m == n && s.nodeSegment(i+1) != 0 {
			gw = nthAddr(segmentPrefix(s.nodeSegment(i+1)), routerAddr)
		}
	}
	if err := addRouteNetlink(n.Netns, NodeUplink, ExternalPrefix, gw); err != nil {
		return fmt.Errorf("sandbox %q: node %s: route to the external namespace: %w", s.st.Name, n.Name, err)
	}
	return nil
}

// PodRoute routes dst in pod p out of its interface ifname, on-link: the
// overlay's virtual gateway answers ARP for every address, so the pod needs
// no gateway address (as with its subnet route).
func (s *Sandbox) PodRoute(p *Pod, ifname string, dst netip.Prefix) error {
	return withLink(p.Netns, ifname, func(h *netlink.Handle, l netlink.Link) error {
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixIPNet(dst), Scope: netlink.SCOPE_LINK}
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("pod %s: route %s dev %s: %w", p.Name, dst, ifname, err)
		}
		return nil
	})
}

// SetTxChecksum switches tx checksum offload of link in the namespace at
// path on or off (ethtool -K tx), e.g. to make a NAT checksum bug visible:
// veths otherwise leave checksums to be filled in later.
func SetTxChecksum(path, link string, on bool) error {
	v := "off"
	if on {
		v = "on"
	}
	out, err := exec.Command("nsenter", "--net="+path, "ethtool", "-K", link, "tx", v).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ethtool -K %s tx %s in %s: %v: %s", link, v, path, err, out)
	}
	return nil
}

func addRouteNetlink(path, link string, dst netip.Prefix, gw netip.Addr) error {
	return withLink(path, link, func(h *netlink.Handle, l netlink.Link) error {
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixIPNet(dst), Gw: gw.AsSlice()}
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("route %s via %s: %w", dst, gw, err)
		}
		return nil
	})
}
