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

/* trace_fill fills ev, reserved for skb dropped for reason, reading the
 * headers through w (never onto its stack). A function of its own, so
 * struct trace_event is in the object's BTF and bpf2go generates its Go
 * twin (datapath.lxcTraceEvent), and so that few values live across its
 * helper calls: it and trace_drop need no stack but trace_drop's key. */
static __attribute__((noinline)) void trace_fill(struct __sk_buff *skb, struct trace_event *ev,
						 struct trace_scratch *w, int reason)
{
	struct lxc_info *ep;
	__u32 off = 0;

	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_ns();
	ev->ifindex = skb->ingress_ifindex;
	ev->len = skb->len;
	ev->reason = (__u8)-reason;
	ep = bpf_map_lookup_elem(&genie_lxc, &ev->ifindex);
	if (ep) {
		ev->vni = ep->vni;
		ev->flags |= TRACE_F_POD;
	}
	if (bpf_skb_load_bytes(skb, 0, w->eth, ETH_HLEN))
		return;
	if (!(ev->flags & TRACE_F_POD) && ((struct ethhdr *)w->eth)->h_proto == bpf_htons(ETH_P_IP) &&
	    !bpf_skb_load_bytes(skb, ETH_HLEN, w->ip, sizeof(struct iphdr)) &&
	    ((struct iphdr *)w->ip)->version == 4 && ((struct iphdr *)w->ip)->ihl == 5 &&
	    ((struct iphdr *)w->ip)->protocol == IPPROTO_UDP &&
	    !(((struct iphdr *)w->ip)->frag_off & bpf_htons(IP_MF | IP_OFFSET)) &&
	    !bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct iphdr), w->hdr, sizeof(w->hdr)) &&
	    w->hdr[2] == (GENEVE_PORT >> 8) && w->hdr[3] == (GENEVE_PORT & 0xff)) {
		/* Geneve: VNI at 4..6 of its header, options 4 * (ver_optlen & 63). */
		ev->flags |= TRACE_F_GENEVE;
		ev->outer_saddr = ((struct iphdr *)w->ip)->saddr;
		ev->vni = ((__u32)w->hdr[12] << 16) | ((__u32)w->hdr[13] << 8) | w->hdr[14];
		off = ETH_HLEN + sizeof(struct iphdr) + sizeof(w->hdr) + (w->hdr[8] & 0x3f) * 4;
		if (bpf_skb_load_bytes(skb, off, w->eth, ETH_HLEN))
			return;
	}
	__builtin_memcpy(ev->smac, ((struct ethhdr *)w->eth)->h_source, ETH_ALEN);
	__builtin_memcpy(ev->dmac, ((struct ethhdr *)w->eth)->h_dest, ETH_ALEN);
	ev->eth_proto = bpf_ntohs(((struct ethhdr *)w->eth)->h_proto);
	off += ETH_HLEN;

	if (ev->eth_proto == ETH_P_ARP) {
		/* sender protocol address at 14, target at 24 of the ARP body */
		if (!bpf_skb_load_bytes(skb, off + 14, &w->arp[0], 4) &&
		    !bpf_skb_load_bytes(skb, off + 24, &w->arp[1], 4)) {
			ev->saddr = w->arp[0];
			ev->daddr = w->arp[1];
		}
		return;
	}
	if (ev->eth_proto != ETH_P_IP || bpf_skb_load_bytes(skb, off, w->ip, sizeof(struct iphdr)) ||
	    ((struct iphdr *)w->ip)->version != 4)
		return;
	ev->saddr = ((struct iphdr *)w->ip)->saddr;
	ev->daddr = ((struct iphdr *)w->ip)->daddr;
	ev->proto = ((struct iphdr *)w->ip)->protocol;
	if (((struct iphdr *)w->ip)->frag_off & bpf_htons(IP_OFFSET))
		return;		/* later fragment: no L4 header */
	off += ((struct iphdr *)w->ip)->ihl * 4;
	switch (ev->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		if (bpf_skb_load_bytes(skb, off, w->l4, 4))
			return;
		__builtin_memcpy(&ev->sport, &w->l4[0], 2);
		__builtin_memcpy(&ev->dport, &w->l4[2], 2);
		ev->flags |= TRACE_F_L4;
		break;
	case IPPROTO_ICMP:
		if (bpf_skb_load_bytes(skb, off, w->l4, 2))
			return;
		ev->sport = w->l4[0];	/* type */
		ev->dport = w->l4[1];	/* code */
		ev->flags |= TRACE_F_L4;
		break;
	}
}

/* trace_drop reports skb, dropped for reason (negative DROP_*), to the
 * genie_trace ring. Global (not inlined, verified once); always returns 0.
 * It runs at the end of the deepest call chain (from_pod -> an egress hook
 * -> drop_skb), so it and trace_fill keep their frames to a few bytes:
 * the headers are read into a per-CPU scratch entry (genie_trace_scratch),
 * and trace_fill's arguments are all that lives across its helper calls. */
__attribute__((noinline)) int trace_drop(struct __sk_buff *skb, int reason)
{
	__u32 zero = 0;
	struct trace_scratch *w = bpf_map_lookup_elem(&genie_trace_scratch, &zero);
	struct trace_event *ev;
	struct trace_state *st;

	if (!w)
		return 0;
	ev = bpf_ringbuf_reserve(&genie_trace, sizeof(*ev), 0);
	if (!ev) {
		st = bpf_map_lookup_elem(&genie_trace_state, &zero);
		if (st)
			__sync_fetch_and_add(&st->lost, 1);
		return 0;
	}
	trace_fill(skb, ev, w, reason);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}
