// Package qos is CNI-Genie's network QoS: relative traffic priorities per
// pod attachment, and per-pod egress and ingress rate limits.
//
// # The model
//
// An attachment has a Class: high, normal or low (or none: QoS off). Each
// class has a weight, its assured share of the uplink: high 80%, normal
// 15%, low 5% (they add up to 100, so three saturating classes split the
// link 80:15:5). Spare bandwidth goes to the highest priority that wants
// it, so a high and a low pod both saturating split 95:5, and any class
// alone gets the whole link (work-conserving). A pod may also have an
// egress and an ingress rate limit (bits/s).
//
// The class comes, highest precedence first, from the attachment's NPWG
// cni-args {"qos": "high"}, the pod annotation genie.cni.io/qos (or CNI_ARGS
// GENIE_QOS outside Kubernetes), then the VPC's default class (vpc.VPC
// QoSClass, geniectl vpc create --qos-class; the agent applies it, as it
// reads the VPC). The limits come from the attachment's NPWG "bandwidth"
// (runtimeConfig.bandwidth for the pod's first network), then the pod's
// kubernetes.io/egress-bandwidth and ingress-bandwidth annotations (CNI_ARGS
// GENIE_EGRESS_BANDWIDTH and GENIE_INGRESS_BANDWIDTH). Sources.Resolve
// merges them; a bad value is an error naming its key.
//
// A limit counts the pod's IPv4 packets, every GSO segment's headers
// included: what the pod's own interface would count, minus Ethernet. TCP
// goodput through a limit R is about MSS/MTU of R (0.964 R at MTU 1450).
//
// # Egress: the class and the HTB tree
//
// The agent writes the class, and the minor of the pod's own HTB class when
// it has an egress limit, into lxc_info.flags (bpf/lib/qos.h). For a packet
// it encapsulates toward another node, from_pod sets skb->priority to an
// HTB classid of the uplink's root qdisc (1:10 high, 1:20 normal, 1:30 low,
// or the pod's 1:100-1:fff) and marks the outer DSCP (EF, CS0, CS1), so the
// underlay can honour the class too. skb->priority survives bpf_redirect
// (IP forwarding would reset it), and HTB picks the class straight from it:
// no filter runs.
//
// The Tree is the HTB on the uplink's egress: root 1:, inner 1:1 at the
// link rate, a leaf per class with rate = weight, ceil = link, its prio and
// an explicit 64 KiB quantum (HTB shares by quantum; smaller than a GSO
// packet it is unfair), and pod classes whose ceil is the pod's limit.
// Unclassified traffic (the node's own, pods without a class) goes to
// normal's leaf. HTB needs the link rate: the agent installs the tree only
// when given one (--qos-uplink-rate); without it classes only mark DSCP and
// skb->priority, nothing is enforced on the node, and egress limits are
// refused. HTB counts the encapsulated frame, 64 bytes more per packet
// than the pod's IP packet (WireOverhead), and its overhead option cannot
// subtract: a pod class's ceil is the limit scaled by (mtu+64)/mtu
// (WireRate), exact for full-size packets. Classes of attachments that no
// longer exist (a crash between creating one and recording it) are pruned
// when the agent starts (Tree.Prune).
//
// # Ingress: a policer in BPF
//
// Traffic toward a pod is delivered by bpf_redirect_peer, from from_pod
// (a same-node sender) or from_uplink (after decapsulation), and meets no
// qdisc, so HTB cannot shape it. An ingress limit is a token bucket in BPF
// (bpf/lib/qos.h qos_ingress, map genie_qos_ingress keyed by the pod's host
// veth), checked at both delivery points: a packet over the limit is
// dropped and counted (drop reason QOS_INGRESS, and per pod). It is one
// bucket per pod shared by every CPU, under a bpf_spin_lock, so the limit
// holds however many CPUs deliver to the pod; per-CPU buckets would split
// the rate between CPUs and give a single flow (one RX queue) a fraction.
// A policer drops instead of queueing, and TCP answers the loss of a
// window's tail with a retransmission timeout (at least 200 ms): the burst
// is 250 ms of the rate by default (IngressBurst; the NPWG ingressBurst
// overrides it), never under two 64 KiB GSO packets. With a 20 ms burst
// TCP got a quarter of the rate (BENCHMARKS.md §8).
//
// # What is governed
//
// The class and the egress limit govern what leaves through the uplink:
// traffic to pods on other nodes. Same-node pod-to-pod traffic never meets
// a qdisc: it is neither prioritised nor egress-limited (it does not
// contend for the uplink either; it shares the CPU). The ingress limit
// governs everything delivered to the pod, from its own node or another.
//
// # Observability
//
// Collector exports the tree's per-class bytes, packets, drops and
// overlimits; the agent exports its attachments by class and the ingress
// policers' bytes and packets passed and dropped by class. Each endpoint's
// effective class and limits are on its store record (vpc.Endpoint.QoS),
// which geniectl status and the sandbox's pod list show.
package qos
