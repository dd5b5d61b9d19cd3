/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The endpoint directory in the data plane (pkg/directory, docs/design.md
 * "The endpoint directory"). In directory mode a node knows its local
 * endpoints (genie_endpoints), the records of the shards it holds
 * (genie_dir_held) and the remote endpoints it learned (genie_dir_lru), and
 * nothing else. A packet to an endpoint it does not know is not dropped: it
 * goes to a holder of the key's shard (the bouncer), which forwards it to
 * the hosting node, while the agent looks the key up and installs a direct
 * entry.
 *
 *   from_pod, endpoint miss (directory_miss):
 *     learned entry      -> encapsulated direct to its node
 *     held record        -> encapsulated direct (this node is a holder)
 *     else               -> shard = fmix64(vni << 32 | bpf_ntohl(ip)) & mask, encapsulated
 *                           to the shard's first holder that is not this node,
 *                           with the bounce mark; the miss is reported
 *   from_uplink (directory_uplink, before the endpoint lookup):
 *     bounce request     -> (on a holder) the inner destination's held record
 *                           names the hosting node: the outer IPv4 header is
 *                           rewritten to it and the packet sent back out
 *     bounced packet     -> (on the hosting node) accepted only from a holder
 *                           of the destination's shard, on behalf of the origin
 *                           node written in the mark
 *   from_uplink, source check (directory_unknown_source): the inner source
 *     must be an endpoint of the VNI on the (origin) node, known locally, from
 *     a held record or a learned entry; an unknown source from a directory
 *     member is accepted, counted (UNVERIFIED) and reported, so the agent
 *     learns (and from then on checks) it.
 *
 * The bounce mark. The inner Ethernet source address of a packet between
 * nodes carries no information (the receiver rewrites the L2 header to
 * gateway -> pod), so a bounced packet carries its mark there, at no cost in
 * MTU (a Geneve option would make it 8 bytes longer than the pod MTU allows):
 *
 *   06:67:<origin underlay IPv4>   bounce request, origin -> holder
 *   06:68:<origin underlay IPv4>   bounced, holder -> hosting node
 *
 * (locally administered unicast; the gateway MAC may not start with 06:6x).
 * A holder forwards only requests, so a bounced packet is never bounced again.
 */
#pragma once

#include "common.h"
#include "maps.h"
#include "drop.h"
#include "eth.h"
#include "fib.h"
#include "geneve.h"


#define DIR_MAC0	0x06
#define DIR_MARK_REQ	0x67
#define DIR_MARK_BOUNCED 0x68

/* Offsets in an encapsulated frame: outer eth | IPv4 | UDP | Geneve | inner eth. */
#define DIR_OIP_OFF	ETH_HLEN
#define DIR_IDMAC_OFF	(ETH_HLEN + ENCAP_LEN - ETH_HLEN)
#define DIR_ISMAC_OFF	(DIR_IDMAC_OFF + ETH_ALEN)

/* dir_data and dir_data_end read skb->data and data_end with one load each
 * at the point of use: clang otherwise may keep a pointer into the context
 * computed for an earlier read, which the verifier refuses ("dereference of
 * modified ctx ptr"). */
__inline void *dir_data(const struct __sk_buff *skb)
{
	void *p;

	asm volatile("%0 = *(u32 *)(%1 + %2)" : "=r"(p)
		     : "r"(skb), "i"(__builtin_offsetof(struct __sk_buff, data)));
	return p;
}

__inline void *dir_data_end(const struct __sk_buff *skb)
{
	void *p;

	asm volatile("%0 = *(u32 *)(%1 + %2)" : "=r"(p)
		     : "r"(skb), "i"(__builtin_offsetof(struct __sk_buff, data_end)));
	return p;
}

