/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Services load-balanced in the pod's own program, scoped to its VPC.
 *
 * lb_from_pod runs in from_pod after the anti-spoof checks:
 *   - a TCP/UDP packet to a frontend port first looks up its flow in
 *     conntrack: a live entry gives the backend (one hash lookup for an
 *     established flow). Otherwise, if {vni, vip, port, proto} is in
 *     genie_svc, a slot of the service's Maglev table picked by the flow
 *     hash gives the backend of the new flow, tracked from then on. The
 *     destination is DNATed to the backend, and the packet takes the
 *     normal local or encap path to it. (DeleteService deletes the flows
 *     of its frontend, since their entries are found before the service.)
 *   - any other packet may be the reply of a flow whose client is on this
 *     node and whose backend is too: its reply entry reverse-NATs the
 *     source back to the VIP.
 * lb_rev_nat runs on decapsulated packets (from_uplink): the reply of a
 * remote backend to a local client gets its source back to the VIP there.
 * So all service state of a flow lives on the client's node, and the inner
 * source on the wire is always the backend's real address (the uplink's
 * source check stays strict).
 *
 * Hairpin: a pod whose flow lands on itself gets its source rewritten to
 * the VIP as well (the kernel would drop a packet from its own address as
 * a martian); the reply entry undoes both rewrites.
 *
 * Gate: genie_lb_ports marks the ports frontends listen on and backends
 * serve on; other packets skip both hash lookups.
 *
 * IP fragments are not load-balanced: only the first fragment carries the
 * ports, so the later ones would need a {vni, src, dst, proto, IP id} ->
 * backend map filled by the first (and fragments arriving before it
 * queued or dropped). Pods rarely fragment (TCP uses the path MTU, and
 * the pod MTU already leaves room for the encapsulation); a datagram
 * larger than the pod MTU is an application choice (large UDP) that a
 * VIP does not serve. So the first fragment of a datagram to a frontend,
 * or of a tracked flow's reply (the backend's large UDP answer), is a
 * counted drop, SVC_FRAGMENT: the datagram then cannot be reassembled,
 * and the drop counter names why. Later fragments to a VIP are NO_ROUTE
 * drops (the VIP is no endpoint); later fragments of a reply reach the
 * client unchanged and expire in its reassembly queue.
 *
 * Not handled: ICMP (a ping to a VIP is a NO_ROUTE drop; ICMP errors about
 * a service flow are not translated), IPv6.
 */
#pragma once

#include "common.h"
#include "maps.h"
#include "drop.h"
#include "conntrack.h"
#include "nat.h"

#define LB_PASS 0	/* not a service packet: untouched */
#define LB_NAT 1	/* rewritten: reload packet pointers */

/* lb_port returns the LB_PORT_* flags of a port (network order). */
__inline __u8 lb_port(__be16 port)
{
	__u32 k = bpf_ntohs(port);
	__u8 *f = bpf_map_lookup_elem(&genie_lb_ports, &k);

	return f ? *f : 0;
}

/* lb_hash is the flow hash Maglev slots are picked with: the client address
 * only for ClientIP affinity, else the 5-tuple. Stable per flow. */
