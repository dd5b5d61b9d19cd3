/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps of the service load balancer and of the connection tracker it
 * shares with NAT features (lib/lb.h, lib/conntrack.h, lib/nat.h). Included
 * from maps.h; same conventions: pinned by name, IPv4 addresses and ports in
 * network byte order, VNIs in host byte order, every key scoped by VNI.
 * Keep the layouts in sync with pkg/datapath/service.go and conntrack.go.
 */
#pragma once

#include "common.h"

#ifndef MAX_SERVICES
#define MAX_SERVICES 8192	/* {vni, vip, port, proto} entries on one node */
#endif
#ifndef MAX_CT
#define MAX_CT 131072		/* conntrack entries (two per flow: forward + reply) */
#endif
#ifndef MAGLEV_INNER_SLOTS
#define MAGLEV_INNER_SLOTS 16381	/* inner-map template size; real tables use their own M */
#endif

/* A service frontend, as seen in a pod's packet. */
struct svc_key {
	__u32 vni;
	__be32 vip;
	__be16 port;
	__u8 proto;		/* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

#define SVC_F_AFFINITY_CLIENTIP 0x1	/* hash the client address only */

struct svc_info {
	__u32 table;		/* key of the service's Maglev table in genie_maglev */
	__u32 m;		/* its size (a prime), the modulus of the flow hash */
	__u16 flags;		/* SVC_F_* */
	__u16 backends;		/* number of distinct backends (0: drop NO_BACKEND) */
	__be16 target_port;	/* the backends' port (every slot has it) */
	__u16 pad;
};

/* One Maglev slot: the backend a flow hashing there goes to (same VPC as
 * the service). */
struct lb_backend {
	__be32 ip;
	__be16 port;
	__u16 pad;
};

/* The conntrack key: a VPC's 5-tuple as the packet carries it. */
struct ct_key {
	__u32 vni;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

#define CT_F_SNAT	0x1	/* rewrite the source to src_addr:src_port */
#define CT_F_DNAT	0x2	/* rewrite the destination to dst_addr:dst_port */
#define CT_F_REPLY	0x4	/* this entry matches the reply direction */
#define CT_F_RST	0x8	/* TCP: a RST crossed this direction: the flow is over on
				 * both sides, and once this entry expires
				 * (CT_CLOSE_TIMEOUT after the RST) its pair goes too */

#define CT_NEW		0	/* TCP: SYN seen (or a UDP flow) */
#define CT_ESTABLISHED	1	/* TCP: a packet without SYN/FIN/RST after the first */
#define CT_CLOSING	2	/* TCP: FIN or RST seen */

/* A conntrack entry: what to do with the packets of one direction of a
 * flow. A flow has two, each keyed by the tuple its direction carries. */
struct ct_entry {
	__u64 expires;		/* CLOCK_MONOTONIC deadline (lb_now); GC deletes the pair after it */
	__be32 src_addr;
	__be32 dst_addr;
	__be16 src_port;
	__be16 dst_port;
	__u8 flags;		/* CT_F_* */
	__u8 state;		/* CT_NEW, CT_ESTABLISHED, CT_CLOSING */
	__u16 pad;
	__u32 vni;		/* the flow's VPC (for keys of traffic without one) */
	union {
		__u32 svc_table;	/* a service flow's: the Maglev table the backend came from, 0 if none */
		__u32 fin_tsval;	/* an egress reply entry's with CT_F_EGRESS_FIN: the TCP
					 * timestamp of the pod side's FIN (egress.h) */
	};
};

#define LB_PORT_FRONTEND 0x1	/* some frontend listens on this port */
#define LB_PORT_TARGET 0x2	/* some backend serves on this port */

/* port (host order) -> LB_PORT_* (written by Go from genie_svc): a packet
 * whose destination port no frontend uses and whose source port no
 * backend serves skips both hash lookups (ARRAY lookups are inlined). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u8);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_lb_ports SEC(".maps");

/* {vni, vip, port, proto} -> the service's Maglev table and flags. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct svc_key);
	__type(value, struct svc_info);
	__uint(max_entries, MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_svc SEC(".maps");

/* Template of a Maglev table: slot -> backend. BPF_F_INNER_MAP lets every
 * table have its own size M. */
struct maglev_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct lb_backend));
	__uint(max_entries, MAGLEV_INNER_SLOTS);
	__uint(map_flags, BPF_F_INNER_MAP);
};

/* table id -> Maglev table; a changed service gets a new id (atomic swap). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, MAX_SERVICES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct maglev_table);
} genie_maglev SEC(".maps");

/* {vni, 5-tuple} -> NAT of that direction, TCP state, expiry (LRU; GC in Go). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, MAX_CT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_ct SEC(".maps");
