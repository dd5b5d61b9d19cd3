/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Drop tracing: while the agent has a trace client (genie_trace_state
 * .enabled), every drop_skb() also reports the packet to the genie_trace
 * ring buffer. Off, the drop path pays one array lookup and a branch
 * (trace_enabled, inlined); the parsing below is one global function per
 * object, verified once, so the ~30 drop sites do not grow the program.
 *
 * The packet is read with bpf_skb_load_bytes: it may be non-linear or half
 * rewritten (a failed encap or decap), and the drop path must never fail.
 * Pod side (ingress ifindex in genie_lxc): the VNI is the pod's. Uplink
 * side: Geneve to our port gives the VNI, the outer source, and the inner
 * frame is parsed; anything else is parsed as it is. */
#pragma once

#include "common.h"
#include "maps.h"

#ifndef ETH_P_ARP
#define ETH_P_ARP 0x0806
#endif

__inline int trace_enabled(void)
{
	__u32 zero = 0;
	struct trace_state *st = bpf_map_lookup_elem(&genie_trace_state, &zero);

	return st && st->enabled;
}

/* trace_l3 fills ev from the IPv4 or ARP packet after the Ethernet header
 * at off. A function of its own, so struct trace_event is in the object's
 * BTF and bpf2go generates its Go twin (datapath.lxcTraceEvent). */
static __attribute__((noinline)) void trace_l3(struct __sk_buff *skb, struct trace_event *ev, __u32 off)
{
	struct iphdr ip;
	__u8 l4[4];
	__be32 arp[2];

	if (ev->eth_proto == ETH_P_ARP) {
		/* sender protocol address at 14, target at 24 of the ARP body */
		if (!bpf_skb_load_bytes(skb, off + 14, &arp[0], 4) &&
		    !bpf_skb_load_bytes(skb, off + 24, &arp[1], 4)) {
			ev->saddr = arp[0];
			ev->daddr = arp[1];
		}
		return;
	}
	if (ev->eth_proto != ETH_P_IP || bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) || ip.version != 4)
		return;
	ev->saddr = ip.saddr;
	ev->daddr = ip.daddr;
	ev->proto = ip.protocol;
	if (ip.frag_off & bpf_htons(IP_OFFSET))
		return;		/* later fragment: no L4 header */
	off += ip.ihl * 4;
	switch (ip.protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		if (bpf_skb_load_bytes(skb, off, l4, 4))
			return;
		__builtin_memcpy(&ev->sport, &l4[0], 2);
		__builtin_memcpy(&ev->dport, &l4[2], 2);
		ev->flags |= TRACE_F_L4;
		break;
	case IPPROTO_ICMP:
		if (bpf_skb_load_bytes(skb, off, l4, 2))
			return;
		ev->sport = l4[0];	/* type */
		ev->dport = l4[1];	/* code */
		ev->flags |= TRACE_F_L4;
		break;
	}
}

/* trace_drop reports skb, dropped for reason (negative DROP_*), to the
 * genie_trace ring. Global (not inlined, verified once); always returns 0. */
__attribute__((noinline)) int trace_drop(struct __sk_buff *skb, int reason)
{
	__u32 zero = 0, ifindex = skb->ingress_ifindex, off = 0;
	struct trace_event *ev;
	struct trace_state *st;
	struct lxc_info *ep;
	struct ethhdr eth;
	struct iphdr ip;
	__u8 hdr[16];	/* UDP + Geneve */

	ev = bpf_ringbuf_reserve(&genie_trace, sizeof(*ev), 0);
	if (!ev) {
		st = bpf_map_lookup_elem(&genie_trace_state, &zero);
		if (st)
			__sync_fetch_and_add(&st->lost, 1);
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_ns();
	ev->ifindex = ifindex;
	ev->len = skb->len;
	ev->reason = (__u8)-reason;
	ep = bpf_map_lookup_elem(&genie_lxc, &ifindex);
	if (ep) {
		ev->vni = ep->vni;
		ev->flags |= TRACE_F_POD;
	}
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)))
		goto out;
	if (!ep && eth.h_proto == bpf_htons(ETH_P_IP) &&
	    !bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) &&
	    ip.version == 4 && ip.ihl == 5 && ip.protocol == IPPROTO_UDP &&
	    !(ip.frag_off & bpf_htons(IP_MF | IP_OFFSET)) &&
	    !bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(ip), hdr, sizeof(hdr)) &&
	    hdr[2] == (GENEVE_PORT >> 8) && hdr[3] == (GENEVE_PORT & 0xff)) {
		/* Geneve: VNI at 4..6 of its header, options 4 * (ver_optlen & 63). */
		ev->flags |= TRACE_F_GENEVE;
		ev->outer_saddr = ip.saddr;
		ev->vni = ((__u32)hdr[12] << 16) | ((__u32)hdr[13] << 8) | hdr[14];
		off = ETH_HLEN + sizeof(ip) + sizeof(hdr) + (hdr[8] & 0x3f) * 4;
		if (bpf_skb_load_bytes(skb, off, &eth, sizeof(eth)))
			goto out;
	}
	__builtin_memcpy(ev->smac, eth.h_source, ETH_ALEN);
	__builtin_memcpy(ev->dmac, eth.h_dest, ETH_ALEN);
	ev->eth_proto = bpf_ntohs(eth.h_proto);
	trace_l3(skb, ev, off + ETH_HLEN);
out:
	bpf_ringbuf_submit(ev, 0);
	return 0;
}
