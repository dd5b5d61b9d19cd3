package sandbox

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// SourceRoutes gives each delegate (non-VPC) interface of a multihomed
// pod its own routing table (100 + index) and a rule "from <its IP>
// lookup <table>", as an application in such a pod would set it. VPC
// interfaces need nothing here: the agent gives each of them a distinct
// address and its own per-source table itself (see package agent), so a
// pod in two VPCs with overlapping CIDRs answers each VPC through its own
// interface without this call.
func (s *Sandbox) SourceRoutes(pod string) error {
	p, err := s.Pod(pod)
	if err != nil {
		return err
	}
	h, nh, err := nsHandle(p.Netns)
	if err != nil {
		return err
	}
	defer h.Close()
	defer nh.Close()
	for i, ifc := range p.Interfaces {
		if ifc.VPC != "" {
			continue // the agent routes VPC interfaces by source
		}
		l, err := h.LinkByName(ifc.Name)
		if err != nil {
			return fmt.Errorf("pod %s: %w", pod, err)
		}
		table := 100 + i
		routes, err := h.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("pod %s: routes of %s: %w", pod, ifc.Name, err)
		}
		for _, r := range routes {
			r.Table = table
			if err := h.RouteReplace(&r); err != nil {
				return fmt.Errorf("pod %s: route %s in table %d: %w", pod, r.Dst, table, err)
			}
		}
		for _, a := range ifc.IPs {
			rule := netlink.NewRule()
			rule.Src = &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}
			rule.Table = table
			rule.Priority = table
			if err := h.RuleAdd(rule); err != nil {
				return fmt.Errorf("pod %s: rule from %s: %w", pod, a.Addr(), err)
			}
		}
	}
	return nil
}
