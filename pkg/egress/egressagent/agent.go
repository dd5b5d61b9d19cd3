// Package egressagent is the node side of egress gateways: it follows the
// EgressGateways and nodes of the store and programs the node's data plane
// (package egress computes what; pkg/datapath/egress.go writes it): the
// routes, per-pod selections and gateway sets of the VPCs hosted here, and
// the gateway role for the VPCs this node serves, whose endpoints it then
// follows like a hosted VPC's (the gateway checks inner sources and sends
// replies back to the pods' nodes). Gateway liveness comes from an
// egress.Health: Heartbeats (store heartbeats) today.
//
// It reconciles on every store event, every health change, and every Poll
// (the hosted VPCs and local pods are read from the agent, as svcagent
// does): a new pod gets its selection within one Poll. Only changed map
// entries are written; a restarted agent adopts what the pinned maps hold
// and removes what is no longer wanted.
package egressagent

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/egress"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// DataPlane is the part of the data plane the agent drives
// (*datapath.Datapath).
type DataPlane interface {
	UpsertVPCRoute(datapath.VPCRoute) error
	DeleteVPCRoute(vni uint32, p netip.Prefix) error
	VPCRoutes() ([]datapath.VPCRoute, error)
	UpsertEgressSelection(datapath.EgressSelection) error
	DeleteEgressSelection(route uint32, pod netip.Addr) error
	EgressSelections() ([]datapath.EgressSelection, error)
	UpsertEgressPolicy(id uint32, g datapath.EgressGatewaySet) error
	DeleteEgressPolicy(id uint32) error
	EgressPolicies() (map[uint32]datapath.EgressGatewaySet, error)
	UpsertEgressGateway(vni uint32, egressIP netip.Addr) error
	DeleteEgressGateway(vni uint32) error
	EgressGateways() (map[uint32]netip.Addr, error)
	PruneEgressIPs() error
}

// DefaultDrainTimeout is how long a drained gateway keeps its established
// flows (the agent's --egress-drain-timeout).
const DefaultDrainTimeout = 10 * time.Minute

// Agent programs one node's egress state.
type Agent struct {
	Store  store.Store
	Egress store.EgressStore
	DP     DataPlane
	// Node is this node's name.
	Node string
	// Health says which gateways are alive.
	Health egress.Health
	// Hosted returns the VPCs with local pods and their VNIs.
	Hosted func() map[string]uint32
	// Local returns the node's pods.
	Local func() []egress.Endpoint
	// Serve makes the node follow a VPC's endpoints while it is a gateway
	// of it (the agent's acquireVPC); Unserve ends that.
	Serve   func(ctx context.Context, vpcName string) error
	Unserve func(vpcName string)
	// Own makes the node own a dedicated egress address (one that is not
	// its underlay address: added to the uplink, so that the node answers
	// ARP for it and replies reach the uplink); Disown removes it. Nil:
	// the operator provides the addresses.
	Own, Disown func(netip.Addr) error
	// Owned returns the dedicated addresses a previous agent added (Own
	// marks them): adopted with those in the pinned gateway map, which an
	// upgrade may have rebuilt empty, so they go when no longer wanted.
	Owned func() ([]netip.Addr, error)
	// DrainTimeout: see DefaultDrainTimeout.
	DrainTimeout time.Duration
	// HostPrefixes are the cluster's Service CIDRs (egress.Input).
	HostPrefixes []netip.Prefix
	// Poll is how often the local pods are re-read (default 250 ms).
	Poll time.Duration
	Log  *slog.Logger
	// Synced, if not nil, is closed once the first reconcile has run (an
	// upgrading agent attaches its new programs after that).
	Synced chan struct{}

	mu       sync.Mutex
	gateways map[string]egress.Gateway
	nodes    map[string]vpc.Node
	vpcs     map[string]vpc.VPC
	served   map[string]bool
	// Programmed state and the node-local ids of policies and routes.
	policyID map[string]uint32
	routeID  map[routeKey]uint32
	nextID   uint32
	routes   map[routeKey]datapath.VPCRoute
	sels     map[selKey]uint32
	policies map[uint32]datapath.EgressGatewaySet
	gws      map[uint32]netip.Addr
	owned    map[netip.Addr]bool
	adopted  bool
}

