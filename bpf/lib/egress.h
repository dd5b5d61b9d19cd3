/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The egress gateway: leaving a VPC through chosen gateway nodes, SNATed to
 * their egress address. Maps in maps_egress.h; the agent side is
 * pkg/egress/egressagent, the Go map API pkg/datapath/egress.go.
 *
 * Pod's node, from_pod, when {vni, dst} is no endpoint (egress_from_pod):
 *   genie_vpc_routes {vni, dst} (LPM) says internal (the VPC's own CIDR:
 *   not ours, the caller goes on to its NO_ROUTE drop) or egress by a
 *   policy; a selection entry {route, pod} overrides the route's default
 *   policy (label selectors are resolved by the agent into these). The flow
 *   {vni, 5-tuple} keeps the gateway it was pinned to while that one is
 *   active or draining (genie_egress_flows); a new flow, or one whose
 *   gateway left both sets, picks an active gateway by flow hash. The packet
 *   is Geneve-encapsulated to it (or SNATed right here when this node is
 *   the gateway).
 *
 * Gateway, from_uplink, when the inner destination is no endpoint
 *   (egress_from_tunnel): for a VNI this node serves (genie_egress_gw), an
 *   egress destination of the VPC, from an endpoint of that VNI on the outer
 *   source node (the FORGED rule): decapsulate, SNAT (egress_snat) and send
 *   through the kernel's FIB (egress_route, egress_send_out).
 *
 * Gateway, from_uplink, a packet that is not Geneve (egress_reply): TCP/UDP
 *   or ICMP echo reply to an egress address and an SNAT port: reverse SNAT
 *   from the VNI-less reply entry and hand it to the pod (egress_to_pod:
 *   redirect_peer if local, else Geneve to its node).
 *
 * Pod's node, from_uplink, Geneve whose inner source is no endpoint
 *   (egress_tunnel_reply): accepted only as the reply of a flow this node
 *   pinned to that very gateway (outer source), in that VNI.
 *
 * SNAT state lives in genie_ct (conntrack.h): the forward entry keyed by
 * {vni, 5-tuple} as the pod sent it, the reply entry by {0, 5-tuple} as the
 * outside answers (ct_entry.vni gives the VPC back), so two VPCs with the
 * same pod address and port share a gateway: their forward keys differ by
 * VNI and their ports differ by allocation. Ports come from
 * [EGRESS_PORT_MIN, EGRESS_PORT_MAX] on the node's own address, outside
 * Linux's default ephemeral range (32768-60999), or 1024-65535 on a
 * dedicated egress address (genie_egress_ips): the reply entry is
 * inserted with BPF_NOEXIST, and a clash tries another candidate
 * (EGRESS_PORT_TRIES in all).
 *
 * The overlay as a pod's default network (LXC_F_NODE_NET on the pod's
 *   interface, maps_egress.h): from_pod hands a packet to the node's
 *   underlay address to the host stack (egress_to_host), and where a route
 *   says egress but no policy selects the pod, the node is its gateway
 *   (egress_node_out): SNAT to the node's underlay address (the same
 *   egress_snat, FIB and reply path as a gateway's; a FIB answer "local"
 *   hands the packet to the host stack instead). Replies to the node's
 *   address and an SNAT port come back through egress_reply. A host route
 *   (VPC_ROUTE_HOST: the cluster's Service CIDR) sends the pod's packet to
 *   the host stack unNATed, where kube-proxy's rules DNAT (and masquerade)
 *   it; its replies come back through the node's host route to the pod.
 *
 * Not handled: fragments and protocols other than TCP, UDP and ICMP echo
 * (counted EGRESS_UNSUPPORTED), ICMP errors about egress flows (not
 * translated), IP options on the fast path are fine (ihl is honoured), the
 * TTL is not decremented (as for the overlay).
 */
#pragma once

#include "common.h"
#include "maps.h"
#include "drop.h"
#include "eth.h"
#include "fib.h"
#include "geneve.h"
#include "icmp.h"
#include "qos.h"
#include "conntrack.h"
#include "nat.h"

/* SNAT ports of the node's own address (and of an address genie_egress_ips
 * does not know); a dedicated egress address has its own range there,
 * never below EGRESS_PORT_FLOOR. */
#define EGRESS_PORT_MIN 61000
#define EGRESS_PORT_MAX 65535
#define EGRESS_PORT_FLOOR 1024
#define EGRESS_PORT_TRIES 32

/* The hooks are BPF-to-BPF calls, not inlined: inlined, their packet
 * accesses made clang keep &skb->data_end in a register across from_pod,
 * which the verifier refuses ("dereference of modified ctx ptr"), and the
 * callers' common paths stay as small as they were. */
#define __egress_hook static __attribute__((noinline, unused))

_Static_assert(sizeof(struct ct_pkt) <= sizeof(((struct egress_scratch *)0)->pkt), "ct_pkt fits the scratch");
_Static_assert(sizeof(struct bpf_redir_neigh) <= sizeof(((struct egress_scratch *)0)->neigh), "bpf_redir_neigh fits the scratch");

/* egress_scratch_get returns this CPU's working memory (maps_egress.h). */
__inline struct egress_scratch *egress_scratch_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&genie_egress_scratch, &zero);
}

