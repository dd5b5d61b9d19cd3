package genie

import (
	"fmt"
	"net"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/vishvananda/netlink"
)

// mergeResults concatenates the per-network results in attach order:
// interfaces are appended, each IP's interface index is shifted by the
// number of interfaces before it, routes are appended and DNS entries merged
// without duplicates (the first non-empty domain wins).
func mergeResults(results []*current.Result) *current.Result {
	out := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	for _, r := range results {
		off := len(out.Interfaces)
		for _, iface := range r.Interfaces {
			c := *iface
			out.Interfaces = append(out.Interfaces, &c)
		}
		for _, ip := range r.IPs {
			c := *ip
			if ip.Interface != nil {
				idx := *ip.Interface + off
				c.Interface = &idx
			}
			out.IPs = append(out.IPs, &c)
		}
		for _, rt := range r.Routes {
			out.Routes = append(out.Routes, rt.Copy())
		}
		if out.DNS.Domain == "" {
			out.DNS.Domain = r.DNS.Domain
		}
		out.DNS.Nameservers = appendUnique(out.DNS.Nameservers, r.DNS.Nameservers...)
		out.DNS.Search = appendUnique(out.DNS.Search, r.DNS.Search...)
		out.DNS.Options = appendUnique(out.DNS.Options, r.DNS.Options...)
	}
	return out
}

func appendUnique(dst []string, src ...string) []string {
	for _, s := range src {
		if !slices.Contains(dst, s) {
			dst = append(dst, s)
		}
	}
	return dst
}

// podInterface finds ifName among r's interfaces, preferring one inside the
// sandbox; -1 if absent.
func podInterface(r *current.Result, ifName string) int {
	found := -1
	for i, iface := range r.Interfaces {
		if iface.Name == ifName {
			if iface.Sandbox != "" {
				return i
			}
			if found < 0 {
				found = i
			}
		}
	}
	return found
}

// networkStatus builds the NPWG status entry of one attachment.
func networkStatus(label, ifName string, r *current.Result, isDefault bool) nadv1.NetworkStatus {
	st := nadv1.NetworkStatus{Name: label, Interface: ifName, Default: isDefault}
	idx := podInterface(r, ifName)
	if idx >= 0 {
		st.Mac = r.Interfaces[idx].Mac
		st.Mtu = r.Interfaces[idx].Mtu
	}
	for _, ip := range r.IPs {
		if ip.Interface != nil && *ip.Interface != idx {
			continue
		}
		st.IPs = append(st.IPs, ip.Address.IP.String())
		if isDefault && ip.Gateway != nil {
			st.Gateway = append(st.Gateway, ip.Gateway.String())
		}
	}
	st.DNS = nadv1.DNS{Nameservers: r.DNS.Nameservers, Domain: r.DNS.Domain, Search: r.DNS.Search, Options: r.DNS.Options}
	return st
}

// isDefaultRoute reports whether rt is a default route of gw's family.
func isDefaultRoute(rt *types.Route, gw net.IP) bool {
	ones, bits := rt.Dst.Mask.Size()
	return ones == 0 && (rt.Dst.IP.To4() != nil) == (gw.To4() != nil) && bits > 0
}

// applyDefaultRoute moves the pod's default route (per family of each
// gateway) to ifName via gw (NPWG default-route), in the pod's netns and in
// the per-network results.
func applyDefaultRoute(netnsPath, ifName string, gws []net.IP, results []*current.Result, owner int) error {
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		link, err := netlink.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("finding %s: %w", ifName, err)
		}
		for _, gw := range gws {
			family := netlink.FAMILY_V6
			if gw.To4() != nil {
				family = netlink.FAMILY_V4
			}
			routes, err := netlink.RouteList(nil, family)
			if err != nil {
				return fmt.Errorf("listing routes: %w", err)
			}
			for _, rt := range routes {
				if rt.Dst == nil || rt.Dst.IP.IsUnspecified() && onesOf(rt.Dst) == 0 {
					r := rt
					if err := netlink.RouteDel(&r); err != nil {
						return fmt.Errorf("deleting default route via %v: %w", rt.Gw, err)
					}
				}
			}
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
				return fmt.Errorf("adding default route via %s dev %s: %w", gw, ifName, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, gw := range gws {
		for _, r := range results {
			r.Routes = slices.DeleteFunc(r.Routes, func(rt *types.Route) bool { return isDefaultRoute(rt, gw) })
		}
		bits := 128
		if gw.To4() != nil {
			bits = 32
		}
		results[owner].Routes = append(results[owner].Routes,
			&types.Route{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, bits)}, GW: gw})
		if bits == 32 {
			last := results[owner].Routes[len(results[owner].Routes)-1]
			last.Dst.IP = net.IPv4zero.To4()
		}
	}
	return nil
}

func onesOf(n *net.IPNet) int {
	ones, _ := n.Mask.Size()
	return ones
}
