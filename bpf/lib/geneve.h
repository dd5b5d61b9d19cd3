/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Geneve (RFC 8926) encapsulation and outer header classification.
 *
 * Wire format we send (EncapOverhead = 50 bytes on top of the inner IPv4):
 *   outer eth (next hop, from the FIB) | IPv4 (20, DF, TTL 64) | UDP (8, csum 0)
 *   | Geneve (8: ver 0, no options, proto 0x6558, VNI) | inner eth (14) | inner IPv4
 */
#pragma once

#include "common.h"
#include "maps.h"
#include "drop.h"
#include "eth.h"
#include "fib.h"

struct genevehdr {
	__u8 ver_optlen;	/* ver:2 (0), opt_len:6 (in 4-byte words) */
	__u8 flags;		/* O:1 C:1 rsvd:6 */
	__be16 proto;		/* ETH_P_TEB */
	__u8 vni[3];
	__u8 rsvd;
};

#define GENEVE_F_OAM 0x80

#define ENCAP_LEN (sizeof(struct iphdr) + sizeof(struct udphdr) + \
		   sizeof(struct genevehdr) + sizeof(struct ethhdr))
_Static_assert(ENCAP_LEN == ENCAP_OVERHEAD, "encap header length");

/* Everything written after bpf_skb_adjust_room, in one store. */
struct encap_hdrs {
	struct ethhdr oeth;
	struct iphdr oip;
	struct udphdr udp;
	struct genevehdr gnv;
	struct ethhdr ieth;
} __attribute__((packed));

/* FIXED_GSO: keep gso_size. The pod MTU is the uplink MTU - EncapOverhead,
 * so its TCP segments already fit once encapsulated; and for UDP GSO the
 * gso_size is the application's datagram size, which must not change (the
 * e2e test sends UDP_SEGMENT writes through the tunnel). */
#define ENCAP_FLAGS (BPF_F_ADJ_ROOM_FIXED_GSO | \
		     BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | \
		     BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN))

/* flow_hash is a cheap per-flow hash of an IPv4 packet for the outer UDP
 * source port: addresses, protocol and, for an unfragmented TCP/UDP/SCTP
 * packet whose ports are in the linear data, the ports. It only has to be
 * stable per flow and spread flows; the kernel's flow dissector
 * (bpf_get_hash_recalc) did the same job for ~70 ns a packet. */