#ifndef PACKET_HOST
#define PACKET_HOST 0
#endif

#define ICMP_ECHOREPLY_T 0
#define ICMP_ECHO_T 8

/* egress_pull makes the first len bytes linear if the packet has them
 * (packet pointers must be reloaded and checked afterwards). */
__inline void egress_pull(struct __sk_buff *skb, __u32 len)
{
	if ((void *)(long)skb->data + len > (void *)(long)skb->data_end && skb->len >= len)
		bpf_skb_pull_data(skb, len);
}

/* Linux's TCP timestamp clock ticks in milliseconds (microseconds with
 * tcp_usec_ts); a SYN takes a held pair over only this far past its FIN,
 * so late ACKs of the old connection cannot have moved the server's
 * ts_recent past the SYN's. */
#define EGRESS_TS_MARGIN 4096

/* egress_ts_walk is where egress_ts_step is in the options of a TCP
 * header (loaded into this CPU's scratch, opt). */
struct egress_ts_walk {
	__u32 i;	/* the next option's offset */
	__u32 len;	/* the options' length, 10-40 */
};

/* egress_ts_step reads the option at walk->i: a timestamp goes to the
 * scratch (tsval, ts_ok) and ends the walk, as do the end of the options
 * and a malformed one. A bpf_loop callback: verified once, where an
 * open-coded loop forked the verifier at every option (over a million
 * instructions). */
static long egress_ts_step(__u64 n, void *ctx)
{
	struct egress_scratch *w = egress_scratch_get();
	struct egress_ts_walk *t = ctx;
	__u32 i = t->i, j;
	__u8 kind, olen;

	if (!w || i + 10 > t->len)	/* no room left for a timestamp */
		return 1;
	j = i & 31;			/* == i: i <= len - 10 <= 30 */
	kind = w->opt[j];
	if (kind == 0)			/* end of options */
		return 1;
	if (kind == 1) {		/* NOP */
		t->i = i + 1;
		return 0;
	}
	olen = w->opt[j + 1];
	if (kind == 8 && olen == 10) {
		w->tsval = (__u32)w->opt[j + 2] << 24 | (__u32)w->opt[j + 3] << 16 |
			   (__u32)w->opt[j + 4] << 8 | w->opt[j + 5];
		w->ts_ok = 1;
		return 1;
	}
	if (kind == 8 || olen < 2)
		return 1;
	t->i = i + olen;
	return 0;
}

/* egress_tcp_ts finds the timestamp option (RFC 7323) among the options
 * of the TCP header at l4off (data offset doff, in 32-bit words) and leaves
 * its TSval in this CPU's scratch (tsval, ts_ok). A BPF-to-BPF call out of
 * its callers' frames. */
static __attribute__((noinline)) void egress_tcp_ts(struct __sk_buff *skb, __u32 l4off, __u32 doff)
{
	struct egress_scratch *w = egress_scratch_get();
	__u64 len = (__u64)(doff & 0xf) << 2;	/* header length, 20-60 */
	struct egress_ts_walk t = { 0 };

	if (!w)
		return;
	w->ts_ok = 0;
	if (len < 20 + 10)		/* options too short for a timestamp */
		return;
	len -= 20;			/* 10-40: sizeof(w->opt) */
	if (bpf_skb_load_bytes(skb, l4off + 20, w->opt, len))
		return;
	t.len = len;
	bpf_loop(sizeof(w->opt), egress_ts_step, &t, 0);
}

/* egress_parse fills p for an unfragmented TCP, UDP or ICMP echo packet
 * (IPv4 at l3off) of VPC vni, like ct_parse. ICMP echo: the identifier is
 * the source port of a request and the destination port of a reply, the
 * other port 0, so a request's reply key (source and destination swapped)
 * is the reply's key. Returns 1, or 0 for anything else. Packet pointers
 * must be reloaded. (Not built on ct_parse: in a BPF-to-BPF function clang
 * turned skb_ensure's returned comparison into 32-bit arithmetic on
 * pkt_end, which the verifier refuses.) */
__inline int egress_parse(struct __sk_buff *skb, __u32 l3off, __u32 vni, struct ct_pkt *p)
{
	void *data, *data_end;
	struct iphdr *ip;
	__u32 l4off;
	__u8 *l4, proto;

	egress_pull(skb, l3off + sizeof(struct iphdr));
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + l3off;
	if ((void *)(ip + 1) > data_end)
		return 0;
	proto = ip->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP)
		return 0;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;
	l4off = l3off + ip->ihl * 4;
	egress_pull(skb, l4off + (proto == IPPROTO_TCP ? 14 : 8));
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + l3off;
	if ((void *)(ip + 1) > data_end)
		return 0;
	l4 = data + l4off;
	if ((void *)(l4 + 8) > data_end)
		return 0;
	p->l4off = l4off;
	p->key.vni = vni;
	p->key.saddr = ip->saddr;
	p->key.daddr = ip->daddr;
	p->key.proto = proto;
	p->key.pad[0] = p->key.pad[1] = p->key.pad[2] = 0;
	p->tcp_flags = 0;
	if (proto == IPPROTO_ICMP) {
		if (l4[1] != 0 || (l4[0] != ICMP_ECHO_T && l4[0] != ICMP_ECHOREPLY_T))
			return 0;
		p->key.sport = l4[0] == ICMP_ECHO_T ? *(__be16 *)(l4 + 4) : 0;
		p->key.dport = l4[0] == ICMP_ECHO_T ? 0 : *(__be16 *)(l4 + 4);
		return 1;
	}
	p->key.sport = *(__be16 *)l4;
	p->key.dport = *(__be16 *)(l4 + 2);
	if (proto == IPPROTO_TCP) {
		if ((void *)(l4 + 14) > data_end)
			return 0;
		p->tcp_flags = l4[13];
		/* A SYN's and a FIN's timestamp decide whether a port pair
		 * may be reused inside the server's TIME_WAIT. */
		if (l4[13] & (TCPF_SYN | TCPF_FIN))
			egress_tcp_ts(skb, l4off, l4[12] >> 4);
	}
	return 1;
}

