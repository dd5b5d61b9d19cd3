package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hostVethName is the host-side veth name of an attachment: "gv" and 10 hex
// digits of a hash of containerID and ifName. It is deterministic so that
// DEL, GC and a restarted agent find the link without any saved state, and it
// fits IFNAMSIZ (15).
func hostVethName(containerID, ifName string) string {
	h := sha256.Sum256([]byte(containerID + "/" + ifName))
	return "gv" + hex.EncodeToString(h[:5])
}

// podMAC derives a locally administered unicast MAC for an attachment.
func podMAC(containerID, ifName string) net.HardwareAddr {
	h := sha256.Sum256([]byte("mac/" + containerID + "/" + ifName))
	mac := net.HardwareAddr{0x02, h[0], h[1], h[2], h[3], h[4]}
	return mac
}

// podLink describes the pod side of a veth to create.
type podLink struct {
	netns    string
	ifName   string
	hostName string
	mac      net.HardwareAddr
	mtu      int
	addr     *net.IPNet // pod IP with the subnet's prefix length
	gateway  net.IP
	subnet   *net.IPNet
	vpcCIDR  *net.IPNet
	defRoute bool
	// sysctlNet is where net sysctls are written (Config.ProcSysNet).
	sysctlNet string
}

// podLinkResult is what setupPodLink created.
type podLinkResult struct {
	hostIndex int
	hostMAC   net.HardwareAddr
	podIndex  int
	podMAC    net.HardwareAddr
	routes    []*net.IPNet // destinations routed via the gateway
}

// setupPodLink creates the veth pair, configures the pod side in its netns
// and brings the host side up in the agent's namespace. The caller removes the
// host side (which removes both ends) on a later failure.
//
// Addressing: the pod gets its IP with the subnet's prefix length, so the
// kernel adds the connected route and the pod ARPs for its subnet peers and
// the gateway; BPF answers every such request with the virtual gateway MAC,
// so nothing is flooded and every packet goes through the pod program. The
// VPC CIDR (when larger than the subnet) and optionally the default route go
// via the subnet gateway.
func setupPodLink(pl *podLink) (*podLinkResult, error) {
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return nil, fmt.Errorf("opening agent netns: %w", err)
	}
	defer hostNS.Close()
	podNS, err := ns.GetNS(pl.netns)
	if err != nil {
		return nil, fmt.Errorf("opening pod netns %s: %w", pl.netns, err)
	}
	defer podNS.Close()

	res := &podLinkResult{}
	err = podNS.Do(func(ns.NetNS) error {
		if _, err := netlink.LinkByName(pl.ifName); err == nil {
			return fmt.Errorf("interface %q already exists in pod netns", pl.ifName)
		}
		hostIf, podIf, err := ip.SetupVethWithName(pl.ifName, pl.hostName, pl.mtu, pl.mac.String(), hostNS)
		if err != nil {
			return fmt.Errorf("creating veth %s/%s: %w", pl.hostName, pl.ifName, err)
		}
		res.hostIndex, res.hostMAC = hostIf.Index, hostIf.HardwareAddr
		res.podIndex, res.podMAC = podIf.Index, podIf.HardwareAddr
		link, err := netlink.LinkByIndex(podIf.Index)
		if err != nil {
			return fmt.Errorf("finding %s: %w", pl.ifName, err)
		}
		// No IPv6 on a VPC interface (the overlay is IPv4): without this
		// the pod's router and neighbour solicitations and MLD reports,
		// sent as soon as the link is up, are counted as drops by the
		// pod program. In the pod's netns only, before the link is up.
		if err := writeSysctl(netSysctl(pl.sysctlNet, "ipv6/conf", pl.ifName, "disable_ipv6"), "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("disabling ipv6 on %s: %w", pl.ifName, err)
		}
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: pl.addr}); err != nil {
			return fmt.Errorf("adding address %s to %s: %w", pl.addr, pl.ifName, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("setting %s up: %w", pl.ifName, err)
		}
		var dsts []*net.IPNet
		if pl.vpcCIDR != nil && pl.vpcCIDR.String() != pl.subnet.String() {
			dsts = append(dsts, pl.vpcCIDR)
		}
		if pl.defRoute {
			dsts = append(dsts, &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)})
		}
		for _, dst := range dsts {
			r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: pl.gateway, Src: pl.addr.IP}
			err := netlink.RouteAdd(r)
			if errors.Is(err, unix.EEXIST) {
				// A pod in two VPCs with overlapping CIDRs: another
				// interface already routes dst. IPv4 routes are keyed by
				// (dst, metric), not device, so give this one its own metric.
				r.Priority = 100 + link.Attrs().Index
				err = netlink.RouteAdd(r)
			}
			if err != nil {
				return fmt.Errorf("adding route %s via %s: %w", dst, pl.gateway, err)
			}
		}
		res.routes = dsts
		return addSourceRouting(link, pl, dsts)
	})
	if err != nil {
		return nil, err
	}
	// Host side: up (done by SetupVethWithName), no address, no IPv6.
	// (A kernel without IPv6 has no such file: nothing to disable.)
	if err := writeSysctl(netSysctl(pl.sysctlNet, "ipv6/conf", pl.hostName, "disable_ipv6"), "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("disabling ipv6 on %s: %w", pl.hostName, err)
	}
	return res, nil
}