/* dir_mix64 is MurmurHash3's fmix64, pkg/directory's Mix64. */
__inline __u64 dir_mix64(__u64 x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* dir_shard_of is pkg/directory's ShardOf: the shard of {vni, ip}. */
__inline __u32 dir_shard_of(__u32 vni, __be32 ip, __u32 mask)
{
	return (__u32)(dir_mix64(((__u64)vni << 32) | bpf_ntohl(ip)) & mask);
}

__inline void dir_count(__u32 stat)
{
	__u64 *c = bpf_map_lookup_elem(&genie_dir_stats, &stat);

	if (c)
		*c += 1;
}

/* dir_enabled returns the directory config if the node runs in directory
 * mode, else NULL. */
__inline struct dir_config *dir_enabled(void)
{
	__u32 zero = 0;
	struct dir_config *dc = bpf_map_lookup_elem(&genie_dir_cfg, &zero);

	if (!dc || !dc->enabled)
		return NULL;
	return dc;
}

__inline int dir_member(__be32 ip)
{
	return bpf_map_lookup_elem(&genie_dir_nodes, &ip) != NULL;
}

/* Results of directory_miss besides a negative DROP_* (the caller drops):
 * encapsulate to directory_via(), plain or as a bounce request. */
#define DIR_SEND	(-110)
#define DIR_BOUNCE	(-111)

/* directory_via returns the node directory_miss chose (DIR_SEND,
 * DIR_BOUNCE) as a remote endpoint. */
__inline struct endpoint_info *directory_via(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&genie_dir_via, &zero);
}

/* dir_send hands e to from_pod through the per-CPU scratch. */
__inline int dir_send(const struct endpoint_info *e, int verdict)
{
	struct endpoint_info *via = directory_via();

	if (!via)
		return DROP_NO_ROUTE;
	*via = *e;
	return verdict;
}

/* directory_miss handles a pod's packet to {vni, ip} that is not in
 * genie_endpoints: in vpc-sync mode a counted NO_ROUTE drop (and a miss
 * report), in directory mode a learned or held entry (DIR_SEND), or the
 * bounce through a holder of the shard (DIR_BOUNCE); a negative DROP_*
 * otherwise, for the caller to drop. from_pod encapsulates (path MTU, QoS
 * and all, as for a known endpoint) and directory_mark_bounce marks a
 * bounce request.
 *
 * A BPF subprogram, not inlined: from_pod's own code (and clang's register
 * choices there, which the verifier is picky about for context pointers)
 * stays what it is without the directory, and the miss path is not hot. */
static __attribute__((noinline, unused)) int
directory_miss(const struct node_config *cfg, const struct endpoint_key *key)
{
	struct dir_config *dc = dir_enabled();
	struct endpoint_info via = {};
	struct dir_shard *sh;
	struct dir_entry *e;
	__u32 shard, i;

	if (!dc) {
		report_miss(key);
		return DROP_NO_ROUTE;
	}
	e = bpf_map_lookup_elem(&genie_dir_lru, key);
	if (e && e->ep.node_ip && e->ep.node_ip != cfg->underlay_ip) {
		dir_count(DIR_STAT_LRU_HIT);
		return dir_send(&e->ep, DIR_SEND);
	}
	e = bpf_map_lookup_elem(&genie_dir_held, key);
	if (e && e->ep.node_ip && e->ep.node_ip != cfg->underlay_ip) {
		dir_count(DIR_STAT_HELD_HIT);
		return dir_send(&e->ep, DIR_SEND);
	}
	report_miss(key);
	if (e) /* held here, on this node, but not a local endpoint (DEL racing) */
		return DROP_NO_ROUTE;
	shard = dir_shard_of(key->vni, key->ip, dc->shard_mask);
	sh = bpf_map_lookup_elem(&genie_dir_shard, &shard);
	if (!sh)
		return DROP_DIR_NO_HOLDER;
#pragma unroll
	for (i = 0; i < DIR_MAX_REPLICAS; i++) {
		if (i >= sh->n)
			break;
		if (sh->holder[i] && sh->holder[i] != cfg->underlay_ip) {
			via.node_ip = sh->holder[i];
			break;
		}
	}
	if (!via.node_ip)
		return DROP_DIR_NO_HOLDER;
	dir_count(DIR_STAT_BOUNCED);
	return dir_send(&via, DIR_BOUNCE);
}