__inline __u32 flow_hash(const struct iphdr *ip, void *data_end)
{
	__u32 h = ip->saddr ^ ((ip->daddr << 16) | (ip->daddr >> 16)) ^ ip->protocol;
	const __u32 *ports = (const void *)ip + ip->ihl * 4;

	if ((ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP ||
	     ip->protocol == IPPROTO_SCTP) &&
	    !(ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) &&
	    (void *)(ports + 1) <= data_end)
		h ^= *ports * 0x9e3779b1;
	/* murmur3 finaliser: every input bit reaches the low 14 bits. */
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* encap_seg_len is the outer IPv4 length of the packet in skb (Ethernet +
 * IPv4 header at ip) once encapsulated; for a GSO packet, of one of the
 * segments it will be cut into (what must fit the path MTU): the inner
 * headers plus gso_size, like skb_gso_validate_network_len. */
__inline __u32 encap_seg_len(struct __sk_buff *skb, const struct iphdr *ip,
			     void *data_end)
{
	const __u8 *l4 = (const void *)ip + ip->ihl * 4;
	__u32 gso = skb->gso_size, l4len = sizeof(struct udphdr);

	if (!gso)
		return skb->len - ETH_HLEN + ENCAP_OVERHEAD;
	if (ip->protocol == IPPROTO_TCP) {
		l4len = 20;	/* doff, if the header is linear (it is, from a socket) */
		if ((void *)(l4 + 13) <= data_end)
			l4len = (l4[12] >> 4) * 4;
	}
	return ENCAP_OVERHEAD + ip->ihl * 4 + l4len + gso;
}

/* geneve_encap wraps the IPv4 packet in skb (starting with an Ethernet
 * header) for remote endpoint dst of VPC vni and sends it to next hop nh
 * (underlay_route). hash is the inner flow's hash (skb->hash, or flow_hash
 * for a hashless packet), read before the headers move. Returns a tc
 * verdict; failures are counted drops. GSO and checksum offload stay intact:
 * adjust_room with the ENCAP flags marks the skb as a UDP tunnel so the
 * uplink segments it (and fills the inner checksums) correctly. */
__inline int geneve_encap(struct __sk_buff *skb, const struct node_config *cfg,
			  __u32 vni, const struct endpoint_info *dst, __u8 tos,
			  __u32 hash, const struct nexthop *nh)
{
	struct encap_hdrs h;
	__u32 len;

	if (bpf_skb_adjust_room(skb, ENCAP_LEN, BPF_ADJ_ROOM_MAC, ENCAP_FLAGS))
		return drop_skb(skb, DROP_ENCAP_FAILED);
	len = skb->len;

	/* Unresolved: zeros, bpf_redirect_neigh writes the real header. */
	mac_copy(h.oeth.h_dest, nh->dmac);
	mac_copy(h.oeth.h_source, nh->smac);
	h.oeth.h_proto = bpf_htons(ETH_P_IP);

	h.oip.version = 4;
	h.oip.ihl = 5;
	h.oip.tos = tos;
	h.oip.tot_len = bpf_htons(len - ETH_HLEN);
	h.oip.id = 0;
	h.oip.frag_off = bpf_htons(IP_DF);
	h.oip.ttl = 64;
	h.oip.protocol = IPPROTO_UDP;
	h.oip.check = 0;
	h.oip.saddr = cfg->underlay_ip;
	h.oip.daddr = dst->node_ip;
	/* oip sits at offset 14 of an 8-aligned stack struct: 2-byte aligned. */
	h.oip.check = ipv4_csum((__u8 *)&h + ETH_HLEN);

	h.udp.source = bpf_htons(49152 | (hash & 0x3fff));
	h.udp.dest = bpf_htons(GENEVE_PORT);
	h.udp.len = bpf_htons(len - ETH_HLEN - sizeof(struct iphdr));
	h.udp.check = 0;

	h.gnv.ver_optlen = 0;
	h.gnv.flags = 0;
	h.gnv.proto = bpf_htons(ETH_P_TEB);
	h.gnv.vni[0] = vni >> 16;
	h.gnv.vni[1] = vni >> 8;
	h.gnv.vni[2] = vni;
	h.gnv.rsvd = 0;

	mac_copy(h.ieth.h_dest, dst->mac);
	mac_copy(h.ieth.h_source, cfg->gw_mac);
	h.ieth.h_proto = bpf_htons(ETH_P_IP);

	if (bpf_skb_store_bytes(skb, 0, &h, sizeof(h), 0))
		return drop_skb(skb, DROP_ENCAP_FAILED);
	return nexthop_redirect(nh);
}

/* Result of classifying a frame on the uplink. */
struct geneve_info {
	__be32 outer_saddr;
	__u32 vni;
};

#define GENEVE_NOT_OURS 0
#define GENEVE_OURS 1

/* geneve_classify looks at a frame [data, data_end) received on the uplink.
 * Returns GENEVE_NOT_OURS for anything that is not UDP to our Geneve port on
 * our underlay address (the node's own traffic, ARP, ...), GENEVE_OURS with
 * *gi filled for a well-formed Geneve header carrying Ethernet, or a negative
 * DROP_* code. It does not look past the Geneve header. */
__inline int geneve_classify(void *data, void *data_end, __be32 local_ip,
			     struct geneve_info *gi)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	struct genevehdr *gnv;
	int frag;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return GENEVE_NOT_OURS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return GENEVE_NOT_OURS;
	if (ip->daddr != local_ip || ip->protocol != IPPROTO_UDP || ip->version != 4)
		return GENEVE_NOT_OURS;
	frag = ip->frag_off & bpf_htons(IP_MF | IP_OFFSET);
	if (frag & bpf_htons(IP_OFFSET))
		return GENEVE_NOT_OURS;	/* later fragment: no UDP header to judge */
	/* We never send IP options; a header of another size cannot be ours. */
	if (ip->ihl != 5)
		return GENEVE_NOT_OURS;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return GENEVE_NOT_OURS;
	if (udp->dest != bpf_htons(GENEVE_PORT))
		return GENEVE_NOT_OURS;

	/* To our Geneve port: from here on every failure is a counted drop. */
	if (frag)
		return DROP_GENEVE_MALFORMED;	/* we set DF; fragments are not ours */
	gnv = (void *)(udp + 1);
	if ((void *)(gnv + 1) > data_end)
		return DROP_TRUNCATED;
	/* version 0, no options (our nodes never send any), not OAM, Ethernet. */
	if (gnv->ver_optlen != 0 || (gnv->flags & GENEVE_F_OAM) ||
	    gnv->proto != bpf_htons(ETH_P_TEB))
		return DROP_GENEVE_MALFORMED;

	gi->outer_saddr = ip->saddr;
	gi->vni = ((__u32)gnv->vni[0] << 16) | ((__u32)gnv->vni[1] << 8) | gnv->vni[2];
	return GENEVE_OURS;
}
