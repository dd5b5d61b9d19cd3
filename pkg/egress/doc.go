// Package egress is the model of a VPC's egress gateways: an EgressGateway
// (Gateway) lets the traffic of a VPC's selected pods to destinations
// outside the VPC leave through gateway nodes, SNATed to each gateway's
// egress address. It validates gateways against their VPC and the nodes
// (Check), and computes what one node must program (Compute: VPC routes,
// per-pod selections, each policy's active and draining gateway sets, and
// the VPCs the node itself serves as a gateway). Health is where gateway
// liveness comes from. The node side is package egressagent, the data
// plane bpf/lib/egress.h (pkg/datapath/egress.go).
//
// # Design note
//
// Everything that depends on labels, node membership and health is decided
// here, in userspace; the data plane only looks up. A pod's packet that
// matches no endpoint of its VPC is looked up by {VNI, destination} in an
// LPM table holding the VPC's own CIDR as "internal" (never egress: the
// lookup falls through to the NO_ROUTE drop, or to the directory's miss
// path) and every destination prefix of the VPC's gateways. Each prefix
// carries the policy of pods without labels, and a per-pod selection
// overrides it for the node's pods a more specific (or selector) policy
// picks: the most specific destination among the policies selecting the
// pod wins, equal prefixes go by policy name. Selections exist only for the
// node's own pods, so the table grows with local pods, not with the cluster.
//
// The rules of an EgressGateway (Check): a destination inside the VPC's CIDR
// is refused, since those addresses never leave; a destination containing
// the CIDR (0.0.0.0/0, a /8 around a /16 VPC) means its addresses outside
// the VPC. Named gateway nodes must exist (NodeSelector may match nodes that
// join later). A node SNATs one VPC to one egress address (the gateway
// finds the address by the packet's VNI alone), so two gateways of a VPC
// giving one node two addresses conflict. At most MaxGateways gateway nodes
// per policy (the data plane's fixed set size), by name order past that.
//
// Gateways are chosen per flow by hash among the active ones; a flow stays
// pinned to its gateway (pod-side conntrack) while that gateway is active
// or draining. A drain (geniectl egress drain NODE) moves a node to the
// draining set: no new flows, established ones stay until they end or the
// agents' drain timeout passes, after which it is no gateway at all. A dead
// node (Health) leaves both sets at once, and its flows pick again.
package egress