__inline __u32 lb_hash(const struct ct_key *k, int affinity)
{
	__u32 h = k->saddr * 0x9e3779b1;

	if (!affinity) {
		h ^= k->daddr;
		h = (h << 13 | h >> 19) * 0x85ebca6b;
		h ^= ((__u32)k->sport << 16 | k->dport) ^ k->proto;
	}
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* lb_first_frag_of_service reports whether the IPv4 packet at l3off (VPC
 * vni) is the first fragment of a TCP/UDP datagram to a service frontend
 * (from_pod only) or of a tracked service flow. Cheap for everything
 * else: it returns at the fragment bits. */
__inline int lb_first_frag_of_service(struct __sk_buff *skb, __u32 l3off, __u32 vni,
				      int from_pod)
{
	struct svc_key sk = {};
	struct ct_key k = {};
	struct ct_entry *e;
	struct iphdr ip;
	__be16 ports[2];

	/* Copies, not packet pointers: the caller's parse may have pulled. */
	if (bpf_skb_load_bytes(skb, l3off, &ip, sizeof(ip)))
		return 0;
	if ((ip.frag_off & bpf_htons(IP_MF | IP_OFFSET)) != bpf_htons(IP_MF))
		return 0;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return 0;
	if (bpf_skb_load_bytes(skb, l3off + ip.ihl * 4, ports, sizeof(ports)))
		return 0;
	k.vni = vni;
	k.saddr = ip.saddr;
	k.daddr = ip.daddr;
	k.sport = ports[0];
	k.dport = ports[1];
	k.proto = ip.protocol;
	if (from_pod && (lb_port(k.dport) & LB_PORT_FRONTEND)) {
		sk.vni = vni;
		sk.vip = k.daddr;
		sk.port = k.dport;
		sk.proto = k.proto;
		if (bpf_map_lookup_elem(&genie_svc, &sk))
			return 1;
	}
	if (!(lb_port(k.dport) & LB_PORT_FRONTEND) && !(lb_port(k.sport) & LB_PORT_TARGET))
		return 0;
	e = bpf_map_lookup_elem(&genie_ct, &k);
	return e && e->svc_table && !(e->flags & CT_F_EGRESS);
}

/* lb_pick chooses the backend of a new flow of service svc. */
__inline int lb_pick(const struct ct_key *k, const struct svc_info *svc,
		     struct lb_backend *out)
{
	struct lb_backend *be;
	__u32 table = svc->table, slot;
	void *t;

	if (!svc->backends || !svc->m)
		return DROP_NO_BACKEND;
	t = bpf_map_lookup_elem(&genie_maglev, &table);
	if (!t)
		return DROP_NO_BACKEND;
	slot = lb_hash(k, svc->flags & SVC_F_AFFINITY_CLIENTIP) % svc->m;
	be = bpf_map_lookup_elem(t, &slot);
	if (!be || !be->ip)
		return DROP_NO_BACKEND;
	*out = *be;
	return 0;
}

/* lb_now is the clock of conntrack deadlines: CLOCK_MONOTONIC at tick
 * resolution (a few ms late at most), which deadlines of seconds do not
 * notice; it reads the timekeeper without touching the clock source, far
 * cheaper than bpf_ktime_get_ns on a paravirtual clock (BENCHMARKS.md §5).
 * The GC compares with CLOCK_MONOTONIC, the same clock. */
__inline __u64 lb_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* lb_nat applies the tracked rewrite e to packet p. */
__inline int lb_nat(struct __sk_buff *skb, __u32 l3off, const struct ct_pkt *p,
		    const struct ct_entry *e, __be32 *daddr)
{
	int ret = nat_apply(skb, l3off, p->l4off, &p->key, e);

	if (ret)
		return ret;
	if (e->flags & CT_F_DNAT)
		*daddr = e->dst_addr;
	return LB_NAT;
}

/* lb_new_flow picks a backend of service svc for packet p, which has no
 * live conntrack entry, tracks the flow and DNATs the packet. */
__inline int lb_new_flow(struct __sk_buff *skb, const struct ct_pkt *p,
			 const struct svc_info *svc, __u64 now, __be32 *daddr)
{
	struct ct_entry e = {};
	struct lb_backend be;
	int ret;

	ret = lb_pick(&p->key, svc, &be);
	if (ret)
		return ret;
	e.flags = CT_F_DNAT;
	e.dst_addr = be.ip;
	e.dst_port = be.port;
	if (be.ip == p->key.saddr) {
		/* Hairpin: from the VIP, keeping the client port. */
		e.flags |= CT_F_SNAT;
		e.src_addr = p->key.daddr;
		e.src_port = p->key.sport;
	}
	e.vni = p->key.vni;
	e.svc_table = svc->table;
	ret = ct_create(p, &e, now);
	if (ret)
		return ret;
	return lb_nat(skb, ETH_HLEN, p, &e, daddr);
}

/* lb_reply reverse-NATs p if it is the reply direction of a tracked flow.
 * *daddr gets the (possibly rewritten) destination. */
__inline int lb_reply(struct __sk_buff *skb, __u32 l3off, const struct ct_pkt *p,
		      __be32 *daddr)
{
	struct ct_entry e;

	if (!ct_lookup(p, lb_now(), &e) || !(e.flags & CT_F_REPLY))
		return LB_PASS;
	return lb_nat(skb, l3off, p, &e, daddr);
}

/* lb_from_pod is the service hook of from_pod (see the top of the file) for
 * a packet of pod ep; *daddr is the destination to route on, updated when
 * the packet is rewritten. Returns LB_PASS, LB_NAT or a DROP_* code. */
__inline int lb_from_pod(struct __sk_buff *skb, const struct lxc_info *ep, __be32 *daddr)
{
	struct svc_info *svc, s;
	struct ct_entry e;
	struct svc_key sk;
	struct ct_pkt p;
	__u64 now;

	if (!ct_parse(skb, ETH_HLEN, ep->vni, &p)) {
		if (lb_first_frag_of_service(skb, ETH_HLEN, ep->vni, 1))
			return DROP_SVC_FRAGMENT;
		return LB_PASS;
	}
	if (!(lb_port(p.key.dport) & LB_PORT_FRONTEND))
		goto reply;
	/* Conntrack first: an established flow costs one hash lookup. */
	now = lb_now();
	if (ct_lookup(&p, now, &e)) {
		/* A service flow's entry, either direction (a hairpin reply
		 * may go to a frontend port); other features' entries (egress
		 * SNAT, whose union member is the FIN's timestamp) are not
		 * ours to apply. */
		if (!e.svc_table || (e.flags & CT_F_EGRESS))
			return LB_PASS;
		return lb_nat(skb, ETH_HLEN, &p, &e, daddr);
	}
	sk.vni = p.key.vni;
	sk.vip = p.key.daddr;
	sk.port = p.key.dport;
	sk.proto = p.key.proto;
	sk.pad = 0;
	svc = bpf_map_lookup_elem(&genie_svc, &sk);
	if (!svc)
		return LB_PASS;	/* and no entry for its tuple: no reply either */
	s = *svc;	/* a copy: no map-value pointer merges with the stack */
	return lb_new_flow(skb, &p, &s, now, daddr);
reply:
	/* A reply comes from a backend's port (or, hairpin, to a VIP from it). */
	if (!(lb_port(p.key.sport) & LB_PORT_TARGET))
		return LB_PASS;
	return lb_reply(skb, ETH_HLEN, &p, daddr);
}

/* lb_rev_nat is the service hook of the decap path: the packet (IPv4 at
 * l3off) of VPC vni, if it is the reply of a service flow of a local
 * client, gets its source back to the VIP. Returns LB_PASS, LB_NAT or a
 * DROP_* code. */
__inline int lb_rev_nat(struct __sk_buff *skb, __u32 vni, __u32 l3off)
{
	struct ct_pkt p;
	__be32 daddr;

	if (!ct_parse(skb, l3off, vni, &p)) {
		if (lb_first_frag_of_service(skb, l3off, vni, 0))
			return DROP_SVC_FRAGMENT;
		return LB_PASS;
	}
	if (!(lb_port(p.key.sport) & LB_PORT_TARGET))
		return LB_PASS;
	daddr = p.key.daddr;
	return lb_reply(skb, l3off, &p, &daddr);
}

/* lb_reload_ip re-derives the IPv4 header after lb_from_pod (which may pull
 * or rewrite the packet: packet pointers are invalid after either). NULL if
 * it is no longer there. */
__inline struct iphdr *lb_reload_ip(struct __sk_buff *skb, void **data_end)
{
	void *data = (void *)(long)skb->data;
	struct iphdr *ip = data + ETH_HLEN;

	*data_end = (void *)(long)skb->data_end;
	if ((void *)(ip + 1) > *data_end)
		return NULL;
	return ip;
}
