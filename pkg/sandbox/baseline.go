package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Baselines: the paths the overlay is measured against, built on the same
// nodes of the same sandbox so that one run compares like with like.

// BridgePod attaches a pod on node with the reference bridge plugin and
// host-local IPAM (subnet e.g. "10.99.0.0/24"), as a typical single-node
// CNI setup would: the same-node baseline.
func (s *Sandbox) BridgePod(ctx context.Context, name, node, subnet string) (*Pod, error) {
	conf, err := json.Marshal(map[string]any{
		"cniVersion": CNIVersion,
		"name":       "baseline-bridge",
		"plugins": []map[string]any{{
			"type":      "bridge",
			"bridge":    "cni-br0",
			"isGateway": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": subnet}}},
				"dataDir": filepath.Join(s.dir, "host-local"),
			},
		}},
	})
	if err != nil {
		return nil, err
	}
	return s.PodAddConf(ctx, name, node, conf, nil)
}

// FlannelMTU is the pod MTU of the flannel-style baseline: the underlay's
// 1500 minus VXLAN's 50 bytes.
const FlannelMTU = 1450

// FlannelPair builds a flannel-style overlay by hand between two nodes and
// puts one pod on each: pod veth -> linux bridge -> routed to a kernel
// vxlan device (VNI 1, UDP 8472, no learning, static FDB and neighbour
// entries, as flannel's vxlan backend programs them). Pod i gets
// 10.244.<i>.2 on node i's 10.244.<i>.0/24. It returns the two pods.
func (s *Sandbox) FlannelPair(nodeA, nodeB, podA, podB string) (*Pod, *Pod, error) {
	type side struct {
		node *Node
		pod  *Pod
		idx  int
		mac  net.HardwareAddr
	}
	var sides [2]*side
	for i, ref := range []struct{ node, pod string }{{nodeA, podA}, {nodeB, podB}} {
		n, err := s.Node(ref.node)
		if err != nil {
			return nil, nil, err
		}
		p, err := s.PodAddBare(ref.pod, n.Name)
		if err != nil {
			return nil, nil, err
		}
		sd := &side{node: n, pod: p, idx: i + 1}
		if err := s.flannelNode(sd.node, sd.idx); err != nil {
			return nil, nil, fmt.Errorf("flannel baseline on %s: %w", n.Name, err)
		}
		if sd.mac, err = linkMAC(n.Netns, "fl-vx"); err != nil {
			return nil, nil, err
		}
		hostIf := "fl-" + ref.pod
		if len(hostIf) > 15 {
			hostIf = hostIf[:15]
		}
		if err := vethBetween(p.Netns, "eth0", n.Netns, hostIf, FlannelMTU); err != nil {
			return nil, nil, fmt.Errorf("flannel baseline pod %s: %w", p.Name, err)
		}
		if err := setMaster(n.Netns, hostIf, "fl-br"); err != nil {
			return nil, nil, err
		}
		ip := netip.MustParsePrefix(fmt.Sprintf("10.244.%d.2/24", sd.idx))
		if err := addAddr(p.Netns, "eth0", ip.String()); err != nil {
			return nil, nil, err
		}
		if err := addRoute(p.Netns, "eth0", "0.0.0.0/0", fmt.Sprintf("10.244.%d.1", sd.idx), false); err != nil {
			return nil, nil, err
		}
		mac, _ := linkMAC(p.Netns, "eth0")
		p.Interfaces = []*PodInterface{{Name: "eth0", MAC: mac.String(), Network: "flannel-style", IPs: []netip.Prefix{ip}}}
		sides[i] = sd
	}
	for i, me := range sides {
		peer := sides[1-i]
		h, nh, err := nsHandle(me.node.Netns)
		if err != nil {
			return nil, nil, err
		}
		err = func() error {
			defer h.Close()
			defer nh.Close()
			vx, err := h.LinkByName("fl-vx")
			if err != nil {
				return err
			}
			gw := net.ParseIP(fmt.Sprintf("10.244.%d.0", peer.idx)).To4()
			_, dst, _ := net.ParseCIDR(fmt.Sprintf("10.244.%d.0/24", peer.idx))
			if err := h.RouteAdd(&netlink.Route{LinkIndex: vx.Attrs().Index, Dst: dst, Gw: gw, Flags: int(netlink.FLAG_ONLINK)}); err != nil {
				return fmt.Errorf("route to %s: %w", dst, err)
			}
			if err := h.NeighAdd(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: netlink.FAMILY_V4,
				State: netlink.NUD_PERMANENT, IP: gw, HardwareAddr: peer.mac}); err != nil {
				return fmt.Errorf("neighbour %s: %w", gw, err)
			}
			if err := h.NeighAppend(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE,
				State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, IP: peer.node.UnderlayIP.AsSlice(),
				HardwareAddr: peer.mac}); err != nil {
				return fmt.Errorf("fdb %s: %w", peer.mac, err)
			}
			return nil
		}()
		if err != nil {
			return nil, nil, fmt.Errorf("flannel baseline on %s: %w", me.node.Name, err)
		}
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	for _, sd := range sides {
		s.st.Pods[sd.pod.Name].Interfaces = sd.pod.Interfaces
	}
	if err := s.save(); err != nil {
		return nil, nil, err
	}
	return sides[0].pod, sides[1].pod, nil
}

// flannelNode creates the node half: bridge fl-br with the pod gateway
// 10.244.<idx>.1/24, vxlan fl-vx with 10.244.<idx>.0/32, forwarding on.
func (s *Sandbox) flannelNode(n *Node, idx int) error {
	if err := addBridge(n.Netns, "fl-br"); err != nil {
		return err
	}
	if err := addAddr(n.Netns, "fl-br", fmt.Sprintf("10.244.%d.1/24", idx)); err != nil {
		return err
	}
	h, nh, err := nsHandle(n.Netns)
	if err != nil {
		return err
	}
	defer h.Close()
	defer nh.Close()
	up, err := h.LinkByName(NodeUplink)
	if err != nil {
		return err
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "fl-vx"
	attrs.MTU = FlannelMTU
	vx := &netlink.Vxlan{LinkAttrs: attrs, VxlanId: 1, VtepDevIndex: up.Attrs().Index,
		SrcAddr: n.UnderlayIP.AsSlice(), Port: 8472, Learning: false}
	if err := h.LinkAdd(vx); err != nil {
		return fmt.Errorf("add vxlan: %w", err)
	}
	if err := h.LinkSetUp(vx); err != nil {
		return err
	}
	if err := addAddr(n.Netns, "fl-vx", fmt.Sprintf("10.244.%d.0/32", idx)); err != nil {
		return err
	}
	return SetSysctl(n.Netns, "net/ipv4/ip_forward", "1")
}

// addRoute adds a route (dst CIDR via gw, or a device route if gw is "")
// on link in the namespace at path.
func addRoute(path, link, dst, gw string, onlink bool) error {
	h, nh, err := nsHandle(path)
	if err != nil {
		return err
	}
	defer h.Close()
	defer nh.Close()
	l, err := h.LinkByName(link)
	if err != nil {
		return fmt.Errorf("link %q: %w", link, err)
	}
	_, d, err := net.ParseCIDR(dst)
	if err != nil {
		return fmt.Errorf("route %s: %w", dst, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: d}
	if gw != "" {
		r.Gw = net.ParseIP(gw)
	}
	if onlink {
		r.Flags = int(netlink.FLAG_ONLINK)
	}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("route %s via %s dev %s: %w", dst, gw, link, err)
	}
	return nil
}
