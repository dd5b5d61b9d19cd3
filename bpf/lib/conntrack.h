/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking, shared by every NAT feature (service DNAT, egress
 * SNAT): genie_ct maps {vni, 5-tuple} of one direction of a flow to what
 * must be done to its packets (struct ct_entry: rewrites, TCP state, expiry).
 * A flow has a forward and a reply entry, created together by ct_create.
 *
 * Timeouts follow the TCP state seen on each direction: a new flow (SYN, or
 * the first packet of any flow) lives CT_SYN_TIMEOUT, an established one
 * CT_TCP_TIMEOUT, a closing one (FIN or RST seen) CT_CLOSE_TIMEOUT (an egress
 * SNAT flow closed by FINs CT_EGRESS_CLOSE_TIMEOUT, the server's TIME_WAIT);
 * UDP CT_UDP_TIMEOUT from its last packet. The data path only moves
 * deadlines; expired pairs are deleted by the GC in pkg/datapath
 * (conntrack.go), and the LRU evicts the least recently used entries if the
 * map fills anyway.
 *
 * A RST crosses one direction only, and the other side sends nothing more:
 * its entry would stay established for CT_TCP_TIMEOUT, and an egress SNAT
 * port with it (4,536 aborted connections to one server took a node
 * address's ports for six hours). So the direction that carried it is
 * marked CT_F_RST, and a pair one of whose entries is so marked and expired
 * is over (the GC, egress_reclaim), CT_CLOSE_TIMEOUT after the RST: the
 * peer that received it has no TIME_WAIT to respect, as with nf_conntrack's
 * CLOSE state. Neither FIN nor RST is checked against the window.
 */
#pragma once

#include "common.h"
#include "maps.h"
#include "drop.h"
#include "eth.h"

#define NSEC 1000000000ULL
#ifndef CT_SYN_TIMEOUT
#define CT_SYN_TIMEOUT (60 * NSEC)
#endif
#ifndef CT_TCP_TIMEOUT
#define CT_TCP_TIMEOUT (6 * 3600 * NSEC)
#endif
#ifndef CT_CLOSE_TIMEOUT
#define CT_CLOSE_TIMEOUT (10 * NSEC)
#endif
/* A closed egress SNAT flow keeps its port pair this long: the outside
 * server holds the connection in TIME_WAIT for 60 s (Linux's
 * TCP_TIMEWAIT_LEN) and answers a SYN on the same tuple inside it with the
 * old connection's ACK unless the SYN's timestamp is later than the old
 * one's; egress_reclaim (egress.h) hands a held pair on early only to such
 * a SYN. */
#ifndef CT_EGRESS_CLOSE_TIMEOUT
#define CT_EGRESS_CLOSE_TIMEOUT (60 * NSEC)
#endif
#ifndef CT_UDP_TIMEOUT
#define CT_UDP_TIMEOUT (60 * NSEC)
#endif
/* Deadlines move at most once per this interval: no write per packet. */
#define CT_REFRESH_NS NSEC

/* TCP flags, as in byte 13 of the TCP header. */
#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_ACK 0x10

/* A parsed L4 packet: its tuple, where the L4 header starts, TCP flags. */
struct ct_pkt {
	struct ct_key key;
	__u32 l4off;
	__u8 tcp_flags;
};

/* ct_parse fills p for an unfragmented TCP or UDP IPv4 packet whose IPv4
 * header starts at l3off, in VPC vni. Returns 1 if the packet is one,
 * 0 for anything else (other protocols, fragments, short L4 headers: the
 * caller leaves them alone). The first l4off + 14 (TCP) or + 8 (UDP) bytes
 * are linear afterwards; packet pointers must be reloaded. */
__inline int ct_parse(struct __sk_buff *skb, __u32 l3off, __u32 vni, struct ct_pkt *p)
{
	void *data, *data_end;
	struct iphdr *ip;
	__u32 l4off, need;
	__u8 *l4, proto;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + l3off;
	if ((void *)(ip + 1) > data_end)
		return 0;
	proto = ip->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;
	l4off = l3off + ip->ihl * 4;
	need = l4off + (proto == IPPROTO_TCP ? 14 : 8);
	if (data + need > data_end) {
		if (!skb_ensure(skb, need))
			return 0;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		ip = data + l3off;
		if ((void *)(ip + 1) > data_end)
			return 0;
	}
	l4 = data + l4off;
	if ((void *)(l4 + 8) > data_end)
		return 0;
	p->l4off = l4off;
	p->key.vni = vni;
	p->key.saddr = ip->saddr;
	p->key.daddr = ip->daddr;
	p->key.sport = *(__be16 *)l4;
	p->key.dport = *(__be16 *)(l4 + 2);
	p->key.proto = proto;
	p->key.pad[0] = p->key.pad[1] = p->key.pad[2] = 0;
	p->tcp_flags = 0;
	if (proto == IPPROTO_TCP) {
		if ((void *)(l4 + 14) > data_end)
			return 0;
		p->tcp_flags = l4[13];
	}
	return 1;
}

/* ct_next returns e's state and deadline after a packet with tcp_flags. */
__inline void ct_next(struct ct_entry *e, const struct ct_pkt *p, __u64 now)
{
	__u64 t;

	if (p->key.proto != IPPROTO_TCP) {
		e->expires = now + CT_UDP_TIMEOUT;
		return;
	}
	if (p->tcp_flags & TCPF_RST)
		e->flags |= CT_F_RST;
	if (p->tcp_flags & (TCPF_FIN | TCPF_RST))
		e->state = CT_CLOSING;
	else if (!(p->tcp_flags & TCPF_SYN) && e->state == CT_NEW)
		e->state = CT_ESTABLISHED;
	switch (e->state) {
	case CT_ESTABLISHED:
		t = CT_TCP_TIMEOUT;
		break;
	case CT_CLOSING:
		t = (e->flags & (CT_F_EGRESS | CT_F_RST)) == CT_F_EGRESS ?
			    CT_EGRESS_CLOSE_TIMEOUT : CT_CLOSE_TIMEOUT;
		break;
	default:
		t = CT_SYN_TIMEOUT;
	}
	e->expires = now + t;
}

/* ct_new_init sets up a fresh entry: state CT_NEW (or CT_CLOSING if the
 * first packet already closes) and its first deadline. */
__inline void ct_new_init(struct ct_entry *e, const struct ct_pkt *p, __u64 now)
{
	e->state = CT_NEW;
	if (p->key.proto == IPPROTO_TCP) {
		e->expires = now + CT_SYN_TIMEOUT;
		if (p->tcp_flags & (TCPF_FIN | TCPF_RST)) {
			e->state = CT_CLOSING;
			e->expires = now + CT_CLOSE_TIMEOUT;
		}
	} else {
		e->expires = now + CT_UDP_TIMEOUT;
	}
}

/* ct_store writes the state and deadline of n, e's copy after ct_next, back
 * into e when the state changes or the deadline moved enough (no write per
 * packet), and its CT_F_RST: only that bit, so a flag another CPU set in
 * the meantime (egress_note_fin's) is not undone. */
__inline void ct_store(struct ct_entry *e, const struct ct_entry *n)
{
	if (n->state != e->state || n->expires > e->expires + CT_REFRESH_NS ||
	    n->expires < e->expires) {
		e->state = n->state;
		e->expires = n->expires;
	}
	if ((n->flags & CT_F_RST) && !(e->flags & CT_F_RST))
		e->flags |= CT_F_RST;
}

/* ct_lookup copies the live entry for p's tuple into *out and moves its
 * state and deadline. Returns 0 if there is none, it has expired, or it is
 * a closed TCP flow that a new SYN reopens (the caller then creates a new
 * one, possibly with another backend). */
__inline int ct_lookup(const struct ct_pkt *p, __u64 now, struct ct_entry *out)
{
	struct ct_entry *e = bpf_map_lookup_elem(&genie_ct, &p->key);
	struct ct_entry n;

	if (!e)
		return 0;
	n = *e;
	if (now > n.expires)
		return 0;
	if (n.state == CT_CLOSING && (p->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN)
		return 0;
	ct_next(&n, p, now);
	ct_store(e, &n);
	*out = n;
	return 1;
}

/* ct_reply_key returns the key of the reply to a forward packet p whose
 * rewrite is fwd: the reply comes from the rewritten destination, to the
 * rewritten source. */
__inline void ct_reply_key(const struct ct_pkt *p, const struct ct_entry *fwd,
			   struct ct_key *r)
{
	r->vni = p->key.vni;
	r->proto = p->key.proto;
	r->pad[0] = r->pad[1] = r->pad[2] = 0;
	r->saddr = (fwd->flags & CT_F_DNAT) ? fwd->dst_addr : p->key.daddr;
	r->sport = (fwd->flags & CT_F_DNAT) ? fwd->dst_port : p->key.dport;
	r->daddr = (fwd->flags & CT_F_SNAT) ? fwd->src_addr : p->key.saddr;
	r->dport = (fwd->flags & CT_F_SNAT) ? fwd->src_port : p->key.sport;
}

/* ct_create stores the forward entry *fwd for p (its rewrites set by the
 * caller) and the matching reply entry, which undoes them: the reply's
 * source goes back to p's destination, its destination to p's source.
 * Returns 0, or DROP_CT_FAILED if either insert failed (the forward entry
 * is removed again: no half flow is left behind). */
__inline int ct_create(const struct ct_pkt *p, struct ct_entry *fwd, __u64 now)
{
	struct ct_entry rev = {};
	struct ct_key rk;

	ct_new_init(fwd, p, now);
	ct_reply_key(p, fwd, &rk);
	rev.flags = CT_F_REPLY;
	if (fwd->flags & CT_F_DNAT) {
		rev.flags |= CT_F_SNAT;
		rev.src_addr = p->key.daddr;
		rev.src_port = p->key.dport;
	}
	if (fwd->flags & CT_F_SNAT) {
		rev.flags |= CT_F_DNAT;
		rev.dst_addr = p->key.saddr;
		rev.dst_port = p->key.sport;
	}
	rev.state = fwd->state;
	rev.expires = fwd->expires;
	rev.vni = fwd->vni;
	rev.svc_table = fwd->svc_table;

	if (bpf_map_update_elem(&genie_ct, &p->key, fwd, BPF_ANY))
		return DROP_CT_FAILED;
	if (bpf_map_update_elem(&genie_ct, &rk, &rev, BPF_ANY)) {
		bpf_map_delete_elem(&genie_ct, &p->key);
		return DROP_CT_FAILED;
	}
	return 0;
}

/* ct_touch moves the state and deadline of the live entry e (a map value
 * of any conntrack-shaped map) for packet p and copies it into *out, as
 * ct_lookup does for genie_ct. Returns 0 if e has expired or is a closed
 * TCP flow that a new SYN reopens. */
__inline int ct_touch(struct ct_entry *e, const struct ct_pkt *p, __u64 now,
		      struct ct_entry *out)
{
	struct ct_entry n = *e;

	if (now > n.expires)
		return 0;
	if (n.state == CT_CLOSING && (p->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN)
		return 0;
	ct_next(&n, p, now);
	ct_store(e, &n);
	*out = n;
	return 1;
}

#ifndef EEXIST
#define EEXIST 17
#endif

/* ct_create_pair stores a flow's two entries under explicit keys (for NAT
 * whose reply key is not ct_reply_key's, e.g. egress SNAT, whose reply key
 * has VNI 0): the reply entry only if its key is free (BPF_NOEXIST), so a
 * caller allocating a port learns of a clash and tries another; then the
 * forward entry. Returns 0, -EEXIST if rk is taken, or DROP_CT_FAILED (no
 * half flow is left behind). */
__inline int ct_create_pair(const struct ct_key *fk, const struct ct_entry *fwd,
			    const struct ct_key *rk, const struct ct_entry *rev)
{
	long err = bpf_map_update_elem(&genie_ct, rk, rev, BPF_NOEXIST);

	if (err == -EEXIST)
		return -EEXIST;
	if (err)
		return DROP_CT_FAILED;
	if (bpf_map_update_elem(&genie_ct, fk, fwd, BPF_ANY)) {
		bpf_map_delete_elem(&genie_ct, rk);
		return DROP_CT_FAILED;
	}
	return 0;
}
