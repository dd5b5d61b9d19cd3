/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Address and port rewriting with incremental checksum updates, for every
 * NAT feature (service DNAT and its reverse, egress SNAT).
 *
 * The checksums are never recomputed over the payload: that would be wrong
 * for GSO super-packets and for CHECKSUM_PARTIAL packets (a pod's own TCP/UDP
 * with tx checksum offload on, the veth default), whose L4 check field holds
 * only the pseudo-header sum that the segmenter or the NIC completes. The
 * kernel's bpf_l4_csum_replace gets that right when told what changed:
 * BPF_F_PSEUDO_HDR for an address (part of the pseudo header, so it is
 * folded into a CHECKSUM_PARTIAL field too, and into skb->csum for
 * CHECKSUM_COMPLETE), nothing for a port (inside the summed data: a
 * CHECKSUM_PARTIAL field must not change). BPF_F_MARK_MANGLED_0 keeps a UDP
 * checksum of 0 ("none", legal in IPv4) at 0 and writes 0xffff for a
 * computed 0. The IPv4 header checksum is updated in place (RFC 1624).
 */
#pragma once

#include "common.h"
#include "maps.h"
#include "drop.h"
#include <linux/tcp.h>
#include <stddef.h>

/* nat_l4_csum_off returns the offset of the L4 checksum of a TCP or UDP
 * header at l4off. */
__inline __u32 nat_l4_csum_off(__u8 proto, __u32 l4off)
{
	return l4off + (proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
					     : offsetof(struct udphdr, check));
}

/* csum_fold32 folds a 32-bit ones'-complement sum to 16 bits. */
__inline __u16 csum_fold32(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* nat_rewrite replaces one side of a TCP/UDP IPv4 packet (the source if
 * dst is 0, else the destination): address old_addr -> new_addr and port
 * old_port -> new_port, fixing both checksums incrementally. l3off is the
 * IPv4 header, l4off the TCP/UDP header. The L4 checksum goes through the
 * helper (it knows the skb's checksum state); the addresses, the port and
 * the IPv4 header checksum (RFC 1624: ~(~HC + ~m + m'), word order does
 * not matter in ones'-complement sums) are written directly, saving three
 * helper calls. Returns 0 or DROP_NAT_FAILED. */
__inline int nat_rewrite(struct __sk_buff *skb, __u32 l3off, __u32 l4off, __u8 proto,
			 int dst, __be32 old_addr, __be32 new_addr,
			 __be16 old_port, __be16 new_port)
{
	__u32 csum_off = nat_l4_csum_off(proto, l4off);
	__u64 mm = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	void *data, *data_end;
	struct iphdr *ip;
	__be16 *ports;
	__u32 sum;

	if (l4off > ETH_HLEN + 60 || l3off > ETH_HLEN)
		return DROP_NAT_FAILED;
	if (old_addr != new_addr &&
	    bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
				BPF_F_PSEUDO_HDR | mm | sizeof(new_addr)))
		return DROP_NAT_FAILED;
	if (old_port != new_port &&
	    bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mm | sizeof(new_port)))
		return DROP_NAT_FAILED;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + l3off;
	ports = data + l4off;
	if ((void *)(ip + 1) > data_end || (void *)(ports + 2) > data_end)
		return DROP_NAT_FAILED;
	if (old_addr != new_addr) {
		sum = (__u16)~ip->check;
		sum += (~old_addr >> 16) + (~old_addr & 0xffff);
		sum += (new_addr >> 16) + (new_addr & 0xffff);
		ip->check = ~csum_fold32(sum);
		if (dst)
			ip->daddr = new_addr;
		else
			ip->saddr = new_addr;
	}
	ports[dst ? 1 : 0] = new_port;
	return 0;
}

/* nat_apply performs the rewrites of conntrack entry e on a packet whose
 * tuple (before rewriting) is k. Returns 0 or DROP_NAT_FAILED. */
__inline int nat_apply(struct __sk_buff *skb, __u32 l3off, __u32 l4off,
		       const struct ct_key *k, const struct ct_entry *e)
{
	int ret;

	if (e->flags & CT_F_SNAT) {
		ret = nat_rewrite(skb, l3off, l4off, k->proto, 0, k->saddr, e->src_addr,
				  k->sport, e->src_port);
		if (ret)
			return ret;
	}
	if (e->flags & CT_F_DNAT) {
		ret = nat_rewrite(skb, l3off, l4off, k->proto, 1, k->daddr, e->dst_addr,
				  k->dport, e->dst_port);
		if (ret)
			return ret;
	}
	return 0;
}

/* nat_rewrite_icmp_echo is nat_rewrite for an ICMP echo request or reply
 * (its identifier plays the port: the source port of a request, the
 * destination port of a reply): address old_addr -> new_addr on the side
 * dst says, identifier old_id -> new_id. The ICMP checksum covers no
 * pseudo header, so only the identifier changes it. Returns 0 or
 * DROP_NAT_FAILED. */
__inline int nat_rewrite_icmp_echo(struct __sk_buff *skb, __u32 l3off, __u32 l4off,
				   int dst, __be32 old_addr, __be32 new_addr,
				   __be16 old_id, __be16 new_id)
{
	void *data, *data_end;
	struct iphdr *ip;
	__be16 *id;
	__u32 sum;

	if (l4off > ETH_HLEN + 60 || l3off > ETH_HLEN)
		return DROP_NAT_FAILED;
	if (old_id != new_id &&
	    bpf_l4_csum_replace(skb, l4off + 2, old_id, new_id, sizeof(new_id)))
		return DROP_NAT_FAILED;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + l3off;
	id = data + l4off + 4;
	if ((void *)(ip + 1) > data_end || (void *)(id + 1) > data_end)
		return DROP_NAT_FAILED;
	if (old_addr != new_addr) {
		sum = (__u16)~ip->check;
		sum += (~old_addr >> 16) + (~old_addr & 0xffff);
		sum += (new_addr >> 16) + (new_addr & 0xffff);
		ip->check = ~csum_fold32(sum);
		if (dst)
			ip->daddr = new_addr;
		else
			ip->saddr = new_addr;
	}
	*id = new_id;
	return 0;
}
