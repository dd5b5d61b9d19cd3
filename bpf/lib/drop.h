/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Drop reasons and the per-CPU drop counter.
 *
 * Keep in sync with pkg/datapath/drops.go: the Go DropReason is the absolute
 * value of the code and the index into genie_drops. Every drop path calls
 * drop_skb()/drop_xdp() so no packet disappears uncounted. drop_skb also
 * feeds drop tracing (lib/trace.h); the XDP prefilter's drops are counted,
 * not traced.
 */
#pragma once

#include "common.h"
#include "maps.h"
#include "trace.h"

#define DROP_TRUNCATED		-1	/* short frame or truncated L3/L4/Geneve header */
#define DROP_UNKNOWN_ENDPOINT	-2	/* ingress ifindex not in genie_lxc */
#define DROP_SPOOFED_MAC	-3	/* pod's source MAC (eth or ARP sender) is not its own */
#define DROP_SPOOFED_IP		-4	/* pod's source IPv4 (IP or ARP sender) is not its own */
#define DROP_NO_ROUTE		-5	/* no endpoint {vni, dst} */
#define DROP_UNSUPPORTED_L3	-6	/* not IPv4/ARP (pod) or not IPv4 inside Geneve */
#define DROP_ARP		-7	/* ARP we do not answer: reply, probe, gratuitous, malformed */
#define DROP_NO_NEXTHOP		-8	/* no route/next hop to the remote node on the underlay (FIB lookup failed) */
#define DROP_ENCAP_FAILED	-9	/* adjust_room/store failed while encapsulating */
#define DROP_GENEVE_MALFORMED	-10	/* to our Geneve port but bad version/options/protocol/fragment */
#define DROP_UNKNOWN_VNI	-11	/* Geneve VNI without endpoints on this node */
#define DROP_FORGED		-12	/* inner src is not an endpoint of that VNI on the outer src node */
#define DROP_NOT_LOCAL		-13	/* decapsulated packet for an endpoint not on this node */
#define DROP_DECAP_FAILED	-14	/* adjust_room/store failed while decapsulating */
#define DROP_FRAG_NEEDED	-15	/* encapsulated packet exceeds the path MTU (ICMP sent back if DF) */
/* Ranges kept for features, so that codes never move once published:
 *   16-23  the endpoint directory (lib/directory.h)
 *   24-31  services and NAT (lib/lb.h, conntrack.h, nat.h)
 *   32-39  egress (lib/egress.h)
 *   40-47  QoS (lib/qos.h)
 *   48-63  free
 */
#define DROP_DIR_NO_HOLDER	-16	/* directory mode: unknown destination and no holder for its shard */
#define DROP_DIR_NOT_HELD	-17	/* a holder got a bounced packet for a record it does not hold */
#define DROP_DIR_UNTRUSTED	-18	/* bounced packet from a node that is not a holder of its shard, or a wrong origin */
#define DROP_DIR_NOT_LOCAL	-19	/* a holder's forward reached a node that does not host the destination */
#define DROP_NO_BACKEND		-24	/* service without a usable backend */
#define DROP_CT_FAILED		-25	/* conntrack insert failed (the insert-failure metric) */
#define DROP_NAT_FAILED		-26	/* checksum or store helper failed while rewriting */
#define DROP_SVC_FRAGMENT	-27	/* first IP fragment of a service flow (fragments are not load-balanced) */
#define DROP_EGRESS_NOT_SELECTED -32	/* egress destination, but no policy of the VPC selects the pod */
#define DROP_EGRESS_NO_GATEWAY	-33	/* the pod's policy has no healthy gateway */
#define DROP_EGRESS_NO_PORT	-34	/* gateway: no free SNAT port for the flow */
#define DROP_EGRESS_UNSUPPORTED	-35	/* egress of a fragment or of a protocol other than TCP/UDP/ICMP echo */
#define DROP_EGRESS_DENIED	-36	/* gateway: tunnelled to an address that is no egress destination of the VPC */
#define DROP_EGRESS_NO_ROUTE	-37	/* gateway: no route (or too big) to the outside for the SNATed packet */
#define DROP_QOS_INGRESS	-40	/* over the destination pod's ingress rate limit (lib/qos.h) */

__inline void count_drop(int reason)
{
	__u32 key = (__u32)(-reason);
	__u64 *cnt = bpf_map_lookup_elem(&genie_drops, &key);

	if (cnt)
		*cnt += 1; /* per-CPU slot: no atomic needed */
}

/* drop_skb counts a drop of skb for reason and returns the tc verdict.
 * While someone traces (geniectl trace), the packet is also reported to the
 * genie_trace ring (lib/trace.h); otherwise that costs one array lookup. */
__inline int drop_skb(struct __sk_buff *skb, int reason)
{
	count_drop(reason);
	if (trace_enabled())
		trace_drop(skb, reason);
	return TC_ACT_SHOT;
}

__inline int drop_xdp(int reason)
{
	count_drop(reason);
	return XDP_DROP;
}

/* report_miss tells the agent that a pod sent to {vni, ip}, which has no
 * endpoint entry, so it can resolve the address on demand. At most one
 * report per address per MISS_INTERVAL_NS; a full ring buffer loses reports,
 * never packets (they are dropped and counted as NO_ROUTE anyway). */
__inline void report_miss(const struct endpoint_key *key)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 *last = bpf_map_lookup_elem(&genie_miss_seen, key);

	if (last && now - *last < MISS_INTERVAL_NS)
		return;
	bpf_map_update_elem(&genie_miss_seen, key, &now, BPF_ANY);
	bpf_ringbuf_output(&genie_misses, (void *)key, sizeof(*key), 0);
}
