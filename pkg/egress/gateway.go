package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// MaxGateways is the most gateway nodes one EgressGateway may name or
// select: the data plane keeps at most this many (active plus draining)
// per policy (datapath.MaxEgressGateways).
const MaxGateways = 8

// ErrConflict is wrapped by Check's errors about a clash with another
// object (a node given two egress addresses in one VPC). Stores report
// them as store.ErrConflict.
var ErrConflict = errors.New("conflict")

// ErrUnknown is wrapped by Check's errors about a missing object it refers
// to (a node). Stores report them as store.ErrNotFound.
var ErrUnknown = errors.New("not found")

// Gateway is an egress policy of a VPC: the traffic of the selected pods
// to the destinations leaves the VPC through the gateway nodes, SNATed to
// each gateway's egress address.
type Gateway struct {
	// VPC names the VPC whose pods leave through the gateways.
	VPC string `json:"vpc"`
	// Name is a DNS-1123 label, unique within the VPC.
	Name string `json:"name"`
	// Selector picks the pods: endpoints of the VPC whose labels contain
	// all of these. Empty: every endpoint of the VPC.
	Selector map[string]string `json:"selector,omitempty"`
	// Destinations are the IPv4 prefixes reached through the gateways.
	// A prefix may contain the VPC's CIDR (0.0.0.0/0: everything), whose
	// own addresses stay internal; one inside the VPC's CIDR is refused.
	Destinations []netip.Prefix `json:"destinations"`
	// Nodes names gateway nodes; NodeSelector selects more by node
	// labels. Together at most MaxGateways (by name order past that).
	Nodes        []string          `json:"nodes,omitempty"`
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// EgressIPs gives a gateway node's egress address (the node must own
	// it: replies to it must reach its uplink); a node without one uses
	// its underlay address.
	EgressIPs map[string]netip.Addr `json:"egressIPs,omitempty"`
	// Drains are the gateway nodes being drained: they take no new flows,
	// and keep the flows already pinned to them until those end or the
	// drain timeout (the agents' --egress-drain-timeout) passes.
	Drains []Drain `json:"drains,omitempty"`
}

// Drain marks a gateway node as draining since Since.
type Drain struct {
	Node  string    `json:"node"`
	Since time.Time `json:"since"`
}

// Key returns "vpc/name".
func (g Gateway) Key() string { return g.VPC + "/" + g.Name }

// String returns `egress gateway "vpc/name"`.
func (g Gateway) String() string { return fmt.Sprintf("egress gateway %q", g.Key()) }

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, vpc.ErrInvalid)...)
}

