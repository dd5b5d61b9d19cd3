// Package qos is CNI-Genie's network QoS: relative traffic priorities per
// pod attachment, and per-pod egress rate limits.
//
// # The model
//
// An attachment has a Class: high, normal or low (or none: QoS off). Each
// class has a weight, its assured share of the uplink: high 80%, normal
// 15%, low 5% (they add up to 100, so three saturating classes split the
// link 80:15:5). Spare bandwidth goes to the highest priority that wants
// it, so a high and a low pod both saturating split 95:5, and any class
// alone gets the whole link (work-conserving). A pod may also have an
// egress rate limit (bits/s).
//
// The class comes, highest precedence first, from the attachment's NPWG
// cni-args {"qos": "high"}, the pod annotation genie.cni.io/qos, or CNI_ARGS
// GENIE_QOS outside Kubernetes; the egress limit from the attachment's NPWG
// "bandwidth" egressRate (runtimeConfig.bandwidth for the pod's first
// network), kubernetes.io/egress-bandwidth, or CNI_ARGS
// GENIE_EGRESS_BANDWIDTH (Sources). Sources has a VPC-wide default class,
// but the VPC object does not carry one yet, so nothing sets it.
//
// A limit is enforced on the bytes the uplink sends, which include the 50
// bytes of encapsulation per packet: a 50 Mbit/s limit gave 46 Mbit/s of
// TCP goodput (BENCHMARKS.md).
//
// # The data plane
//
// The agent writes the class, and the minor of the pod's own HTB class when
// it has a limit, into lxc_info.flags (bpf/lib/qos.h). For a packet it
// encapsulates toward another node, from_pod sets skb->priority to an HTB
// classid of the uplink's root qdisc (1:10 high, 1:20 normal, 1:30 low, or
// the pod's 1:100-1:fff) and marks the outer DSCP (EF, CS0, CS1), so the
// underlay can honour the class too. skb->priority survives bpf_redirect
// (IP forwarding would reset it), and HTB picks the class straight from it:
// no filter runs.
//
// The Tree is the HTB on the uplink's egress: root 1:, inner 1:1 at the
// link rate, a leaf per class with rate = weight, ceil = link, its prio and
// an explicit 64 KiB quantum (HTB shares by quantum; smaller than a GSO
// packet it is unfair), and pod classes with ceil = the limit. Unclassified
// traffic (the node's own, pods without a class) goes to normal's leaf.
// HTB needs the link rate: the agent installs the tree only when given one
// (--qos-uplink-rate); without it classes only mark DSCP and skb->priority
// and nothing is enforced on the node, and egress limits are refused.
//
// # What is governed
//
// Only what leaves through the uplink: traffic to pods on other nodes.
// Same-node pod-to-pod traffic is delivered by bpf_redirect_peer, which
// never meets a qdisc; it is neither prioritised nor limited (it does not
// contend for the uplink either; it shares the CPU). Traffic toward a pod
// (decapsulated, redirect_peer) is not shaped: ingress limits need a token
// bucket in BPF and are refused for now.
package qos