/* directory_mark_bounce marks the packet from_pod encapsulated with verdict
 * ret as a bounce request from this node (the inner source MAC, see the
 * top of this file) and returns the verdict. */
__inline int directory_mark_bounce(struct __sk_buff *skb, const struct node_config *cfg, int ret)
{
	__u8 mark[ETH_ALEN] = { DIR_MAC0, DIR_MARK_REQ };

	if (ret == TC_ACT_SHOT)
		return ret;
	__builtin_memcpy(&mark[2], &cfg->underlay_ip, 4);
	if (bpf_skb_store_bytes(skb, DIR_ISMAC_OFF, mark, ETH_ALEN, 0))
		return drop_skb(skb, DROP_ENCAP_FAILED);
	return ret;
}

/* dir_is_holder reports whether node is a holder of key's shard. */
__inline int dir_is_holder(const struct dir_config *dc, const struct endpoint_key *key, __be32 node)
{
	__u32 shard = dir_shard_of(key->vni, key->ip, dc->shard_mask), i;
	struct dir_shard *sh = bpf_map_lookup_elem(&genie_dir_shard, &shard);

	if (!sh)
		return 0;
#pragma unroll
	for (i = 0; i < DIR_MAX_REPLICAS; i++) {
		if (i >= sh->n)
			break;
		if (sh->holder[i] == node)
			return 1;
	}
	return 0;
}

/* dir_forward re-encapsulates a bounce request (on a holder) to the node
 * hosting its destination, dst: outer IPv4 from this node to dst's node,
 * inner destination MAC from the record, the mark turned into "bounced"
 * (origin kept), and sends it out of the uplink. */
__inline int dir_forward(struct __sk_buff *skb, const struct node_config *cfg,
			 const struct endpoint_info *dst)
{
	void *data = dir_data(skb);
	void *data_end = dir_data_end(skb);
	struct nexthop nh = {};
	struct iphdr oip;
	__u8 mark = DIR_MARK_BOUNCED;
	__u16 tot_len = 0;
	int ret;

	if (data + ETH_HLEN + ENCAP_LEN > data_end)
		return drop_skb(skb, DROP_TRUNCATED);
	__builtin_memcpy(&oip, data + DIR_OIP_OFF, sizeof(oip));
	oip.saddr = cfg->underlay_ip;
	oip.daddr = dst->node_ip;
	oip.ttl = 64;
	oip.check = 0;
	oip.check = ipv4_csum(&oip);
	if (!skb->gso_size)
		tot_len = skb->len - ETH_HLEN;
	ret = underlay_route(skb, cfg->underlay_ip, dst->node_ip, cfg->uplink_ifindex, tot_len, &nh);
	if (ret == ROUTE_TOO_BIG)
		return drop_skb(skb, DROP_FRAG_NEEDED);
	if (ret < 0)
		return drop_skb(skb, ret);
	if (bpf_skb_store_bytes(skb, DIR_OIP_OFF, &oip, sizeof(oip), 0) ||
	    bpf_skb_store_bytes(skb, DIR_IDMAC_OFF, dst->mac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, DIR_ISMAC_OFF + 1, &mark, 1, 0) ||
	    bpf_skb_store_bytes(skb, 0, nh.dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, nh.smac, ETH_ALEN, 0))
		return drop_skb(skb, DROP_ENCAP_FAILED);
	dir_count(DIR_STAT_FORWARDED);
	return nexthop_redirect(&nh);
}

/* directory_uplink looks at a well-formed Geneve frame before the endpoint
 * lookup of from_uplink. It returns 0 for the normal decap path (with
 * gi->outer_saddr replaced by the origin node for a bounced packet, so the
 * source check holds the origin to its endpoints), or 1 with *verdict set:
 * a bounce request forwarded (a holder), or a counted drop. */
