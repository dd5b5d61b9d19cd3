package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// The egress gateway's maps (bpf/lib/maps_egress.h, bpf/lib/egress.h).
// Package egress/egressagent decides their contents; this file only
// validates and writes them.

// RouteKind says what a VPC route does with a destination that is no
// endpoint of the VPC.
type RouteKind uint8

// Route kinds (VPC_ROUTE_* in bpf/lib/maps_egress.h).
const (
	// RouteInternal marks the VPC's own CIDR: never egress (the packet
	// goes on to the NO_ROUTE drop, or to a later hook of the miss path).
	RouteInternal RouteKind = 1
	// RouteEgress sends the destination to a policy's gateways.
	RouteEgress RouteKind = 2
)

// String returns "internal" or "egress".
func (k RouteKind) String() string {
	switch k {
	case RouteInternal:
		return "internal"
	case RouteEgress:
		return "egress"
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

// EgressPortMin and EgressPortMax bound the SNAT ports of egress flows on
// the node's own underlay address (EGRESS_PORT_* in bpf/lib/egress.h):
// above Linux's default ephemeral range (32768-60999), so the node's own
// connections never collide with them. A dedicated egress address (one
// that is not the node's underlay address: the node has no sockets on it)
// uses EgressPortFloor-EgressPortMax, 14 times as many.
const (
	EgressPortMin   = 61000
	EgressPortMax   = 65535
	EgressPortFloor = 1024
)

// MaxEgressGateways is the number of gateways (active plus draining) one
// policy may have in the data plane (EGRESS_MAX_GW).
const MaxEgressGateways = 8

// VPCRoute is one entry of the VPC route table: for destinations in
// Prefix sent from VPC VNI and matching no endpoint, either internal, or
// egress through policy Policy; Route, if non-zero, names the per-pod
// selections (UpsertEgressSelection) that override Policy.
type VPCRoute struct {
	VNI    uint32
	Prefix netip.Prefix
	Kind   RouteKind
	Policy uint32
	Route  uint32
}

func (r VPCRoute) String() string {
	return fmt.Sprintf("vni %d %s %s policy %d route %d", r.VNI, r.Prefix, r.Kind, r.Policy, r.Route)
}

func routeKey(vni uint32, p netip.Prefix) (lxcVpcRouteKey, error) {
	if err := checkVNI(vni); err != nil {
		return lxcVpcRouteKey{}, err
	}
	if !p.IsValid() || !p.Addr().Is4() {
		return lxcVpcRouteKey{}, fmt.Errorf("prefix %q is not ipv4", p)
	}
	p = p.Masked()
	return lxcVpcRouteKey{Prefixlen: 32 + uint32(p.Bits()), Vni: vni, Addr: ip4(p.Addr())}, nil
}

// UpsertVPCRoute installs or replaces route r.
func (d *Datapath) UpsertVPCRoute(r VPCRoute) error {
	k, err := routeKey(r.VNI, r.Prefix)
	if err == nil && r.Kind != RouteInternal && r.Kind != RouteEgress {
		err = fmt.Errorf("kind %d", r.Kind)
	}
	if err != nil {
		return fmt.Errorf("upsert vpc route %s: %w", r, err)
	}
	v := lxcVpcRoute{Kind: uint8(r.Kind), Policy: r.Policy, Route: r.Route}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.lxc.GenieVpcRoutes.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("upsert vpc route %s: %w", r, mapErr(d.lxc.GenieVpcRoutes, "update", err))
	}
	return nil
}

// DeleteVPCRoute removes the route of prefix p in VPC vni (idempotent).
func (d *Datapath) DeleteVPCRoute(vni uint32, p netip.Prefix) error {
	k, err := routeKey(vni, p)
	if err != nil {
		return fmt.Errorf("delete vpc route %d %s: %w", vni, p, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.lxc.GenieVpcRoutes.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete vpc route %d %s: %w", vni, p, mapErr(d.lxc.GenieVpcRoutes, "delete", err))
	}
	return nil
}

// VPCRoutes lists the VPC route table.
func (d *Datapath) VPCRoutes() ([]VPCRoute, error) {
	var (
		out []VPCRoute
		k   lxcVpcRouteKey
		v   lxcVpcRoute
	)
	it := d.lxc.GenieVpcRoutes.Iterate()
	for it.Next(&k, &v) {
		out = append(out, VPCRoute{
			VNI: k.Vni, Prefix: netip.PrefixFrom(addrFrom(k.Addr), int(k.Prefixlen)-32),
			Kind: RouteKind(v.Kind), Policy: v.Policy, Route: v.Route,
		})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list vpc routes: %w", err)
	}
	return out, nil
}

// EgressSelection says which policy a local pod uses for a route: Policy
// 0 means none selects it (its packets are counted EGRESS_NOT_SELECTED
// drops).
type EgressSelection struct {
	Route  uint32
	Pod    netip.Addr
	Policy uint32
}

// UpsertEgressSelection installs or replaces selection s.
func (d *Datapath) UpsertEgressSelection(s EgressSelection) error {
	if s.Route == 0 || !s.Pod.Is4() {
		return fmt.Errorf("upsert egress selection route %d pod %s: route 0 or pod not ipv4", s.Route, s.Pod)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	k := lxcEgressSelectKey{Route: s.Route, Pod: ip4(s.Pod)}
	if err := d.lxc.GenieEgressSelect.Update(&k, s.Policy, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("upsert egress selection route %d pod %s: %w", s.Route, s.Pod, mapErr(d.lxc.GenieEgressSelect, "update", err))
	}
	return nil
}

// DeleteEgressSelection removes the selection of pod for route (idempotent).
func (d *Datapath) DeleteEgressSelection(route uint32, pod netip.Addr) error {
	if !pod.Is4() {
		return fmt.Errorf("delete egress selection route %d: pod %q is not ipv4", route, pod)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	k := lxcEgressSelectKey{Route: route, Pod: ip4(pod)}
	if err := d.lxc.GenieEgressSelect.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete egress selection route %d pod %s: %w", route, pod, mapErr(d.lxc.GenieEgressSelect, "delete", err))
	}
	return nil
}

// EgressSelections lists the selection map.
func (d *Datapath) EgressSelections() ([]EgressSelection, error) {
	var (
		out []EgressSelection
		k   lxcEgressSelectKey
		v   uint32
	)
	it := d.lxc.GenieEgressSelect.Iterate()
	for it.Next(&k, &v) {
		out = append(out, EgressSelection{Route: k.Route, Pod: addrFrom(k.Pod), Policy: v})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list egress selections: %w", err)
	}
	return out, nil
}

// EgressGatewaySet is what the data plane knows of a policy's gateways
// (their underlay addresses): Active ones take new flows (picked by flow
// hash), Draining ones keep the flows already pinned to them. A gateway in
// neither is dead to the data plane: its flows pick again.
type EgressGatewaySet struct {
	Active   []netip.Addr
	Draining []netip.Addr
}

// UpsertEgressPolicy installs or replaces the gateway sets of policy id.
// The write is one map update, so a packet sees the old or the new sets.
func (d *Datapath) UpsertEgressPolicy(id uint32, g EgressGatewaySet) error {
	if id == 0 {
		return errors.New("upsert egress policy: id 0")
	}
	n := len(g.Active) + len(g.Draining)
	if n > MaxEgressGateways {
		return fmt.Errorf("upsert egress policy %d: %d gateways exceed %d", id, n, MaxEgressGateways)
	}
	v := lxcEgressPolicy{Active: uint8(len(g.Active)), All: uint8(n)}
	for i, a := range append(append([]netip.Addr(nil), g.Active...), g.Draining...) {
		if err := checkIP("gateway", a); err != nil {
			return fmt.Errorf("upsert egress policy %d: %w", id, err)
		}
		v.Gw[i] = ip4(a)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.lxc.GenieEgressPolicies.Update(id, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("upsert egress policy %d: %w", id, mapErr(d.lxc.GenieEgressPolicies, "update", err))
	}
	return nil
}

// DeleteEgressPolicy removes policy id (idempotent): its pods' packets
// become EGRESS_NO_GATEWAY drops until its routes go too.
func (d *Datapath) DeleteEgressPolicy(id uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.lxc.GenieEgressPolicies.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete egress policy %d: %w", id, mapErr(d.lxc.GenieEgressPolicies, "delete", err))
	}
	return nil
}

// EgressPolicies lists the policies' gateway sets by id.
func (d *Datapath) EgressPolicies() (map[uint32]EgressGatewaySet, error) {
	var (
		k   uint32
		v   lxcEgressPolicy
		out = map[uint32]EgressGatewaySet{}
	)
	it := d.lxc.GenieEgressPolicies.Iterate()
	for it.Next(&k, &v) {
		var g EgressGatewaySet
		for i := 0; i < int(v.All) && i < MaxEgressGateways; i++ {
			if i < int(v.Active) {
				g.Active = append(g.Active, addrFrom(v.Gw[i]))
			} else {
				g.Draining = append(g.Draining, addrFrom(v.Gw[i]))
			}
		}
		out[k] = g
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list egress policies: %w", err)
	}
	return out, nil
}

// UpsertEgressGateway makes this node a gateway of VPC vni, SNATing its
// traffic to egressIP (which the node must own: replies to it must reach
// the uplink). Replacing the address of a VPC keeps established flows on
// the old one until they expire.
func (d *Datapath) UpsertEgressGateway(vni uint32, egressIP netip.Addr) error {
	if err := errors.Join(checkVNI(vni), checkIP("egress ip", egressIP)); err != nil {
		return fmt.Errorf("upsert egress gateway vni %d: %w", vni, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var prev lxcEgressGw
	if d.lxc.GenieEgressGw.Lookup(vni, &prev) == nil && prev.EgressIp == ip4(egressIP) {
		return nil
	}
	r := lxcEgressIp{PortMin: EgressPortMin, PortMax: EgressPortMax}
	if egressIP != d.cfg.UnderlayIP {
		r.PortMin = EgressPortFloor
	}
	if err := d.lxc.GenieEgressIps.Update(ip4(egressIP), &r, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("upsert egress gateway vni %d: %w", vni, mapErr(d.lxc.GenieEgressIps, "update", err))
	}
	if err := d.lxc.GenieEgressGw.Update(vni, &lxcEgressGw{EgressIp: ip4(egressIP)}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("upsert egress gateway vni %d: %w", vni, mapErr(d.lxc.GenieEgressGw, "update", err))
	}
	return nil
}

// DeleteEgressGateway ends this node's gateway role for VPC vni
// (idempotent). Replies of its established flows are still reverse-NATed
// while they last, as long as another VPC keeps the egress address;
// PruneEgressIPs drops the addresses no VPC uses.
func (d *Datapath) DeleteEgressGateway(vni uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.lxc.GenieEgressGw.Delete(vni); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete egress gateway vni %d: %w", vni, mapErr(d.lxc.GenieEgressGw, "delete", err))
	}
	return nil
}

// EgressGateways lists the VPCs this node is a gateway of, with their
// egress addresses.
func (d *Datapath) EgressGateways() (map[uint32]netip.Addr, error) {
	var (
		k   uint32
		v   lxcEgressGw
		out = map[uint32]netip.Addr{}
	)
	it := d.lxc.GenieEgressGw.Iterate()
	for it.Next(&k, &v) {
		out[k] = addrFrom(v.EgressIp)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list egress gateways: %w", err)
	}
	return out, nil
}

// PruneEgressIPs removes the egress addresses no VPC's gateway entry uses
// any more and that no live SNAT flow still needs (replies to them pass
// to the stack untouched from then on).
func (d *Datapath) PruneEgressIPs() error {
	gws, err := d.EgressGateways()
	if err != nil {
		return err
	}
	used := map[uint32]bool{}
	for _, a := range gws {
		used[ip4(a)] = true
	}
	flows, err := d.Conntrack()
	if err != nil {
		return err
	}
	for _, f := range flows {
		if f.Egress && f.SNAT {
			used[ip4(f.SrcNAT.Addr())] = true
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var (
		k    uint32
		v    lxcEgressIp
		dead []uint32
	)
	it := d.lxc.GenieEgressIps.Iterate()
	for it.Next(&k, &v) {
		if !used[k] {
			dead = append(dead, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("prune egress ips: %w", err)
	}
	for _, k := range dead {
		if err := d.lxc.GenieEgressIps.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("prune egress ips: %w", mapErr(d.lxc.GenieEgressIps, "delete", err))
		}
	}
	return nil
}

// EgressFlow is a pod-side pin: a flow of a local pod and its gateway.
type EgressFlow struct {
	Tuple   Tuple
	Gateway netip.Addr
	State   ConntrackState
	// Expires is the deadline in CLOCK_MONOTONIC time (bpf_ktime_get_ns).
	Expires time.Duration
}

// EgressFlows lists the pod-side flow pins.
func (d *Datapath) EgressFlows() ([]EgressFlow, error) {
	var (
		out []EgressFlow
		k   lxcCtKey
		v   lxcCtEntry
	)
	it := d.lxc.GenieEgressFlows.Iterate()
	for it.Next(&k, &v) {
		out = append(out, EgressFlow{Tuple: tupleFrom(k), Gateway: addrFrom(v.DstAddr), State: ConntrackState(v.State), Expires: time.Duration(v.Expires)})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list egress flows: %w", err)
	}
	return out, nil
}

// gcEgressFlows deletes the expired pins of m; returns how many are left
// and how many went.
func gcEgressFlows(m *ebpf.Map) (left, deleted int, err error) {
	now := monotonicNow()
	var (
		k    lxcCtKey
		v    lxcCtEntry
		dead []lxcCtKey
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if time.Duration(v.Expires) < now {
			dead = append(dead, k)
		} else {
			left++
		}
	}
	if err := it.Err(); err != nil {
		return left, 0, fmt.Errorf("egress flow gc: %w", err)
	}
	for _, k := range dead {
		if err := m.Delete(&k); err == nil {
			deleted++
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return left, deleted, fmt.Errorf("egress flow gc: %w", mapErr(m, "delete", err))
		}
	}
	return left, deleted, nil
}
