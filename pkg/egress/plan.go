package egress

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// Endpoint is a local pod attachment, as the plan needs it.
type Endpoint struct {
	VPC    string
	IP     netip.Addr
	Labels map[string]string
}

// Input is what a node knows when it plans its egress state.
type Input struct {
	// Node is this node's name.
	Node string
	// VPCs are the VPCs the node hosts pods of (Hosted) and every VPC it
	// may serve as a gateway, by name, with VNI and CIDR.
	VPCs map[string]vpc.VPC
	// Hosted names the VPCs with local pods.
	Hosted map[string]bool
	// Gateways are every EgressGateway of the cluster.
	Gateways []Gateway
	// Nodes are the cluster's nodes by name.
	Nodes map[string]vpc.Node
	// Alive reports whether a node is alive (Health); nil: all are.
	Alive func(node string) bool
	// Local are the node's pods.
	Local []Endpoint
	// Now and DrainTimeout decide which drains are over.
	Now          time.Time
	DrainTimeout time.Duration
}

// Route is one VPC route of the plan: Policy is the key ("vpc/name") of
// the policy of pods without a selection, Selections the local pods
// whose policy differs ("" for none).
type Route struct {
	VPC        string
	VNI        uint32
	Prefix     netip.Prefix
	Internal   bool
	Policy     string
	Selections map[netip.Addr]string
}

// GatewaySet is a policy's gateways, by underlay address.
type GatewaySet struct {
	Active   []netip.Addr
	Draining []netip.Addr
}

// Plan is a node's egress state: what the agent writes into the data
// plane.
type Plan struct {
	// Routes of the hosted VPCs and of the VPCs the node serves.
	Routes []Route
	// Policies by key: the gateway sets of every policy a route names.
	Policies map[string]GatewaySet
	// Serve maps the VPCs this node is a gateway of (active or
	// draining) to their egress address here.
	Serve map[string]netip.Addr
}

// Compute plans the egress state of in.Node.
//
// A pod's policy for a destination is the policy of its VPC with the most
// specific destination prefix containing it that selects the pod; equal
// prefixes go by policy name. The data plane's longest-prefix match sees
// one entry per prefix, so for every prefix of any policy of the VPC the
// plan gives the policy of pods without labels (the best selector-less
// policy) and a selection for each local pod whose best policy differs.
//
// Gateways: a policy's gateway nodes that are known and alive, draining
// ones (until their drain times out, then gone) apart from the active.
func Compute(in Input) Plan {
	p := Plan{Policies: map[string]GatewaySet{}, Serve: map[string]netip.Addr{}}
	alive := in.Alive
	if alive == nil {
		alive = func(string) bool { return true }
	}
	byVPC := map[string][]Gateway{}
	for _, g := range in.Gateways {
		byVPC[g.VPC] = append(byVPC[g.VPC], g)
	}
	vpcs := make([]string, 0, len(byVPC))
	for name := range byVPC {
		vpcs = append(vpcs, name)
	}
	slices.Sort(vpcs)
	for _, name := range vpcs {
		v, ok := in.VPCs[name]
		if !ok || v.VNI == 0 {
			continue
		}
		gws := byVPC[name]
		slices.SortFunc(gws, func(a, b Gateway) int { return strings.Compare(a.Name, b.Name) })
		serving := false
		for _, g := range gws {
			set := gatewaySet(g, in, alive)
			if addr, ok := g.EgressAddrs(in.Nodes)[in.Node]; ok && g.SelectsNode(in.Nodes[in.Node]) {
				if _, drainOver := drainState(g, in.Node, in); !drainOver {
					p.Serve[name] = addr
					serving = true
				}
			}
			if in.Hosted[name] {
				p.Policies[g.Key()] = set
			}
		}
		if !in.Hosted[name] && !serving {
			continue
		}
		p.Routes = append(p.Routes, Route{VPC: name, VNI: v.VNI, Prefix: v.CIDR, Internal: true})
		var local []Endpoint
		for _, e := range in.Local {
			if e.VPC == name {
				local = append(local, e)
			}
		}
		for _, pfx := range prefixes(gws) {
			r := Route{VPC: name, VNI: v.VNI, Prefix: pfx}
			if !in.Hosted[name] {
				// A gateway only tells egress destinations from internal
				// ones: no pod of it sends here.
				p.Routes = append(p.Routes, r)
				continue
			}
			r.Policy = best(gws, pfx, nil).key()
			for _, e := range local {
				if k := best(gws, pfx, e.Labels).key(); k != r.Policy {
					if r.Selections == nil {
						r.Selections = map[netip.Addr]string{}
					}
					r.Selections[e.IP] = k
				}
			}
			p.Routes = append(p.Routes, r)
		}
	}
	return p
}

// drainState says whether node drains g now, and whether its drain is
// over (timed out: it is no gateway of g any more).
func drainState(g Gateway, node string, in Input) (draining, over bool) {
	since, ok := g.DrainedSince(node)
	if !ok {
		return false, false
	}
	if in.DrainTimeout > 0 && in.Now.Sub(since) >= in.DrainTimeout {
		return false, true
	}
	return true, false
}

func gatewaySet(g Gateway, in Input, alive func(string) bool) GatewaySet {
	var s GatewaySet
	for _, n := range g.GatewayNodes(in.Nodes) {
		if !n.UnderlayIP.Is4() || !alive(n.Name) {
			continue
		}
		draining, over := drainState(g, n.Name, in)
		switch {
		case over:
		case draining:
			s.Draining = append(s.Draining, n.UnderlayIP)
		default:
			s.Active = append(s.Active, n.UnderlayIP)
		}
	}
	return s
}

// prefixes returns the distinct destinations of gws, sorted.
func prefixes(gws []Gateway) []netip.Prefix {
	var out []netip.Prefix
	for _, g := range gws {
		out = append(out, g.Destinations...)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

type choice struct {
	g    *Gateway
	bits int
}

func (c choice) key() string {
	if c.g == nil {
		return ""
	}
	return c.g.Key()
}

// best is the policy of gws (sorted by name) for destinations in pfx and a
// pod with labels (nil: a pod without labels): the most specific
// destination containing pfx among the policies selecting the pod.
func best(gws []Gateway, pfx netip.Prefix, labels map[string]string) choice {
	c := choice{bits: -1}
	for i := range gws {
		g := &gws[i]
		if !g.Selects(labels) {
			continue
		}
		for _, d := range g.Destinations {
			if vpc.Contains(d, pfx) && d.Bits() > c.bits {
				c = choice{g: g, bits: d.Bits()}
			}
		}
	}
	return c
}
