/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet access helpers shared by the tc programs. */
#pragma once

#include "common.h"

/* skb_ensure makes the first len bytes of the skb linear so direct packet
 * access can read them. Returns 0 if the packet is shorter than len. Frames
 * built by the stack already have their headers linear, so the pull is the
 * rare path. The caller must reload data/data_end afterwards. */
__inline int skb_ensure(struct __sk_buff *skb, __u32 len)
{
	if ((void *)(long)skb->data + len <= (void *)(long)skb->data_end)
		return 1;
	if (skb->len < len)
		return 0;
	if (bpf_skb_pull_data(skb, len))
		return 0;
	return (void *)(long)skb->data + len <= (void *)(long)skb->data_end;
}

/* ipv4_csum computes the header checksum of a 20-byte IPv4 header whose
 * check field is zero. hdr must be 2-byte aligned. */
__inline __u16 ipv4_csum(const void *hdr)
{
	const __u16 *p = hdr;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += p[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* l2_rewrite sets the Ethernet header of a packet delivered to a pod: from
 * the virtual gateway to the pod. */
__inline int l2_rewrite(struct __sk_buff *skb, const __u8 *dst, const __u8 *src)
{
	struct ethhdr eth;

	mac_copy(eth.h_dest, dst);
	mac_copy(eth.h_source, src);
	eth.h_proto = bpf_htons(ETH_P_IP);
	return bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0);
}