/* egress_mix is murmur3's finaliser: every input bit reaches every
 * output bit. */
__inline __u32 egress_mix(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* egress_hash spreads flows over gateways and SNAT ports. */
__inline __u32 egress_hash(const struct ct_key *k)
{
	__u32 h = k->saddr * 0x9e3779b1;

	h ^= k->daddr;
	h = (h << 13 | h >> 19) * 0x85ebca6b;
	h ^= ((__u32)k->sport << 16 | k->dport) ^ k->proto ^ k->vni;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* egress_nat rewrites one side of packet p (IPv4 at l3off): the source if
 * dst is 0, else the destination. */
__inline int egress_nat(struct __sk_buff *skb, __u32 l3off, const struct ct_pkt *p, int dst,
			__be32 old_addr, __be32 new_addr, __be16 old_port, __be16 new_port)
{
	if (p->key.proto == IPPROTO_ICMP)
		return nat_rewrite_icmp_echo(skb, l3off, p->l4off, dst, old_addr, new_addr,
					     old_port, new_port);
	return nat_rewrite(skb, l3off, p->l4off, p->key.proto, dst, old_addr, new_addr,
			   old_port, new_port);
}

/* egress_reclaim frees the SNAT port of reply key w->rk for new flow p if
 * its old flow is over:
 * - the reply entry and its forward partner both expired (or the partner
 *   is gone), as the Go GC would decide. Without it a port stays taken
 *   until the GC's next pass (30 s), which at a few hundred new connections
 *   a second to one destination exhausted the range.
 * - or both sides closed (a closed pair is held CT_EGRESS_CLOSE_TIMEOUT,
 *   for the server's TIME_WAIT), the pod side's FIN carried a timestamp,
 *   and p is a SYN whose timestamp is later by EGRESS_TS_MARGIN: a server
 *   in TIME_WAIT accepts such a SYN as a new connection (RFC 6191; Linux's
 *   tcp_timewait_state_process), and answers any other with the old
 *   connection's ACK (the pod resets, retries a second later, and its
 *   retry may meet another such pair: the collapse to 8-17 connections a
 *   second once ports came round). Linux picks its own ports the same way
 *   (tcp_twsk_unique); the SNAT must because pod sockets behind one
 *   address have unrelated timestamp offsets.
 * - or a RST ended it: either entry carries CT_F_RST and has expired
 *   (CT_CLOSE_TIMEOUT after the RST; the other side, which sends nothing
 *   more, would otherwise hold the port for CT_TCP_TIMEOUT).
 * A flow with a live side keeps its port: stealing it would hand its
 * replies to another flow. The old pair goes (its forward entry only if it
 * still is this pair's: the pod's tuple may have a newer flow). Returns 1
 * if the port is free now. */
__inline int egress_reclaim(struct egress_scratch *w, const struct ct_pkt *p, __u64 now)
{
	struct ct_entry *old, *fwd;
	int closed;

	old = bpf_map_lookup_elem(&genie_ct, &w->rk);
	if (!old || !(old->flags & CT_F_EGRESS))
		return 0;
	w->pk.vni = old->vni;
	w->pk.saddr = old->dst_addr;
	w->pk.sport = old->dst_port;
	w->pk.daddr = w->rk.saddr;
	w->pk.dport = w->rk.sport;
	w->pk.proto = w->rk.proto;
	w->pk.pad[0] = w->pk.pad[1] = w->pk.pad[2] = 0;
	fwd = bpf_map_lookup_elem(&genie_ct, &w->pk);
	if (fwd && (fwd->src_port != w->rk.dport || fwd->src_addr != w->rk.daddr))
		fwd = NULL;
	if (!((old->flags & CT_F_RST) && now > old->expires) &&
	    !(fwd && (fwd->flags & CT_F_RST) && now > fwd->expires)) {
		closed = old->state == CT_CLOSING && (old->flags & CT_F_EGRESS_FIN) && w->ts_ok &&
			 (p->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN &&
			 (__s32)(w->tsval - old->fin_tsval) > EGRESS_TS_MARGIN;
		if (now <= old->expires && !closed)
			return 0;
		if (fwd && now <= fwd->expires && !(closed && fwd->state == CT_CLOSING))
			return 0;
	}
	if (fwd)
		bpf_map_delete_elem(&genie_ct, &w->pk);
	bpf_map_delete_elem(&genie_ct, &w->rk);
	return 1;
}

/* egress_note_fin keeps the timestamp of the pod side's FIN of flow p
 * (its forward entry in w->fwd) in the flow's reply entry, for
 * egress_reclaim. */
__inline void egress_note_fin(struct egress_scratch *w, const struct ct_pkt *p)
{
	struct ct_entry *rev;

	w->rk.vni = 0;
	w->rk.saddr = p->key.daddr;
	w->rk.sport = p->key.dport;
	w->rk.daddr = w->fwd.src_addr;
	w->rk.dport = w->fwd.src_port;
	w->rk.proto = p->key.proto;
	w->rk.pad[0] = w->rk.pad[1] = w->rk.pad[2] = 0;
	rev = bpf_map_lookup_elem(&genie_ct, &w->rk);
	if (!rev || !(rev->flags & CT_F_EGRESS))
		return;
	/* A retransmitted FIN carries a later timestamp: keep the latest. */
	if (!(rev->flags & CT_F_EGRESS_FIN) || (__s32)(w->tsval - rev->fin_tsval) > 0)
		rev->fin_tsval = w->tsval;
	rev->flags |= CT_F_EGRESS_FIN;
}

/* egress_snat_prepare finds or creates the SNAT of flow p (parsed by
 * egress_parse with its VPC's VNI) to egress_ip: a live flow keeps its
 * port, a new one allocates a free one (see the top of the file). The
 * forward entry is left in this CPU's scratch (fwd) for egress_snat_apply;
 * the pod side's FIN leaves its timestamp in the reply entry
 * (egress_note_fin). Touches no packet byte. Returns 0 or a DROP_* code. */
__inline int egress_snat_prepare(const struct ct_pkt *p, __be32 egress_ip)
{
	struct egress_scratch *w = egress_scratch_get();
	__u64 now = bpf_ktime_get_ns();
	__u32 h, i, port, min = EGRESS_PORT_MIN, n = EGRESS_PORT_MAX - EGRESS_PORT_MIN + 1;
	struct egress_ip *r;
	int ret = -EEXIST;

	if (!w)
		return DROP_NAT_FAILED;
	r = bpf_map_lookup_elem(&genie_egress_ips, &egress_ip);
	if (r && r->port_min >= EGRESS_PORT_FLOOR && r->port_max >= r->port_min) {
		min = r->port_min;
		n = r->port_max - r->port_min + 1;
	}
	if (!ct_lookup(p, now, &w->fwd) || !(w->fwd.flags & CT_F_EGRESS) ||
	    w->fwd.src_addr != egress_ip) {
		__builtin_memset(&w->fwd, 0, sizeof(w->fwd));
		__builtin_memset(&w->rev, 0, sizeof(w->rev));
		ct_new_init(&w->fwd, p, now);
		w->fwd.flags = CT_F_SNAT | CT_F_EGRESS;
		w->fwd.src_addr = egress_ip;
		w->fwd.vni = p->key.vni;

		w->rev.flags = CT_F_REPLY | CT_F_DNAT | CT_F_EGRESS;
		w->rev.dst_addr = p->key.saddr;
		w->rev.dst_port = p->key.sport;
		w->rev.state = w->fwd.state;
		w->rev.expires = w->fwd.expires;
		w->rev.vni = p->key.vni;

		w->rk.vni = 0;
		w->rk.saddr = p->key.daddr;
		w->rk.sport = p->key.dport;
		w->rk.daddr = egress_ip;
		w->rk.proto = p->key.proto;
		w->rk.pad[0] = w->rk.pad[1] = w->rk.pad[2] = 0;

		h = egress_hash(&p->key);
		for (i = 0; i < EGRESS_PORT_TRIES; i++) {
			/* Each candidate from its own hash: with a fixed stride
			 * every flow walks the same cycle of ports (linear
			 * probing in disguise), and at 44% fill runs of 16 taken
			 * candidates appeared (TestPrivilegedEgressManyFlows). */
			port = min + egress_mix(h + i * 0x9e3779b9) % n;
			w->rk.dport = bpf_htons(port);
			w->fwd.src_port = w->rk.dport;
			ret = ct_create_pair(&p->key, &w->fwd, &w->rk, &w->rev);
			if (ret != -EEXIST)
				break;
			if (!egress_reclaim(w, p, now))
				continue;
			ret = ct_create_pair(&p->key, &w->fwd, &w->rk, &w->rev);
			if (ret != -EEXIST)
				break;
		}
		if (ret == -EEXIST)
			return DROP_EGRESS_NO_PORT;
		if (ret)
			return ret;
	} else if ((p->tcp_flags & TCPF_FIN) && w->ts_ok) {
		egress_note_fin(w, p);
	}
	return 0;
}

/* egress_snat_apply rewrites the source of packet p (IPv4 at l3off) as
 * egress_snat_prepare decided. Returns 0 or DROP_NAT_FAILED. */
__inline int egress_snat_apply(struct __sk_buff *skb, __u32 l3off, const struct ct_pkt *p)
{
	struct egress_scratch *w = egress_scratch_get();

	if (!w)
		return DROP_NAT_FAILED;
	return egress_nat(skb, l3off, p, 0, p->key.saddr, w->fwd.src_addr,
			  p->key.sport, w->fwd.src_port);
}

/* egress_snat rewrites the source of packet p (IPv4 at l3off, parsed by
 * egress_parse with its VPC's VNI) to egress_ip and the flow's SNAT port.
 * Returns 0 or a DROP_* code. */
__inline int egress_snat(struct __sk_buff *skb, __u32 l3off, const struct ct_pkt *p,
			 __be32 egress_ip)
{
	int ret = egress_snat_prepare(p, egress_ip);

	return ret ? ret : egress_snat_apply(skb, l3off, p);
}

/* egress_fib looks up the kernel's next hop for an SNATed packet from
 * saddr to daddr, as a router forwarding it from the uplink would (input
 * lookup; tot_len 0 lets the kernel check the packet against the MTU,
 * GSO-aware), into this CPU's scratch for egress_send_out. Returns 0, or
 * the bpf_fib_lookup code that stops the packet (BPF_FIB_LKUP_RET_NOT_FWDED:
 * daddr is the node's own, a broadcast, or has no route at all: the kernel
 * tells these apart for nobody). */
__inline int egress_fib(struct __sk_buff *skb, const struct node_config *cfg,
			__be32 saddr, __be32 daddr)
{
	struct egress_scratch *w = egress_scratch_get();
	struct bpf_fib_lookup *f;
	int rc;

	if (!w)
		return BPF_FIB_LKUP_RET_NOT_FWDED;
	f = (void *)w->fib;
	__builtin_memset(f, 0, sizeof(*f));
	f->family = AF_INET;
	f->ifindex = cfg->uplink_ifindex;
	f->ipv4_src = saddr;
	f->ipv4_dst = daddr;
	rc = bpf_fib_lookup(skb, f, sizeof(*f), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		f->l4_protocol = 1;	/* reused as "resolved" */
		return 0;
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		f->l4_protocol = 0;
		return 0;
	}
	return rc ? rc : BPF_FIB_LKUP_RET_NOT_FWDED;
}

/* egress_route is egress_fib for the gateway: before any rewrite, so a
 * packet that cannot leave is dropped untouched. Returns 0 or
 * DROP_EGRESS_NO_ROUTE. */
__inline int egress_route(struct __sk_buff *skb, const struct node_config *cfg,
			  __be32 saddr, __be32 daddr)
{
	return egress_fib(skb, cfg, saddr, daddr) ? DROP_EGRESS_NO_ROUTE : 0;
}

/* egress_send_out sends the packet to the next hop egress_route found:
 * its MACs if the neighbour is resolved, else bpf_redirect_neigh. Returns a
 * tc verdict. */
__inline int egress_send_out(struct __sk_buff *skb)
{
	struct egress_scratch *w = egress_scratch_get();
	struct bpf_redir_neigh *rn;
	struct bpf_fib_lookup *f;
	struct ethhdr *eth;

	if (!w)
		return drop_skb(skb, DROP_EGRESS_NO_ROUTE);
	f = (void *)w->fib;
	if (f->l4_protocol) {
		eth = (void *)w->eth;
		mac_copy(eth->h_dest, f->dmac);
		mac_copy(eth->h_source, f->smac);
		eth->h_proto = bpf_htons(ETH_P_IP);
		if (bpf_skb_store_bytes(skb, 0, eth, sizeof(*eth), 0))
			return drop_skb(skb, DROP_NAT_FAILED);
		return bpf_redirect(f->ifindex, 0);
	}
	rn = (void *)w->neigh;
	__builtin_memset(rn, 0, sizeof(*rn));
	rn->nh_family = AF_INET;
	rn->ipv4_nh = f->ipv4_dst;
	return bpf_redirect_neigh(f->ifindex, rn, sizeof(*rn), 0);
}

/* egress_to_pod hands a reverse-SNATed reply (Ethernet + IPv4 to pod, VPC
 * vni) to the pod: into its netns if it is local, else Geneve to its node.
 * Returns a tc verdict. */
__inline int egress_to_pod(struct __sk_buff *skb, const struct node_config *cfg,
			   __u32 vni, __be32 pod)
{
	struct endpoint_key key = { .vni = vni, .ip = pod };
	struct endpoint_info *dst;
	struct nexthop nh = {};
	void *data, *data_end;
	struct iphdr *ip;
	__u32 hash;
	int ret;

	dst = bpf_map_lookup_elem(&genie_endpoints, &key);
	if (!dst)
		return drop_skb(skb, DROP_NO_ROUTE);
	if (dst->ifindex) {
		if (l2_rewrite(skb, dst->mac, cfg->gw_mac))
			return drop_skb(skb, DROP_DECAP_FAILED);
		return bpf_redirect_peer(dst->ifindex, 0);
	}
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return drop_skb(skb, DROP_TRUNCATED);
	hash = skb->hash;
	if (!hash)
		hash = flow_hash(ip, data_end);
	ret = underlay_route(skb, cfg->underlay_ip, dst->node_ip, cfg->uplink_ifindex,
			     encap_seg_len(skb, ip, data_end), &nh);
	if (ret == ROUTE_TOO_BIG)
		return drop_skb(skb, DROP_FRAG_NEEDED);
	if (ret < 0)
		return drop_skb(skb, ret);
	return geneve_encap(skb, cfg, vni, dst, ip->tos, hash, &nh);
}

/* egress_pick returns the gateway of pod flow p under policy pol: the one
 * it is pinned to while that is still active or draining, else an active
 * one by flow hash (pinned from now on). 0: no active gateway. */
__inline __be32 egress_pick(const struct egress_policy *pol, const struct ct_pkt *p)
{
	struct egress_scratch *w = egress_scratch_get();
	__u64 now = bpf_ktime_get_ns();
	struct ct_entry *e;
	__u32 i, idx;
	__be32 gw;

	if (!w)
		return 0;
	e = bpf_map_lookup_elem(&genie_egress_flows, &p->key);
	if (e && ct_touch(e, p, now, &w->pin)) {
#pragma unroll
		for (i = 0; i < EGRESS_MAX_GW; i++)
			if (i < pol->all && pol->gw[i] == w->pin.dst_addr)
				return w->pin.dst_addr;
	}
	if (!pol->active)
		return 0;
	idx = egress_hash(&p->key) % pol->active;
	if (idx >= EGRESS_MAX_GW)
		return 0;
	gw = pol->gw[idx];
	__builtin_memset(&w->pin, 0, sizeof(w->pin));
	ct_new_init(&w->pin, p, now);
	w->pin.flags = CT_F_EGRESS;
	w->pin.dst_addr = gw;
	w->pin.vni = p->key.vni;
	/* A failed pin only costs stickiness: the flow re-hashes next time. */
	bpf_map_update_elem(&genie_egress_flows, &p->key, &w->pin, BPF_ANY);
	return gw;
}

/* egress_out SNATs packet p (parsed by egress_parse, IPv4 at ETH_HLEN) to
 * egress_ip and sends it out through the FIB: the gateway's job, whether
 * the packet came through a tunnel or from a local pod. The route and the
 * port are found before the packet is touched. prepared: the caller ran
 * egress_route and egress_snat_prepare already. Returns a tc verdict. */
__inline int egress_out(struct __sk_buff *skb, const struct node_config *cfg,
			     const struct ct_pkt *p, __be32 egress_ip, int prepared)
{
	int ret = 0;

	if (!prepared) {
		ret = egress_route(skb, cfg, egress_ip, p->key.daddr);
		if (!ret)
			ret = egress_snat_prepare(p, egress_ip);
	}
	if (!ret)
		ret = egress_snat_apply(skb, ETH_HLEN, p);
	if (ret)
		return drop_skb(skb, ret);
	return egress_send_out(skb);
}

#define EGRESS_PASS	(-100)	/* not egress: the caller goes on */
#define EGRESS_TUNNEL	(-101)	/* encapsulate to the gateway the hook set */

/* egress_to_host hands a pod's packet to its node's own stack (the pod is
 * its node's, LXC_F_NODE_NET, and the destination a node address). The pod
 * addressed the virtual gateway's MAC, which no host device has: the stack
 * would drop it as PACKET_OTHERHOST. The reply comes back through the host
 * route the agent installs for the pod's address (egress_host.go). */
__inline int egress_to_host(struct __sk_buff *skb)
{
	bpf_skb_change_type(skb, PACKET_HOST);
	return TC_ACT_OK;
}

/* egress_node_out sends pod flow p (parsed, in the scratch) out through its
 * own node, SNATed to the node's underlay address: the default route of a
 * pod whose default network is the VPC (LXC_F_NODE_NET) where no egress
 * policy selects it. A destination the FIB does not forward (the node's
 * own addresses, and what it has no route for: bpf_fib_lookup does not
 * tell them apart) goes to the host stack unchanged, which delivers it or
 * answers as the pod's router (ICMP unreachable); a blackhole, prohibit or
 * unreachable route is a counted EGRESS_NO_ROUTE. Returns a tc verdict. */
__inline int egress_node_out(struct __sk_buff *skb, const struct node_config *cfg, __u32 vni,
				__be32 daddr)
{
	struct egress_scratch *w = egress_scratch_get();
	int ret;

	if (!w)
		return drop_skb(skb, DROP_EGRESS_NO_ROUTE);
	ret = egress_fib(skb, cfg, cfg->underlay_ip, daddr);
	if (ret == BPF_FIB_LKUP_RET_NOT_FWDED)
		return egress_to_host(skb);
	if (ret)
		return drop_skb(skb, DROP_EGRESS_NO_ROUTE);
	if (!egress_parse(skb, ETH_HLEN, vni, (struct ct_pkt *)w->pkt))
		return drop_skb(skb, DROP_EGRESS_UNSUPPORTED);
	ret = egress_snat_prepare((struct ct_pkt *)w->pkt, cfg->underlay_ip);
	if (ret)
		return drop_skb(skb, ret);
	return egress_out(skb, cfg, (struct ct_pkt *)w->pkt, cfg->underlay_ip, 1);
}

#define EGRESS_PASS	(-100)	/* not egress: the caller goes on */
#define EGRESS_TUNNEL	(-101)	/* encapsulate to the gateway the hook set */

/* egress_from_pod is the egress hook of from_pod, called when pod ep's
 * packet to daddr matched no endpoint of its VPC. Returns
 *   EGRESS_PASS    no route, or an internal one: the caller goes on (to
 *                  its NO_ROUTE drop);
 *   EGRESS_TUNNEL  egress_gateway() is the gateway as a remote endpoint
 *                  (a per-CPU scratch entry): the caller encapsulates to
 *                  it as to any remote endpoint (path MTU, QoS and all);
 *                  packet pointers must be reloaded;
 *   else           the tc verdict (a counted drop, SNATed and sent out
 *                  here because this node is the gateway, or the pod's
 *                  own node, or handed to this node's stack).
 * A pod whose default network this is (LXC_F_NODE_NET) reaches its node's
 * underlay address always, and where a route of the VPC says egress but no
 * policy selects it (policy 0; the agent routes 0.0.0.0/0 so for these
 * VPCs), it leaves through this node. */
__egress_hook int egress_from_pod(struct __sk_buff *skb, const struct lxc_info *ep,
				  const struct node_config *cfg, __be32 daddr)
{
	struct vpc_route_key rk = { .prefixlen = 64, .vni = ep->vni, .addr = daddr };
	struct egress_select_key sk;
	struct egress_policy *pol;
	struct egress_scratch *w = egress_scratch_get();
	struct vpc_route *r;
	struct egress_gw *g;
	__u32 policy, *sel;
	__be32 addr;

	if ((ep->flags & LXC_F_NODE_NET) && daddr == cfg->underlay_ip)
		return egress_to_host(skb);
	r = bpf_map_lookup_elem(&genie_vpc_routes, &rk);
	if (!r)
		return EGRESS_PASS;
	if (r->kind == VPC_ROUTE_HOST && (ep->flags & LXC_F_NODE_NET))
		return egress_to_host(skb);	/* a ClusterIP: kube-proxy's */
	if (r->kind != VPC_ROUTE_EGRESS)
		return EGRESS_PASS;
	policy = r->policy;
	if (r->route) {
		sk.route = r->route;
		sk.pod = ep->ip;
		sel = bpf_map_lookup_elem(&genie_egress_select, &sk);
		if (sel)
			policy = *sel;
	}
	if (!w)	/* per-CPU array: cannot happen, but the verifier wants it */
		return drop_skb(skb, DROP_EGRESS_NO_GATEWAY);
	if (!policy) {
		if (!(ep->flags & LXC_F_NODE_NET))
			return drop_skb(skb, DROP_EGRESS_NOT_SELECTED);
		return egress_node_out(skb, cfg, ep->vni, daddr);
	}
	/* The packet's tuple lives in the scratch too: this frame adds to
	 * from_pod's, and egress_out's to both. */
	if (!egress_parse(skb, ETH_HLEN, ep->vni, (struct ct_pkt *)w->pkt))
		return drop_skb(skb, DROP_EGRESS_UNSUPPORTED);
	pol = bpf_map_lookup_elem(&genie_egress_policies, &policy);
	if (!pol)
		return drop_skb(skb, DROP_EGRESS_NO_GATEWAY);
	addr = egress_pick(pol, (struct ct_pkt *)w->pkt);
	if (!addr)
		return drop_skb(skb, DROP_EGRESS_NO_GATEWAY);

	if (addr == cfg->underlay_ip) {
		/* This node is the gateway: SNAT and out, no tunnel. */
		g = bpf_map_lookup_elem(&genie_egress_gw, &ep->vni);
		if (!g)
			return drop_skb(skb, DROP_EGRESS_NO_GATEWAY);
		return egress_out(skb, cfg, (struct ct_pkt *)w->pkt, g->egress_ip, 0);
	}
	w->gw.ifindex = 0;
	w->gw.node_ip = addr;
	mac_copy(w->gw.mac, cfg->gw_mac);	/* the gateway rewrites L2 anyway */
	return EGRESS_TUNNEL;
}

/* egress_gateway returns the gateway egress_from_pod chose (EGRESS_TUNNEL)
 * as a remote endpoint. (A pointer handed back through the hook's stack
 * argument was lost to the verifier's state pruning.) */
__inline struct endpoint_info *egress_gateway(void)
{
	struct egress_scratch *w = egress_scratch_get();

	return w ? &w->gw : NULL;
}

/* egress_from_tunnel is the gateway hook of from_uplink, called when the
 * inner destination of Geneve packet gi is no endpoint of its VNI. Returns
 * 0 if this node is no gateway of that VPC or the destination is internal
 * to it (the caller goes on), else 1 with the tc verdict in *verdict. */
__egress_hook int egress_from_tunnel(struct __sk_buff *skb, const struct node_config *cfg,
				     const struct geneve_info *gi, int *verdict)
{
	struct vpc_route_key rk = { .prefixlen = 64, .vni = gi->vni };
	struct endpoint_key key = { .vni = gi->vni };
	struct endpoint_info *src;
	struct vpc_route *r;
	struct egress_gw *g;
	struct ct_pkt p;
	__be32 egress_ip;
	int ret;

	g = bpf_map_lookup_elem(&genie_egress_gw, &gi->vni);
	if (!g)
		return 0;
	egress_ip = g->egress_ip;
	if (!egress_parse(skb, ETH_HLEN + ENCAP_LEN, gi->vni, &p)) {
		*verdict = drop_skb(skb, DROP_EGRESS_UNSUPPORTED);
		return 1;
	}
	rk.addr = p.key.daddr;
	r = bpf_map_lookup_elem(&genie_vpc_routes, &rk);
	if (r && r->kind == VPC_ROUTE_INTERNAL)
		return 0;
	if (!r) {
		*verdict = drop_skb(skb, DROP_EGRESS_DENIED);
		return 1;
	}
	key.ip = p.key.saddr;
	src = bpf_map_lookup_elem(&genie_endpoints, &key);
	if (!src || src->ifindex || src->node_ip != gi->outer_saddr) {
		if (!src)
			report_miss(&key);
		*verdict = drop_skb(skb, DROP_FORGED);
		return 1;
	}
	/* The route and the port first: a packet that cannot leave is
	 * dropped untouched. */
	ret = egress_route(skb, cfg, egress_ip, p.key.daddr);
	if (!ret)
		ret = egress_snat_prepare(&p, egress_ip);
	if (ret) {
		*verdict = drop_skb(skb, ret);
		return 1;
	}
	if (bpf_skb_adjust_room(skb, -(__s32)ENCAP_LEN, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_DECAP_L3_IPV4)) {
		*verdict = drop_skb(skb, DROP_DECAP_FAILED);
		return 1;
	}
	p.l4off -= ENCAP_LEN;
	*verdict = egress_out(skb, cfg, &p, egress_ip, 1);
	return 1;
}

/* egress_reply is the hook of from_uplink for packets that are not our
 * Geneve: a reply to an SNATed flow (to an egress address and an SNAT
 * port) is reverse-SNATed and handed to its pod. Returns 0 for anything
 * else (the caller lets it pass to the stack), else 1 with the verdict. */
__egress_hook int egress_reply(struct __sk_buff *skb, const struct node_config *cfg, int *verdict)
{
	struct egress_ip *r;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ct_entry e;
	struct iphdr *ip;
	struct ct_pkt p;
	__u8 *l4;
	__u16 port;
	int ret;

	/* The gate: cheap checks on the linear head, then one small hash
	 * lookup, before conntrack. The node's own traffic pays this. */
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	l4 = (void *)ip + ip->ihl * 4;
	if ((void *)(l4 + 8) > data_end)
		return 0;	/* not linear: not a packet we gate in */
	switch (ip->protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		port = bpf_ntohs(*(__be16 *)(l4 + 2));
		break;
	case IPPROTO_ICMP:
		if (l4[0] != ICMP_ECHOREPLY_T)
			return 0;
		port = bpf_ntohs(*(__be16 *)(l4 + 4));
		break;
	default:
		return 0;
	}
	/* The node's own traffic: its ephemeral ports on its own address skip
	 * the lookup. */
	if (port < EGRESS_PORT_FLOOR || (ip->daddr == cfg->underlay_ip && port < EGRESS_PORT_MIN))
		return 0;
	/* The node's own address SNATs the flows of the pods whose default
	 * network is their VPC (egress_node_out) without an entry. */
	r = bpf_map_lookup_elem(&genie_egress_ips, &ip->daddr);
	if (r ? port < r->port_min || port > r->port_max : ip->daddr != cfg->underlay_ip)
		return 0;
	if (!egress_parse(skb, ETH_HLEN, 0, &p))
		return 0;
	if (!ct_lookup(&p, bpf_ktime_get_ns(), &e) ||
	    (e.flags & (CT_F_EGRESS | CT_F_REPLY)) != (CT_F_EGRESS | CT_F_REPLY))
		return 0;
	ret = egress_nat(skb, ETH_HLEN, &p, 1, p.key.daddr, e.dst_addr, p.key.dport, e.dst_port);
	if (ret) {
		*verdict = drop_skb(skb, ret);
		return 1;
	}
	*verdict = egress_to_pod(skb, cfg, e.vni, e.dst_addr);
	return 1;
}

/* egress_tunnel_reply is the hook of from_uplink when the inner source of
 * Geneve packet gi is no endpoint of its VNI: 1 if the packet is the reply
 * of a flow this node pinned to the sending gateway in that VNI (it may be
 * delivered), 0 otherwise (FORGED). */
__egress_hook int egress_tunnel_reply(struct __sk_buff *skb, const struct geneve_info *gi)
{
	struct egress_scratch *w = egress_scratch_get();
	struct ct_entry *e;
	struct ct_pkt p;
	struct ct_key k;

	if (!egress_parse(skb, ETH_HLEN + ENCAP_LEN, gi->vni, &p))
		return 0;
	k.vni = gi->vni;
	k.saddr = p.key.daddr;
	k.daddr = p.key.saddr;
	k.sport = p.key.dport;
	k.dport = p.key.sport;
	k.proto = p.key.proto;
	k.pad[0] = k.pad[1] = k.pad[2] = 0;
	e = bpf_map_lookup_elem(&genie_egress_flows, &k);
	if (!e || e->dst_addr != gi->outer_saddr)
		return 0;
	return w && ct_touch(e, &p, bpf_ktime_get_ns(), &w->pin);
}
