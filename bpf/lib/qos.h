/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* QoS: from_pod marks what it sends to the uplink with the pod's class, and
 * qos_ingress polices what is delivered into a pod with an ingress limit.
 *
 * lxc_info.flags (the agent writes it, pkg/datapath qos.go; keep in sync):
 *   bits 0-1   the class: 0 none (QoS off for this pod), 1 high, 2 normal, 3 low
 *   bits 4-15  the minor of the pod's own HTB class on the uplink (a per-pod
 *              egress rate limit); 0: the class's shared leaf
 *
 * A classified packet leaving through the uplink gets
 *   skb->priority = 1:<minor>, an HTB classid on the uplink's root qdisc 1:
 *                   (1:10 high, 1:20 normal, 1:30 low, or the pod's own), which
 *                   HTB honours directly (no filter); it survives bpf_redirect,
 *                   unlike IP forwarding, which resets it from the TOS;
 *   outer DSCP     = EF (46) high, CS0 (0) normal, CS1 (8) low, so that the
 *                   underlay can honour the class too; the inner ECN bits are
 *                   copied. An unclassified packet's outer TOS is the inner one.
 */
#pragma once

#include "common.h"
#include "maps.h"
#include "drop.h"

#define QOS_CLASS_MASK	0x3
#define QOS_NONE	0
#define QOS_HIGH	1
#define QOS_NORMAL	2
#define QOS_LOW		3
#define QOS_MINOR_SHIFT	4

#define QOS_HTB_MAJOR	1
#define QOS_MINOR_HIGH	0x10
#define QOS_MINOR_NORMAL 0x20
#define QOS_MINOR_LOW	0x30

#define DSCP_EF		46
#define DSCP_CS0	0
#define DSCP_CS1	8

/* qos_mark sets skb->priority for a packet of a pod with lxc_info.flags
 * flags and returns the outer TOS byte for inner TOS tos. */
__inline __u8 qos_mark(struct __sk_buff *skb, __u16 flags, __u8 tos)
{
	__u32 minor, dscp;

	switch (flags & QOS_CLASS_MASK) {
	case QOS_HIGH:
		minor = QOS_MINOR_HIGH;
		dscp = DSCP_EF;
		break;
	case QOS_NORMAL:
		minor = QOS_MINOR_NORMAL;
		dscp = DSCP_CS0;
		break;
	case QOS_LOW:
		minor = QOS_MINOR_LOW;
		dscp = DSCP_CS1;
		break;
	default:
		return tos;
	}
	if (flags >> QOS_MINOR_SHIFT)
		minor = flags >> QOS_MINOR_SHIFT;
	skb->priority = (QOS_HTB_MAJOR << 16) | minor;
	return (dscp << 2) | (tos & 0x3);
}

/* Ingress rate limits. Traffic toward a pod is delivered by redirect_peer
 * (from_pod for a same-node sender, from_uplink after decapsulation), which
 * meets no qdisc on the way: the limit is a policer here, in BPF, applied at
 * both delivery points. A packet over the limit is dropped and counted (the
 * sender's TCP backs off); nothing is queued.
 *
 * The bucket (maps_qos.h) is GCRA, the virtual-time form of a token bucket:
 * a packet conforms when tat, the time the bytes admitted so far drain by at
 * the rate, is at most burst_ns ahead of now; a conforming packet pushes tat
 * by its own cost, an excess one is dropped and leaves tat alone. Over any
 * interval T the pod receives at most rate * (T + burst_ns) plus one packet.
 * A packet is admitted whole even if its cost exceeds the burst, so a 64 KiB
 * GSO packet (GRO on the uplink, TSO from a same-node pod) is never starved
 * however small the limit. The agent sizes burst_ns (pkg/qos IngressBurst):
 * 250 ms of the rate by default, at least two such packets; a policer
 * drops where a qdisc would queue, and with less than a TCP retransmission
 * timeout's worth TCP gets a fraction of the rate.
 *
 * The cost is the packet's L3 bytes as they were or will be on the wire:
 * the IPv4 packet, and for a GSO packet every segment's IP and L4 headers
 * (skb->len counts them once; the segments are counted from gso_size, as
 * the decap's adjust_room zeroes gso_segs). The egress limit counts the
 * same bytes.
 *
 * One bucket per pod, shared by all CPUs, under a bpf_spin_lock: the read,
 * test and update of tat must be one step, or two CPUs delivering to the
 * pod at once both admit against the same tat and the pod gets more than
 * its rate. Per-CPU buckets would need the rate split between the CPUs, and
 * a pod whose traffic lands on one CPU (one flow: one RX queue) would get a
 * fraction of it; a lock-free compare-and-swap needs BPF_ATOMIC (-mcpu=v3),
 * which the build does not use. The critical section is a few instructions
 * (no helper call inside), and a GSO packet pays it once for up to about
 * 45 segments.
 */

/* qos_l3_bytes is what skb (an Ethernet frame of IPv4) costs: its L3 bytes,
 * with the headers of every GSO segment; *segs is its segment count. The
 * count comes from gso_size, not gso_segs: bpf_skb_adjust_room (the decap)
 * zeroes gso_segs, and only segmentation recomputes it. */
__inline __u64 qos_l3_bytes(struct __sk_buff *skb, __u32 *segs)
{
	__u32 gso = skb->gso_size, len = skb->len, hdr, payload;
	__u8 b;

	*segs = 1;
	if (len <= ETH_HLEN)
		return 0;
	len -= ETH_HLEN;
	if (!gso)
		return len;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &b, 1))
		return len;
	hdr = (b & 0xf) * 4;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 9, &b, 1))
		return len;
	if (b == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN + hdr + 12, &b, 1))
			return len;
		hdr += (b >> 4) * 4;
	} else if (b == IPPROTO_UDP) {
		hdr += sizeof(struct udphdr);
	}
	if (len <= hdr)
		return len;
	payload = len - hdr;
	*segs = (payload + gso - 1) / gso;
	return len + (__u64)(*segs - 1) * hdr;
}

/* qos_ingress polices skb, about to be delivered to the pod behind host veth
 * ifindex: 0 to deliver it, DROP_QOS_INGRESS when it exceeds the pod's
 * ingress limit. A pod without a limit costs one hash lookup. */
__inline int qos_ingress(struct __sk_buff *skb, __u32 ifindex)
{
	struct qos_bucket *b;
	__u64 bytes, cost, now, tat;
	__u32 segs;
	int ret = 0;

	b = bpf_map_lookup_elem(&genie_qos_ingress, &ifindex);
	if (!b)
		return 0;
	if (!b->rate)
		return 0;
	bytes = qos_l3_bytes(skb, &segs);
	cost = bytes * 8 * 1000000000ULL / b->rate;
	now = bpf_ktime_get_ns();

	bpf_spin_lock(&b->lock);
	tat = b->tat;
	if (tat < now)
		tat = now;
	if (tat - now > b->burst_ns) {
		b->drop_bytes += bytes;
		b->drop_pkts += segs;
		ret = DROP_QOS_INGRESS;
	} else {
		b->tat = tat + cost;
		b->pass_bytes += bytes;
		b->pass_pkts += segs;
	}
	bpf_spin_unlock(&b->lock);
	return ret;
}