__inline int directory_uplink(struct __sk_buff *skb, const struct node_config *cfg,
			      struct geneve_info *gi, const struct ethhdr *ieth,
			      const struct iphdr *iip, int *verdict)
{
	struct dir_config *dc = dir_enabled();
	struct endpoint_key key;
	struct endpoint_info *local;
	struct dir_entry *held;
	__be32 origin;

	if (!dc)
		return 0;
	if (ieth->h_source[0] != DIR_MAC0 ||
	    (ieth->h_source[1] != DIR_MARK_REQ && ieth->h_source[1] != DIR_MARK_BOUNCED))
		return 0;
	__builtin_memcpy(&origin, &ieth->h_source[2], 4);
	key.vni = gi->vni;
	key.ip = iip->daddr;
	local = bpf_map_lookup_elem(&genie_endpoints, &key);
	if (ieth->h_source[1] == DIR_MARK_BOUNCED) {
		/* Second hop: only a holder of the destination's shard
		 * forwards, on behalf of a member. */
		if (!dir_is_holder(dc, &key, gi->outer_saddr) || !dir_member(origin) ||
		    origin == cfg->underlay_ip) {
			*verdict = drop_skb(skb, DROP_DIR_UNTRUSTED);
			return 1;
		}
		if (!local || !local->ifindex) {
			*verdict = drop_skb(skb, DROP_DIR_NOT_LOCAL);
			return 1;
		}
		gi->outer_saddr = origin;
		dir_count(DIR_STAT_DELIVERED);
		return 0;
	}
	/* First hop: the origin sent it itself. */
	if (origin != gi->outer_saddr || !dir_member(origin)) {
		*verdict = drop_skb(skb, DROP_DIR_UNTRUSTED);
		return 1;
	}
	if (local && local->ifindex) {
		/* This holder hosts the destination too. */
		dir_count(DIR_STAT_DELIVERED);
		return 0;
	}
	held = bpf_map_lookup_elem(&genie_dir_held, &key);
	if (!held || !held->ep.node_ip || held->ep.node_ip == cfg->underlay_ip ||
	    held->ep.node_ip == origin) {
		*verdict = drop_skb(skb, DROP_DIR_NOT_HELD);
		return 1;
	}
	*verdict = dir_forward(skb, cfg, &held->ep);
	return 1;
}

/* directory_unknown_source is from_uplink's anti-forgery check for an
 * inner source key (VNI of the packet) that is not in genie_endpoints
 * (a known one must be an endpoint hosted on the sending node, node: the
 * outer source or the origin of a bounced packet). Returns 0 or a DROP_*
 * code. In vpc-sync mode every endpoint of the node's VPCs is in
 * genie_endpoints, so it is FORGED; in directory mode a held record or a
 * learned entry decides, and a source nobody here knows is accepted from
 * a directory member (counted, and reported so the agent learns it: from
 * then on it is checked). */
__inline int directory_unknown_source(const struct endpoint_key *key, __be32 node)
{
	struct dir_entry *e;

	if (dir_enabled()) {
		e = bpf_map_lookup_elem(&genie_dir_held, key);
		if (!e)
			e = bpf_map_lookup_elem(&genie_dir_lru, key);
		if (e) {
			if (e->ep.node_ip != node) {
				report_miss(key); /* maybe moved: look it up again */
				return DROP_FORGED;
			}
			return 0;
		}
		if (dir_member(node)) {
			report_miss(key);
			dir_count(DIR_STAT_UNVERIFIED);
			return 0;
		}
	}
	/* Maybe just not learnt yet: let the agent check the directory
	 * (which alone decides whether that endpoint lives there). */
	report_miss(key);
	return DROP_FORGED;
}

/* directory_xdp_pass reports whether the XDP prefilter must let a Geneve
 * frame of a VNI not hosted here through: a bounce request to this holder
 * (directory mode only). */
__inline int directory_xdp_pass(void *data, void *data_end)
{
	const __u8 *smac = data + DIR_ISMAC_OFF;

	if ((void *)(smac + 2) > data_end || !dir_enabled())
		return 0;
	return smac[0] == DIR_MAC0 && smac[1] == DIR_MARK_REQ;
}
