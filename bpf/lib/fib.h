/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The next hop of an encapsulated packet, from the kernel's FIB.
 *
 * The outer packet leaves through whatever the node's routing table says for
 * the peer's underlay address: a directly connected peer, or a router on a
 * routed underlay. bpf_fib_lookup gives the egress device, both MACs when the
 * neighbour is resolved, and checks the outer packet against the path MTU,
 * which includes the kernel's PMTU exceptions for the peer (learnt from the
 * routers' ICMP "fragmentation needed", see pkg/datapath/pmtu.go). When the
 * neighbour is not resolved (yet), bpf_redirect_neigh hands the packet to the
 * neighbour subsystem, which resolves it and queues the packet meanwhile.
 */
#pragma once

#include "common.h"
#include "drop.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Where an encapsulated packet goes, as found by underlay_route. */
struct nexthop {
	__u32 ifindex;		/* egress device */
	__be32 gw;		/* next hop address (gateway, or the peer itself) */
	__u8 dmac[ETH_ALEN];	/* valid if resolved */
	__u8 smac[ETH_ALEN];	/* valid if resolved */
	__u16 mtu;		/* path MTU (set when ROUTE_TOO_BIG) */
	__u8 resolved;		/* neighbour known: plain bpf_redirect */
	__u8 pad;
};

#define ROUTE_OK	0
#define ROUTE_TOO_BIG	1

/* underlay_route finds the next hop towards peer for an outer IPv4 packet of
 * tot_len bytes (for GSO packets: of one segment), sent from local out of the
 * uplink. Returns ROUTE_OK, ROUTE_TOO_BIG (nh->mtu is the path MTU) or
 * DROP_NO_NEXTHOP (no route, unreachable, blackhole, ...). */
__inline int underlay_route(struct __sk_buff *skb, __be32 local, __be32 peer,
			    __u32 uplink, __u16 tot_len, struct nexthop *nh)
{
	struct bpf_fib_lookup p = {};
	int rc;

	p.family = AF_INET;
	p.l4_protocol = IPPROTO_UDP;
	p.dport = bpf_htons(GENEVE_PORT);
	p.tot_len = tot_len;
	p.ifindex = uplink;
	p.ipv4_src = local;
	p.ipv4_dst = peer;
	/* OUTPUT: a route lookup as for a locally sent packet (iif lo), with
	 * the uplink as oif, which keeps the outer packet on the underlay
	 * device. The kernel still wants IPv4 forwarding enabled on that
	 * device (FWD_DISABLED otherwise): AttachUplink turns it on. */
	rc = bpf_fib_lookup(skb, &p, sizeof(p), BPF_FIB_LOOKUP_OUTPUT);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		nh->resolved = 1;
		mac_copy(nh->dmac, p.dmac);
		mac_copy(nh->smac, p.smac);
		break;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		nh->resolved = 0;
		break;
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		nh->mtu = p.mtu_result;
		return ROUTE_TOO_BIG;
	default:
		return DROP_NO_NEXTHOP;
	}
	nh->ifindex = p.ifindex;
	nh->gw = p.ipv4_dst;	/* the gateway if the route has one */
	return ROUTE_OK;
}

/* nexthop_redirect sends the (encapsulated) packet to nh. */
__inline int nexthop_redirect(const struct nexthop *nh)
{
	struct bpf_redir_neigh rn = {};

	if (nh->resolved)
		return bpf_redirect(nh->ifindex, 0);
	rn.nh_family = AF_INET;
	rn.ipv4_nh = nh->gw;
	return bpf_redirect_neigh(nh->ifindex, &rn, sizeof(rn), 0);
}
