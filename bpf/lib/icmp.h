/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ICMP "fragmentation needed" (RFC 792, RFC 1191) back to a pod whose packet
 * does not fit the underlay path once encapsulated. */
#pragma once

#include "common.h"
#include "maps.h"
#include "drop.h"
#include "eth.h"

#define ICMP_DEST_UNREACH_T	3
#define ICMP_FRAG_NEEDED_C	4
/* The offending packet's IPv4 header (no options) and its first 8 bytes. */
#define ICMP_QUOTE_LEN		(sizeof(struct iphdr) + 8)

struct icmp_frag_frame {
	struct ethhdr eth;
	struct iphdr ip;
	__u8 type;
	__u8 code;
	__sum16 check;
	__be16 unused;
	__be16 mtu;
	__u8 quote[ICMP_QUOTE_LEN];
} __attribute__((packed));

/* icmp_csum is the checksum of the ICMP message (header and quote) at p,
 * which must be 2-byte aligned. */
__inline __u16 icmp_csum(const __u16 *p)
{
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < (8 + ICMP_QUOTE_LEN) / 2; i++)
		sum += p[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* icmp_frag_needed turns skb, an IPv4 packet that pod ep (behind ifindex)
 * sent and that is too big for the path (path_mtu, outer), into an ICMP
 * "fragmentation needed" with the pod's MTU for that path, and sends it back
 * into the pod, as a router on the path would. The packet itself is dropped
 * and counted as FRAG_NEEDED either way; only a DF packet without IP options
 * gets the ICMP (we cannot fragment, and the pod must lower its MSS or PMTU
 * for TCP not to blackhole). The ICMP comes from the packet's destination:
 * the virtual gateway has no address of its own here, and the pod's stack
 * only needs the quoted header to find the socket. */
__inline int icmp_frag_needed(struct __sk_buff *skb, const struct lxc_info *ep,
			      __u32 ifindex, const struct node_config *cfg,
			      __u16 path_mtu)
{
	struct icmp_frag_frame f __attribute__((aligned(8)));
	void *data, *data_end;
	struct iphdr *ip;

	count_drop(DROP_FRAG_NEEDED);
	if (!skb_ensure(skb, ETH_HLEN + ICMP_QUOTE_LEN))
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + ETH_HLEN;
	if ((void *)ip + ICMP_QUOTE_LEN > data_end)
		return TC_ACT_SHOT;
	if (ip->ihl != 5 || !(ip->frag_off & bpf_htons(IP_DF)) ||
	    path_mtu <= ENCAP_OVERHEAD)
		return TC_ACT_SHOT;

	__builtin_memcpy(f.quote, ip, ICMP_QUOTE_LEN);
	mac_copy(f.eth.h_dest, ep->mac);
	mac_copy(f.eth.h_source, cfg->gw_mac);
	f.eth.h_proto = bpf_htons(ETH_P_IP);
	f.ip.version = 4;
	f.ip.ihl = 5;
	f.ip.tos = 0xc0;	/* internetwork control, as Linux sends ICMP errors */
	f.ip.tot_len = bpf_htons(sizeof(f) - ETH_HLEN);
	f.ip.id = 0;
	f.ip.frag_off = 0;
	f.ip.ttl = 64;
	f.ip.protocol = IPPROTO_ICMP;
	f.ip.check = 0;
	f.ip.saddr = ip->daddr;
	f.ip.daddr = ip->saddr;
	f.ip.check = ipv4_csum((__u8 *)&f + ETH_HLEN);
	f.type = ICMP_DEST_UNREACH_T;
	f.code = ICMP_FRAG_NEEDED_C;
	f.check = 0;
	f.unused = 0;
	f.mtu = bpf_htons(path_mtu - ENCAP_OVERHEAD);
	f.check = icmp_csum((__u16 *)&f.type);

	/* Trimming also ends GSO: the result is one small packet. */
	if (bpf_skb_change_tail(skb, sizeof(f), 0))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, 0, &f, sizeof(f), 0))
		return TC_ACT_SHOT;
	return bpf_redirect(ifindex, 0);
}