type routeKey struct {
	vni    uint32
	prefix netip.Prefix
}

type selKey struct {
	route uint32
	pod   netip.Addr
}

func (a *Agent) log() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}

// IsGateway reports whether this node is a gateway node of any egress
// gateway (it must then beat).
func (a *Agent) IsGateway() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	self, ok := a.nodes[a.Node]
	if !ok {
		return false
	}
	for _, g := range a.gateways {
		if g.SelectsNode(self) {
			return true
		}
	}
	return false
}

// Run follows the store and reconciles until ctx ends, starting over from a
// listing after a watch failure.
func (a *Agent) Run(ctx context.Context) error {
	for {
		err := a.run(ctx)
		if ctx.Err() != nil {
			// Served VPCs stay programmed: the data plane forwards on
			// without the agent (a restarted one adopts them).
			return ctx.Err()
		}
		a.log().Error("egress: sync restarting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (a *Agent) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gws, rev, err := a.Egress.ListEgressGateways(ctx, "")
	if err != nil {
		return err
	}
	nodes, nrev, err := a.Store.ListNodes(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.gateways = map[string]egress.Gateway{}
	for _, g := range gws {
		a.gateways[g.Key()] = g
	}
	a.nodes = map[string]vpc.Node{}
	for _, n := range nodes {
		a.nodes[n.Name] = n
	}
	if a.vpcs == nil {
		a.vpcs = map[string]vpc.VPC{}
	}
	a.mu.Unlock()
	gch := a.Egress.WatchEgressGateways(ctx, rev)
	nch := a.Store.WatchNodes(ctx, nrev)
	poll := a.Poll
	if poll == 0 {
		poll = 250 * time.Millisecond
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	var health <-chan struct{}
	if a.Health != nil {
		health = a.Health.Changed()
	}
	for {
		if err := a.reconcile(ctx); err != nil {
			a.log().Error("egress: programming failed", "err", err)
		}
		if a.Synced != nil {
			close(a.Synced)
			a.Synced = nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-gch:
			if !ok || ev.Type == store.EventError {
				return fmt.Errorf("egress gateway watch: %v", ev.Err)
			}
			a.mu.Lock()
			if ev.Type == store.EventPut {
				a.gateways[ev.Gateway.Key()] = ev.Gateway
			} else {
				delete(a.gateways, ev.Gateway.Key())
			}
			a.mu.Unlock()
		case ev, ok := <-nch:
			if !ok || ev.Type == store.EventError {
				return fmt.Errorf("node watch: %v", ev.Err)
			}
			a.mu.Lock()
			if ev.Type == store.EventPut {
				a.nodes[ev.Node.Name] = ev.Node
			} else {
				delete(a.nodes, ev.Node.Name)
			}
			a.mu.Unlock()
		case <-health:
		case <-tick.C:
		}
	}
}

// reconcile computes the plan and writes the difference.
func (a *Agent) reconcile(ctx context.Context) error {
	hosted := a.Hosted()
	local := a.Local()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.adopt(); err != nil {
		return err
	}
	// VPC definitions (CIDR, VNI) of every VPC with a gateway.
	for _, g := range a.gateways {
		if _, ok := a.vpcs[g.VPC]; ok {
			continue
		}
		v, err := a.Store.GetVPC(ctx, g.VPC)
		if err != nil {
			a.log().Warn("egress: vpc of gateway", "gateway", g.Key(), "err", err)
			continue
		}
		a.vpcs[g.VPC] = v
	}
	// And of every VPC that is a local pod's default network (its
	// internal route and 0.0.0.0/0, egress.Compute).
	for _, e := range local {
		if _, ok := a.vpcs[e.VPC]; ok || !e.NodeNet {
			continue
		}
		v, err := a.Store.GetVPC(ctx, e.VPC)
		if err != nil {
			a.log().Warn("egress: vpc of a default-network pod", "vpc", e.VPC, "err", err)
			continue
		}
		a.vpcs[e.VPC] = v
	}
	in := egress.Input{Node: a.Node, VPCs: a.vpcs, Hosted: map[string]bool{}, Nodes: a.nodes, Local: local,
		HostPrefixes: a.HostPrefixes, Now: time.Now(), DrainTimeout: a.DrainTimeout}
	if in.DrainTimeout == 0 {
		in.DrainTimeout = DefaultDrainTimeout
	}
	for name := range hosted {
		in.Hosted[name] = true
	}
	for _, g := range a.gateways {
		in.Gateways = append(in.Gateways, g)
	}
	if a.Health != nil {
		in.Alive = a.Health.Alive
	}
	plan := egress.Compute(in)

	// Serve: follow the endpoints of the VPCs this node is a gateway of.
	if a.served == nil {
		a.served = map[string]bool{}
	}
	for v := range plan.Serve {
		if !a.served[v] && a.Serve != nil {
			if err := a.Serve(ctx, v); err != nil {
				return fmt.Errorf("serve vpc %q: %w", v, err)
			}
			a.served[v] = true
		}
	}

	// Desired data plane state, with ids.
	wantPol := map[uint32]datapath.EgressGatewaySet{}
	for key, set := range plan.Policies {
		wantPol[a.idOf(key)] = datapath.EgressGatewaySet{Active: set.Active, Draining: set.Draining}
	}
	wantRoutes := map[routeKey]datapath.VPCRoute{}
	wantSels := map[selKey]uint32{}
	for _, r := range plan.Routes {
		k := routeKey{r.VNI, r.Prefix}
		dr := datapath.VPCRoute{VNI: r.VNI, Prefix: r.Prefix, Kind: datapath.RouteInternal}
		if r.Host {
			dr.Kind = datapath.RouteHost
		} else if !r.Internal {
			dr.Kind = datapath.RouteEgress
			if r.Policy != "" {
				dr.Policy = a.idOf(r.Policy)
			}
			if len(r.Selections) > 0 {
				dr.Route = a.routeIDOf(k)
				for pod, pk := range r.Selections {
					id := uint32(0)
					if pk != "" {
						id = a.idOf(pk)
					}
					wantSels[selKey{dr.Route, pod}] = id
				}
			}
		}
		wantRoutes[k] = dr
	}
	wantGws := map[uint32]netip.Addr{}
	for v, ip := range plan.Serve {
		if vv, ok := a.vpcs[v]; ok && vv.VNI != 0 {
			wantGws[vv.VNI] = ip
		}
	}

	// Writes: what packets look up last goes in first, removals in the
	// reverse order, so no packet meets a route whose policy is missing.
	for id, set := range wantPol {
		if old, ok := a.policies[id]; ok && slices.Equal(old.Active, set.Active) && slices.Equal(old.Draining, set.Draining) {
			continue
		}
		if err := a.DP.UpsertEgressPolicy(id, set); err != nil {
			return err
		}
		a.policies[id] = set
		a.log().Info("egress: gateways", "policy", id, "active", set.Active, "draining", set.Draining)
	}
	for k, id := range wantSels {
		if old, ok := a.sels[k]; ok && old == id {
			continue
		}
		if err := a.DP.UpsertEgressSelection(datapath.EgressSelection{Route: k.route, Pod: k.pod, Policy: id}); err != nil {
			return err
		}
		a.sels[k] = id
	}
	self := a.nodes[a.Node].UnderlayIP
	if a.owned == nil {
		// Dedicated addresses a previous agent added are in the pinned
		// gateway map: adopt them, so they go when no longer wanted.
		owned := map[netip.Addr]bool{}
		for _, ip := range a.gws {
			if ip != self && self.IsValid() && a.Own != nil {
				owned[ip] = true
			}
		}
		if a.Owned != nil && a.Own != nil {
			ips, err := a.Owned()
			if err != nil {
				return fmt.Errorf("adopt egress addresses: %w", err)
			}
			for _, ip := range ips {
				if ip != self {
					owned[ip] = true
				}
			}
		}
		a.owned = owned
	}
	wantOwned := map[netip.Addr]bool{}
	for _, ip := range wantGws {
		if ip != self && a.Own != nil {
			wantOwned[ip] = true
			if !a.owned[ip] {
				if err := a.Own(ip); err != nil {
					return fmt.Errorf("own egress address %s: %w", ip, err)
				}
				a.owned[ip] = true
			}
		}
	}
	for vni, ip := range wantGws {
		if old, ok := a.gws[vni]; ok && old == ip {
			continue
		}
		if err := a.DP.UpsertEgressGateway(vni, ip); err != nil {
			return err
		}
		a.gws[vni] = ip
		a.log().Info("egress: serving", "vni", vni, "egress_ip", ip)
	}
	for k, r := range wantRoutes {
		if old, ok := a.routes[k]; ok && old == r {
			continue
		}
		if err := a.DP.UpsertVPCRoute(r); err != nil {
			return err
		}
		a.routes[k] = r
	}
	for k := range a.routes {
		if _, ok := wantRoutes[k]; !ok {
			if err := a.DP.DeleteVPCRoute(k.vni, k.prefix); err != nil {
				return err
			}
			delete(a.routes, k)
		}
	}
	for k := range a.sels {
		if _, ok := wantSels[k]; !ok {
			if err := a.DP.DeleteEgressSelection(k.route, k.pod); err != nil {
				return err
			}
			delete(a.sels, k)
		}
	}
	for id := range a.policies {
		if _, ok := wantPol[id]; !ok {
			if err := a.DP.DeleteEgressPolicy(id); err != nil {
				return err
			}
			delete(a.policies, id)
		}
	}
	pruned := false
	for vni := range a.gws {
		if _, ok := wantGws[vni]; !ok {
			if err := a.DP.DeleteEgressGateway(vni); err != nil {
				return err
			}
			delete(a.gws, vni)
			pruned = true
			a.log().Info("egress: no longer serving", "vni", vni)
		}
	}
	if pruned {
		if err := a.DP.PruneEgressIPs(); err != nil {
			return err
		}
	}
	for ip := range a.owned {
		if !wantOwned[ip] && a.Disown != nil {
			if err := a.Disown(ip); err != nil {
				return fmt.Errorf("disown egress address %s: %w", ip, err)
			}
			delete(a.owned, ip)
		}
	}
	for v := range a.served {
		if _, ok := plan.Serve[v]; !ok {
			a.Unserve(v)
			delete(a.served, v)
		}
	}
	a.gcIDs(wantPol, wantRoutes)
	return nil
}

// adopt reads what the pinned maps hold (a previous agent's state), once.
func (a *Agent) adopt() error {
	if a.adopted {
		return nil
	}
	a.policyID, a.routeID = map[string]uint32{}, map[routeKey]uint32{}
	a.routes, a.sels, a.gws = map[routeKey]datapath.VPCRoute{}, map[selKey]uint32{}, map[uint32]netip.Addr{}
	var err error
	if a.policies, err = a.DP.EgressPolicies(); err != nil {
		return err
	}
	routes, err := a.DP.VPCRoutes()
	if err != nil {
		return err
	}
	for _, r := range routes {
		a.routes[routeKey{r.VNI, r.Prefix}] = r
		a.nextID = max(a.nextID, r.Route, r.Policy)
	}
	sels, err := a.DP.EgressSelections()
	if err != nil {
		return err
	}
	for _, s := range sels {
		a.sels[selKey{s.Route, s.Pod}] = s.Policy
	}
	if a.gws, err = a.DP.EgressGateways(); err != nil {
		return err
	}
	for id := range a.policies {
		a.nextID = max(a.nextID, id)
	}
	// Ids in the pinned maps are not reused for other policies: fresh
	// ones start above them (the old entries are rewritten or removed by
	// the first reconcile).
	a.adopted = true
	return nil
}

func (a *Agent) idOf(policy string) uint32 {
	if id, ok := a.policyID[policy]; ok {
		return id
	}
	a.nextID++
	a.policyID[policy] = a.nextID
	return a.nextID
}

func (a *Agent) routeIDOf(k routeKey) uint32 {
	if id, ok := a.routeID[k]; ok {
		return id
	}
	a.nextID++
	a.routeID[k] = a.nextID
	return a.nextID
}

// gcIDs forgets the ids of policies and routes no longer wanted.
func (a *Agent) gcIDs(pol map[uint32]datapath.EgressGatewaySet, routes map[routeKey]datapath.VPCRoute) {
	maps.DeleteFunc(a.policyID, func(_ string, id uint32) bool { _, ok := pol[id]; return !ok })
	maps.DeleteFunc(a.routeID, func(k routeKey, _ uint32) bool { r, ok := routes[k]; return !ok || r.Route == 0 })
}
