/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The virtual L3 gateway's ARP responder. */
#pragma once

#include "common.h"
#include "maps.h"
#include "drop.h"

#ifndef ETH_P_ARP
#define ETH_P_ARP 0x0806
#endif
#define ARPOP_REQUEST_BE bpf_htons(1)
#define ARPOP_REPLY_BE bpf_htons(2)

/* ARP for Ethernet/IPv4 (RFC 826), as it follows the Ethernet header. */
struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__be32 spa;
	__u8 tha[ETH_ALEN];
	__be32 tpa;
} __attribute__((packed));

struct arp_frame {
	struct ethhdr eth;
	struct arp_eth_ipv4 arp;
} __attribute__((packed));

/* arp_respond answers an ARP request of endpoint ep (behind ifindex) for any
 * target address with the gateway MAC: the pod routes everything through the
 * gateway and nothing is ever flooded. The reply is written in place and sent
 * back out of the same veth, towards the pod. */
__inline int arp_respond(struct __sk_buff *skb, const struct lxc_info *ep,
			 __u32 ifindex, const struct node_config *cfg)
{
	void *data, *data_end;
	struct arp_frame *f;
	struct arp_frame r;
	__be32 tpa;

	if (!skb_ensure(skb, sizeof(*f)))
		return drop_skb(skb, DROP_TRUNCATED);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	f = data;
	if ((void *)(f + 1) > data_end)
		return drop_skb(skb, DROP_TRUNCATED);

	if (f->arp.htype != bpf_htons(1) || f->arp.ptype != bpf_htons(ETH_P_IP) ||
	    f->arp.hlen != ETH_ALEN || f->arp.plen != 4 || f->arp.op != ARPOP_REQUEST_BE)
		return drop_skb(skb, DROP_ARP);
	if (!mac_eq(f->arp.sha, ep->mac))
		return drop_skb(skb, DROP_SPOOFED_MAC);
	/* Probes (sender 0.0.0.0, duplicate address detection) and gratuitous
	 * ARP (target == sender) must not be answered: the gateway would claim
	 * the pod's own address. */
	if (f->arp.spa == 0 || f->arp.tpa == f->arp.spa)
		return drop_skb(skb, DROP_ARP);
	if (f->arp.spa != ep->ip)
		return drop_skb(skb, DROP_SPOOFED_IP);
	tpa = f->arp.tpa;

	mac_copy(r.eth.h_dest, ep->mac);
	mac_copy(r.eth.h_source, cfg->gw_mac);
	r.eth.h_proto = bpf_htons(ETH_P_ARP);
	r.arp.htype = bpf_htons(1);
	r.arp.ptype = bpf_htons(ETH_P_IP);
	r.arp.hlen = ETH_ALEN;
	r.arp.plen = 4;
	r.arp.op = ARPOP_REPLY_BE;
	mac_copy(r.arp.sha, cfg->gw_mac);
	r.arp.spa = tpa;
	mac_copy(r.arp.tha, ep->mac);
	r.arp.tpa = ep->ip;
	if (bpf_skb_store_bytes(skb, 0, &r, sizeof(r), 0))
		return drop_skb(skb, DROP_ARP);
	return bpf_redirect(ifindex, 0);
}
