package agent

// The overlay as a pod's default network (#9 part 4). An attachment that
// is its pod's default network, in a VPC with DefaultNetwork set, is the
// node's way to the pod and the pod's way out (at.NodeNet):
//
//   - the pod gets the default route via its subnet gateway;
//   - the node reaches the pod (kubelet probes, hostNetwork clients): a host
//     route "<pod ip>/32 dev <host veth> scope link src <underlay ip>" and a
//     permanent neighbour entry with the pod's MAC, so the node neither
//     ARPs nor needs an address on the veth; its packets enter the pod as
//     from any router, and the source is the node's underlay address;
//   - the pod reaches its node: its packets to the node's underlay address
//     (and, without an egress gateway selecting it, to any address the
//     node's FIB does not forward) go to the host stack (bpf/lib/egress.h,
//     egress_to_host), and the host route above takes the replies back;
//   - it leaves the VPC through its own node, SNATed to the underlay address,
//     unless an egress gateway of the VPC selects it (the egress plan routes
//     0.0.0.0/0 for such VPCs; egress_node_out).
//
// Overlapping VPCs: the node has one routing table, so it can reach only one
// pod per address. A NodeNet attachment's allocated address that a NodeNet
// attachment of another VPC already holds on this node is traded for the
// lowest free address of the node's blocks of the subnet that none holds
// (avoidNodeRoutes; IPAM's lowest-free order would hand every retry the same
// one). A requested address that clashes, or no free one, is refused
// (invalid network configuration, naming the holder): Kubernetes needs a
// pod's default-network address to be unique anyway (probes, Services,
// the pod's status.podIP). VPCs meant to be default networks should not
// overlap; an attachment that is not a pod's default network, or of a VPC
// without DefaultNetwork, gets none of this and may overlap freely.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cni-genie/cni-genie/pkg/ipam"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// errNodeRouteTaken is the clash of two NodeNet attachments' addresses.
var errNodeRouteTaken = errors.New("address already routed by the node to another pod")

// takeAddress records ip as at's address. A NodeNet attachment's address
// must be free among the node's NodeNet attachments of other VPCs (see
// the top of the file); checked and recorded under a.mu, so two
// concurrent ADDs cannot both take it.
func (a *Agent) takeAddress(at *attachment, ip netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if at.NodeNet {
		for _, o := range a.atts {
			if o != at && o.NodeNet && o.IP == ip {
				return fail(types.ErrInvalidNetworkConfig, "node route", fmt.Errorf(
					"%w: %s of vpc %q is %s (interface %s); pods whose default network is a VPC need addresses unique on their node (the node reaches them by address), so default-network VPCs should not overlap",
					errNodeRouteTaken, ip, o.VPC, podRef(o.PodNamespace, o.PodName, o.ContainerID), o.IfName))
			}
		}
	}
	at.IP = ip
	return nil
}

// nodeRoutedAddrs returns the addresses of the node's NodeNet attachments
// of VPCs other than vpcName.
func (a *Agent) nodeRoutedAddrs(vpcName string) map[netip.Addr]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[netip.Addr]bool{}
	for _, o := range a.atts {
		if o.NodeNet && o.VPC != vpcName && o.IP.IsValid() {
			out[o.IP] = true
		}
	}
	return out
}

// avoidNodeRoutes trades NodeNet attachment at's fresh allocation alloc
// (not a requested address) for the lowest free address of the node's
// blocks of subnet sub that no NodeNet attachment of another VPC holds,
// if alloc's is held. It returns alloc unchanged when there is no clash or
// no such address (takeAddress then refuses).
func (a *Agent) avoidNodeRoutes(ctx context.Context, at *attachment, sub vpc.Subnet, alloc ipam.Allocation) (ipam.Allocation, error) {
	taken := a.nodeRoutedAddrs(at.VPC)
	if !taken[alloc.IP.Addr()] {
		return alloc, nil
	}
	used := map[netip.Addr]bool{}
	for _, al := range a.ipam.Allocations() {
		if al.VPC == at.VPC {
			used[al.IP.Addr()] = true
		}
	}
	for _, b := range a.ipam.Blocks() {
		if b.VPC != at.VPC || b.Subnet != at.Subnet {
			continue
		}
		for ip := b.CIDR.Masked().Addr(); b.CIDR.Contains(ip); ip = ip.Next() {
			if !sub.Assignable(ip) || taken[ip] || used[ip] {
				continue
			}
			if err := a.ipam.Release(ctx, at.owner()); err != nil {
				return alloc, err
			}
			return a.ipam.AllocateForPod(ctx, at.VPC, at.Subnet, at.ContainerID, at.owner(), ip)
		}
	}
	return alloc, nil
}

// addNodeRoute installs the node's route to NodeNet attachment at: a host
// route to its address through its host veth, from the node's underlay
// address, and a permanent neighbour entry with its MAC. Both go with the
// veth. Idempotent.
func (a *Agent) addNodeRoute(at *attachment) error {
	if !at.NodeNet {
		return nil
	}
	l, err := netlink.LinkByName(at.HostIf)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", at.HostIf, err)
	}
	ip := net.IP(at.IP.AsSlice())
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}
	if src := a.node.UnderlayIP; src.Is4() {
		r.Src = net.IP(src.AsSlice())
	}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s dev %s: %w", at.IP, at.HostIf, err)
	}
	n := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: ip, HardwareAddr: at.hwAddr()}
	if err := netlink.NeighSet(n); err != nil {
		return fmt.Errorf("neighbour %s lladdr %s dev %s: %w", at.IP, at.MAC, at.HostIf, err)
	}
	return nil
}