// WithDefaults returns g with its lists sorted and deduplicated and its
// destinations masked.
func (g Gateway) WithDefaults() Gateway {
	g.Destinations = slices.Clone(g.Destinations)
	for i, p := range g.Destinations {
		if p.IsValid() {
			g.Destinations[i] = p.Masked()
		}
	}
	slices.SortFunc(g.Destinations, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	g.Destinations = slices.Compact(g.Destinations)
	g.Nodes = slices.Compact(slices.Sorted(slices.Values(g.Nodes)))
	return g
}

// Validate checks g on its own (after WithDefaults): names, destinations,
// gateway nodes and addresses, drains.
func (g Gateway) Validate() error {
	if err := vpc.ValidateName(g.VPC); err != nil {
		return fmt.Errorf("%s: vpc: %w", g, err)
	}
	if err := vpc.ValidateName(g.Name); err != nil {
		return fmt.Errorf("%s: %w", g, err)
	}
	if len(g.Destinations) == 0 {
		return invalid("%s: no destinations", g)
	}
	for _, p := range g.Destinations {
		if !p.IsValid() || !p.Addr().Is4() {
			return invalid("%s: destination %q is not an ipv4 prefix", g, p)
		}
	}
	if len(g.Nodes) == 0 && len(g.NodeSelector) == 0 {
		return invalid("%s: no gateway nodes (name them, or give a node selector)", g)
	}
	if len(g.Nodes) > MaxGateways {
		return invalid("%s: %d gateway nodes, at most %d", g, len(g.Nodes), MaxGateways)
	}
	for _, n := range g.Nodes {
		if err := vpc.ValidateNodeName(n); err != nil {
			return fmt.Errorf("%s: gateway node: %w", g, err)
		}
	}
	for k, v := range g.Selector {
		if k == "" || strings.ContainsAny(k+v, "\n=") {
			return invalid("%s: selector label %q=%q", g, k, v)
		}
	}
	for k, v := range g.NodeSelector {
		if k == "" || strings.ContainsAny(k+v, "\n=") {
			return invalid("%s: node selector label %q=%q", g, k, v)
		}
	}
	for n, a := range g.EgressIPs {
		if err := vpc.ValidateNodeName(n); err != nil {
			return fmt.Errorf("%s: egress ip of node: %w", g, err)
		}
		if !a.Is4() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() {
			return invalid("%s: egress ip %q of node %q is not a unicast ipv4 address", g, a, n)
		}
	}
	for _, d := range g.Drains {
		if err := vpc.ValidateNodeName(d.Node); err != nil {
			return fmt.Errorf("%s: drain: %w", g, err)
		}
	}
	return nil
}

// Check validates g against its VPC, the nodes and the other gateways of
// the VPC (g itself, by name, is ignored):
//   - a destination inside the VPC's CIDR (or equal to it) is refused:
//     those addresses are the VPC's own, never egress. A destination that
//     contains the CIDR (0.0.0.0/0, a /8 around a /16 VPC) is allowed and
//     means its addresses outside the VPC;
//   - every named node, and every node given an egress address, exists
//     (ErrUnknown);
//   - a node is a gateway of one VPC with one egress address: another
//     gateway of the VPC giving the same node another address is an
//     ErrConflict (the gateway SNATs a VPC's traffic by VNI alone).
func Check(g Gateway, parent vpc.VPC, nodes []vpc.Node, others []Gateway) error {
	if err := g.Validate(); err != nil {
		return err
	}
	for _, p := range g.Destinations {
		if vpc.Contains(parent.CIDR, p) {
			return invalid("%s: destination %s overlaps vpc %q %s: it is inside the vpc (a destination may contain the vpc's cidr, as 0.0.0.0/0 does, but not lie in it)", g, p, parent.Name, parent.CIDR)
		}
	}
	known := map[string]vpc.Node{}
	for _, n := range nodes {
		known[n.Name] = n
	}
	for _, n := range g.Nodes {
		if _, ok := known[n]; !ok {
			return fmt.Errorf("%s: gateway node %q is not a node of the cluster: %w", g, n, ErrUnknown)
		}
	}
	for n := range g.EgressIPs {
		if _, ok := known[n]; !ok {
			return fmt.Errorf("%s: egress ip for node %q, which is not a node of the cluster: %w", g, n, ErrUnknown)
		}
	}
	mine := g.EgressAddrs(known)
	for _, o := range others {
		if o.VPC != g.VPC || o.Name == g.Name {
			continue
		}
		for n, a := range o.EgressAddrs(known) {
			if b, ok := mine[n]; ok && a != b {
				return fmt.Errorf("%s: node %q would egress vpc %q as %s, but %s has it egress as %s: %w", g, n, g.VPC, b, o, a, ErrConflict)
			}
		}
	}
	return nil
}

// SelectsNode reports whether n is one of g's gateway nodes.
func (g Gateway) SelectsNode(n vpc.Node) bool {
	if slices.Contains(g.Nodes, n.Name) {
		return true
	}
	return selects(g.NodeSelector, n.Labels)
}

// Selects reports whether g applies to an endpoint with these labels.
func (g Gateway) Selects(labels map[string]string) bool {
	return len(g.Selector) == 0 || selects(g.Selector, labels)
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// GatewayNodes returns g's gateway nodes among nodes, by name, at most
// MaxGateways.
func (g Gateway) GatewayNodes(nodes map[string]vpc.Node) []vpc.Node {
	var out []vpc.Node
	for _, n := range nodes {
		if g.SelectsNode(n) {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b vpc.Node) int { return strings.Compare(a.Name, b.Name) })
	if len(out) > MaxGateways {
		out = out[:MaxGateways]
	}
	return out
}

// EgressAddrs returns the egress address of each of g's gateway nodes
// among nodes: the given one, else the node's underlay address.
func (g Gateway) EgressAddrs(nodes map[string]vpc.Node) map[string]netip.Addr {
	out := map[string]netip.Addr{}
	for _, n := range g.GatewayNodes(nodes) {
		if a, ok := g.EgressIPs[n.Name]; ok {
			out[n.Name] = a
		} else if n.UnderlayIP.IsValid() {
			out[n.Name] = n.UnderlayIP
		}
	}
	return out
}

// DrainedSince returns when node started draining, if it is.
func (g Gateway) DrainedSince(node string) (time.Time, bool) {
	for _, d := range g.Drains {
		if d.Node == node {
			return d.Since, true
		}
	}
	return time.Time{}, false
}

// WithDrain returns g with node draining since now (an earlier drain of
// the node is kept), and whether g changed.
func (g Gateway) WithDrain(node string, now time.Time) (Gateway, bool) {
	if _, ok := g.DrainedSince(node); ok {
		return g, false
	}
	g.Drains = append(slices.Clone(g.Drains), Drain{Node: node, Since: now.UTC()})
	return g, true
}

// WithoutDrain returns g with node no longer draining, and whether g
// changed.
func (g Gateway) WithoutDrain(node string) (Gateway, bool) {
	out := slices.DeleteFunc(slices.Clone(g.Drains), func(d Drain) bool { return d.Node == node })
	changed := len(out) != len(g.Drains)
	g.Drains = out
	return g, changed
}
