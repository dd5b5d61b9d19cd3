package datapath

import "fmt"

// DropReason says why the data plane dropped a packet. The values mirror the
// negative DROP_* codes in bpf/lib/drop.h (the reason is the code's absolute
// value, which is also the index into the drop counter array).
//
// Keep in sync with bpf/lib/drop.h.
type DropReason uint32

// Drop reasons, see bpf/lib/drop.h.
const (
	// DropTruncated: shorter than an Ethernet header or a truncated L3/L4/Geneve header.
	DropTruncated DropReason = 1
	// DropUnknownEndpoint: packet from a pod veth whose ifindex is not in the endpoint-by-ifindex map.
	DropUnknownEndpoint DropReason = 2
	// DropSpoofedMAC: a pod sent with a source MAC that is not its own.
	DropSpoofedMAC DropReason = 3
	// DropSpoofedIP: a pod sent with a source IPv4 (or ARP sender IP) that is not its own.
	DropSpoofedIP DropReason = 4
	// DropNoRoute: no endpoint {vni, destination} in the VPC.
	DropNoRoute DropReason = 5
	// DropUnsupportedL3: neither IPv4 nor ARP (e.g. IPv6), on a pod veth or inside Geneve.
	DropUnsupportedL3 DropReason = 6
	// DropARP: ARP that is not a request the gateway answers (replies, probes, gratuitous, malformed).
	DropARP DropReason = 7
	// DropNoNextHop: the node's routing table has no usable route to the
	// remote endpoint's node (no route, unreachable, blackhole, prohibit).
	DropNoNextHop DropReason = 8
	// DropEncapFailed: bpf_skb_adjust_room or a header store failed while encapsulating.
	DropEncapFailed DropReason = 9
	// DropGeneveMalformed: UDP to our Geneve port with a bad Geneve header (version, options, protocol, fragment).
	DropGeneveMalformed DropReason = 10
	// DropUnknownVNI: Geneve for a VNI that has no endpoint on this node.
	DropUnknownVNI DropReason = 11
	// DropForged: inner source is not an endpoint of that VNI hosted on the outer source node.
	DropForged DropReason = 12
	// DropNotLocal: decapsulated packet for an endpoint that is not on this node.
	DropNotLocal DropReason = 13
	// DropDecapFailed: bpf_skb_adjust_room or a header store failed while decapsulating.
	DropDecapFailed DropReason = 14
	// DropFragNeeded: the encapsulated packet (for GSO: one segment) is
	// larger than the path MTU to the remote node; a DF packet without IP
	// options gets an ICMP "fragmentation needed" back.
	DropFragNeeded DropReason = 15
	// DropDirNoHolder: directory mode, a pod's packet to an unknown
	// endpoint whose shard has no holder (no directory members known).
	DropDirNoHolder DropReason = 16
	// DropDirNotHeld: a holder received a bounced packet for a record it
	// does not hold (it just lost the shard, or the endpoint is gone).
	DropDirNotHeld DropReason = 17
	// DropDirUntrusted: a bounced packet from a node that is not a holder
	// of its destination's shard, or whose origin is not a member or not
	// its sender.
	DropDirUntrusted DropReason = 18
	// DropDirNotLocal: a holder's forward reached a node that does not
	// host the destination (a stale held record).
	DropDirNotLocal DropReason = 19
	// DropNoBackend: a packet to a service that has no usable backend.
	DropNoBackend DropReason = 24
	// DropCTFailed: a conntrack insert failed (the insert-failure metric).
	DropCTFailed DropReason = 25
	// DropNATFailed: a checksum or store helper failed while rewriting for NAT.
	DropNATFailed DropReason = 26
	// DropSvcFragment: the first IP fragment of a datagram to a service
	// frontend, or of a tracked service flow's reply: fragments are not
	// load-balanced, and dropping the first makes the datagram fail
	// visibly (the rest cannot be reassembled without it).
	DropSvcFragment DropReason = 27
	// DropEgressNotSelected: the destination is an egress destination of
	// the VPC, but no egress policy selects the sending pod.
	DropEgressNotSelected DropReason = 32
	// DropEgressNoGateway: the pod's egress policy has no healthy gateway.
	DropEgressNoGateway DropReason = 33
	// DropEgressNoPort: the gateway found no free SNAT port for a new flow.
	DropEgressNoPort DropReason = 34
	// DropEgressUnsupported: egress of an IP fragment or of a protocol
	// other than TCP, UDP and ICMP echo.
	DropEgressUnsupported DropReason = 35
	// DropEgressDenied: a gateway got a packet of a VPC it serves for an
	// address that is no egress destination of that VPC.
	DropEgressDenied DropReason = 36
	// DropEgressNoRoute: the gateway's routing table has no route to the
	// outside destination (or the packet is too big for it).
	DropEgressNoRoute DropReason = 37
	// DropQoSIngress: over the destination pod's ingress rate limit
	// (bpf/lib/qos.h), on either delivery path.
	DropQoSIngress DropReason = 40
)

// maxDropReason is the size of the drop counter array (DROP_MAX in drop.h).
const maxDropReason = 64

var dropNames = map[DropReason]string{
	DropTruncated:         "TRUNCATED",
	DropUnknownEndpoint:   "UNKNOWN_ENDPOINT",
	DropSpoofedMAC:        "SPOOFED_MAC",
	DropSpoofedIP:         "SPOOFED_IP",
	DropNoRoute:           "NO_ROUTE",
	DropUnsupportedL3:     "UNSUPPORTED_L3",
	DropARP:               "ARP",
	DropNoNextHop:         "NO_NEXTHOP",
	DropEncapFailed:       "ENCAP_FAILED",
	DropGeneveMalformed:   "GENEVE_MALFORMED",
	DropUnknownVNI:        "UNKNOWN_VNI",
	DropForged:            "FORGED",
	DropNotLocal:          "NOT_LOCAL",
	DropDecapFailed:       "DECAP_FAILED",
	DropFragNeeded:        "FRAG_NEEDED",
	DropDirNoHolder:       "DIR_NO_HOLDER",
	DropDirNotHeld:        "DIR_NOT_HELD",
	DropDirUntrusted:      "DIR_UNTRUSTED",
	DropDirNotLocal:       "DIR_NOT_LOCAL",
	DropNoBackend:         "NO_BACKEND",
	DropCTFailed:          "CT_FAILED",
	DropNATFailed:         "NAT_FAILED",
	DropSvcFragment:       "SVC_FRAGMENT",
	DropEgressNotSelected: "EGRESS_NOT_SELECTED",
	DropEgressNoGateway:   "EGRESS_NO_GATEWAY",
	DropEgressNoPort:      "EGRESS_NO_PORT",
	DropEgressUnsupported: "EGRESS_UNSUPPORTED",
	DropEgressDenied:      "EGRESS_DENIED",
	DropEgressNoRoute:     "EGRESS_NO_ROUTE",
	DropQoSIngress:        "QOS_INGRESS",
}

// String returns the reason's name as used in metrics labels, e.g. "NO_ROUTE".
func (r DropReason) String() string {
	if n, ok := dropNames[r]; ok {
		return n
	}
	return fmt.Sprintf("REASON_%d", uint32(r))
}

// DropReasons lists every known reason in code order (for metrics).
func DropReasons() []DropReason {
	out := make([]DropReason, 0, len(dropNames))
	for r := DropReason(1); r < maxDropReason; r++ {
		if _, ok := dropNames[r]; ok {
			out = append(out, r)
		}
	}
	return out
}