// sourceTableBase is the first routing table (and rule priority) of the
// per-interface tables in pods: table sourceTableBase + the pod-side
// ifindex, below the main table's rule (32766).
const sourceTableBase = 10000

// addSourceRouting gives the pod interface its own routing table (its
// subnet, and dsts via the gateway) and a rule "from <its address> lookup
// <table>". A pod in two VPCs with overlapping CIDRs has two identical
// connected routes (10.50.1.0/24 on eth0 and on eth1) in its main table,
// so without it a reply from eth1's address leaves through eth0, into the
// other VPC. With the address distinct per interface (the agent
// allocates so), the source address picks the interface; this kernel has
// no VRF. A table without a matching route falls through to the main
// table, so a pod with one VPC interface routes as before. The table's
// routes go with the link; the rule stays in the pod's netns until the
// attachment is detached (or, if the netns went first, with the netns).
func addSourceRouting(link netlink.Link, pl *podLink, dsts []*net.IPNet) error {
	idx := link.Attrs().Index
	table := sourceTableBase + idx
	routes := []*netlink.Route{{LinkIndex: idx, Dst: pl.subnet, Src: pl.addr.IP, Scope: netlink.SCOPE_LINK, Table: table}}
	for _, dst := range dsts {
		routes = append(routes, &netlink.Route{LinkIndex: idx, Dst: dst, Gw: pl.gateway, Src: pl.addr.IP, Table: table})
	}
	for _, r := range routes {
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("adding route %s to table %d of %s: %w", r.Dst, table, pl.ifName, err)
		}
	}
	rule := netlink.NewRule()
	rule.Src = &net.IPNet{IP: pl.addr.IP, Mask: net.CIDRMask(32, 32)}
	rule.Table = table
	rule.Priority = table
	if err := netlink.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding rule from %s lookup %d: %w", pl.addr.IP, table, err)
	}
	return nil
}

// removeSourceRule deletes the pod's "from ip" rules of addSourceRouting
// (their tables go with the link). Errors are ignored: the netns may be
// gone, and a leftover rule only points at an empty table.
func removeSourceRule(netnsPath string, ip netip.Addr) {
	_ = ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		rules, err := netlink.RuleList(netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rules {
			if r.Src != nil && r.Table >= sourceTableBase && r.Priority >= sourceTableBase && r.Src.IP.Equal(ip.AsSlice()) {
				if ones, _ := r.Src.Mask.Size(); ones == 32 {
					_ = netlink.RuleDel(&r)
				}
			}
		}
		return nil
	})
}

// deleteHostLink removes the host side of a veth (and so its peer). A
// missing link is not an error.
func deleteHostLink(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("finding %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil
		}
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}

// checkPodLink verifies the pod side: the interface exists in the netns,
// is up and carries addr.
func checkPodLink(netnsPath, ifName string, addr *net.IPNet, mac net.HardwareAddr) error {
	return ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		link, err := netlink.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("interface %q: %w", ifName, err)
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("interface %q is down", ifName)
		}
		if mac != nil && link.Attrs().HardwareAddr.String() != mac.String() {
			return fmt.Errorf("interface %q has MAC %s, want %s", ifName, link.Attrs().HardwareAddr, mac)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("listing addresses of %q: %w", ifName, err)
		}
		for _, a := range addrs {
			if a.IPNet.String() == addr.String() {
				return nil
			}
		}
		return fmt.Errorf("interface %q lacks address %s", ifName, addr)
	})
}

// netSysctl is the path of a net sysctl under root (empty: /proc/sys/net).
func netSysctl(root string, elem ...string) string {
	if root == "" {
		root = "/proc/sys/net"
	}
	return filepath.Join(append([]string{root}, elem...)...)
}

func writeSysctl(path, value string) error {
	return os.WriteFile(path, []byte(value), 0o644)
}

// uplinkInfo reads the uplink's first IPv4 address, MAC, index and MTU.
func uplinkInfo(name string) (ipv4 net.IP, mac net.HardwareAddr, index, mtu int, err error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, nil, 0, 0, fmt.Errorf("finding uplink %q: %w", name, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, nil, 0, 0, fmt.Errorf("listing addresses of uplink %q: %w", name, err)
	}
	for _, a := range addrs {
		if v4 := a.IP.To4(); v4 != nil && a.Scope == int(netlink.SCOPE_UNIVERSE) {
			ipv4 = v4
			break
		}
	}
	if ipv4 == nil {
		return nil, nil, 0, 0, fmt.Errorf("uplink %q has no global IPv4 address", name)
	}
	a := link.Attrs()
	return ipv4, a.HardwareAddr, a.Index, a.MTU, nil
}
