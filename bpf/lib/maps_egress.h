/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps of the egress gateway (lib/egress.h). Included from maps.h; same
 * conventions: pinned by name, IPv4 addresses and ports in network byte
 * order, VNIs and ids in host byte order, every key about a VPC scoped by
 * its VNI. Keep the layouts in sync with pkg/datapath/egress.go (which uses
 * the structs bpf2go generates from this file).
 *
 * Who writes what (pkg/egress/egressagent):
 *   every node hosting a VPC: its routes, its policies' gateway sets and the
 *     selection of its local pods;
 *   a gateway node: the VNIs it serves and its egress addresses (and the
 *     routes of those VPCs, to refuse internal destinations);
 *   the data plane: the flow pins (pod side) and the SNAT pairs (genie_ct).
 */
#pragma once

#include "common.h"

#ifndef MAX_VPC_ROUTES
#define MAX_VPC_ROUTES 16384	/* {vni, prefix} routes of the hosted VPCs */
#endif
#ifndef MAX_EGRESS_POLICIES
#define MAX_EGRESS_POLICIES 4096	/* egress policies known to a node */
#endif
#ifndef MAX_EGRESS_SELECT
#define MAX_EGRESS_SELECT 65536	/* {route, local pod} selections */
#endif
#ifndef MAX_EGRESS_FLOWS
#define MAX_EGRESS_FLOWS 65536	/* pod-side flow -> gateway pins (LRU) */
#endif
#ifndef MAX_EGRESS_IPS
#define MAX_EGRESS_IPS 256	/* egress addresses of one gateway node */
#endif
#define EGRESS_MAX_GW 8		/* gateways per policy (active + draining) */

/* Conntrack flag of egress entries (struct ct_entry in maps_lb.h; high bit,
 * away from the service flags): in genie_ct the gateway's SNAT pair, whose
 * reply key has VNI 0 (the outside has none; ct_entry.vni keeps the VPC);
 * in genie_egress_flows a pod-side pin (dst_addr = the gateway). */
#define CT_F_EGRESS 0x80
/* An egress reply entry whose pod side sent a FIN with a TCP timestamp,
 * kept in fin_tsval: a new SYN with a later timestamp may take its port
 * pair over inside the server's TIME_WAIT (egress.h, egress_reclaim). */
#define CT_F_EGRESS_FIN 0x40

/* lxc_info.flags bit 2 (bits 0-1 and 4-15 are QoS's, lib/qos.h): the
 * attachment is its pod's default network in a VPC that may be one
 * (pkg/agent egress_host.go). Its pod reaches its node (the host stack), and
 * what leaves the VPC without an egress policy selecting it goes out through
 * this node, SNATed to its underlay address (egress_from_pod). */
#define LXC_F_NODE_NET 0x4

/* Route kinds. */
#define VPC_ROUTE_INTERNAL 1	/* the VPC's own CIDR: never egress */
#define VPC_ROUTE_EGRESS 2	/* leaves the VPC through a policy's gateways */
#define VPC_ROUTE_HOST 3	/* a LXC_F_NODE_NET pod's packet goes to its node's stack
				 * unNATed (the cluster's Service CIDR: kube-proxy);
				 * anyone else's is not routed */

/* LPM key: prefixlen counts the VNI's 32 bits plus the address prefix, so
 * a lookup matches the VNI exactly and the address by longest prefix. */
struct vpc_route_key {
	__u32 prefixlen;
	__u32 vni;		/* always fully covered (prefixlen >= 32): byte order is moot */
	__be32 addr;
};

struct vpc_route {
	__u8 kind;		/* VPC_ROUTE_* */
	__u8 pad[3];
	__u32 policy;		/* the policy of pods without a selection entry (0: none) */
	__u32 route;		/* id of this route in genie_egress_select (0: no entries) */
};

/* A policy's gateways: gw[0..active) take new flows, gw[active..all) are
 * draining (only flows pinned to them use them). A dead gateway is in
 * neither: its flows re-pick. */
struct egress_policy {
	__u8 active;
	__u8 all;
	__u16 pad;
	__be32 gw[EGRESS_MAX_GW];
};

struct egress_select_key {
	__u32 route;
	__be32 pod;
};

/* What a gateway does for a VPC it serves: SNAT to egress_ip. */
struct egress_gw {
	__be32 egress_ip;
	__u32 pad;
};

/* {vni, dst prefix} -> internal, or egress by policy (LPM). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct vpc_route_key);
	__type(value, struct vpc_route);
	__uint(max_entries, MAX_VPC_ROUTES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_vpc_routes SEC(".maps");

/* {route, local pod ip} -> the policy that selects this pod for that route
 * (0: selected by none, counted drop), overriding vpc_route.policy. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct egress_select_key);
	__type(value, __u32);
	__uint(max_entries, MAX_EGRESS_SELECT);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_egress_select SEC(".maps");

/* policy id -> its gateway sets (node underlay addresses). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct egress_policy);
	__uint(max_entries, MAX_EGRESS_POLICIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_egress_policies SEC(".maps");

/* Pod side: {vni, 5-tuple} of a pod's flow -> its gateway (ct_entry with
 * dst_addr = the gateway, flag CT_F_EGRESS), so a flow keeps its gateway
 * while that one stays active or draining. LRU; GC in Go. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, MAX_EGRESS_FLOWS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_egress_flows SEC(".maps");

/* Gateway side: vni -> the egress address this node SNATs that VPC to. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct egress_gw);
	__uint(max_entries, MAX_VNIS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_egress_gw SEC(".maps");

/* An egress address's SNAT port range (host order): 61000-65535 for the
 * node's own address, whose sockets use the ephemeral range below; a
 * dedicated address, on which the node has no sockets, 1024-65535. */
struct egress_ip {
	__u16 port_min;
	__u16 port_max;
};

/* Gateway side: this node's egress addresses (replies to them may be
 * reverse-SNATed) and their port ranges (PruneEgressIPs removes unused
 * ones). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, struct egress_ip);
	__uint(max_entries, MAX_EGRESS_IPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_egress_ips SEC(".maps");

/* Working memory of the egress hooks, one per CPU: they run inside from_pod
 * and from_uplink, whose own frames leave them little of the 512-byte BPF
 * stack. gw is also the gateway egress_from_pod hands back to from_pod as
 * a remote endpoint to encapsulate to. */
struct egress_scratch {
	struct endpoint_info gw;
	__u64 pkt[4];		/* a struct ct_pkt (conntrack.h, which includes this file) */
	struct ct_entry fwd;
	struct ct_entry rev;
	struct ct_entry pin;
	struct ct_key rk;
	struct ct_key pk;
	__u64 fib[8];		/* a struct bpf_fib_lookup (bpf2go cannot render its unions) */
	__u32 neigh[5];		/* a struct bpf_redir_neigh (a union again) */
	__u8 eth[16];		/* the Ethernet header of an SNATed packet (14 used) */
	__u32 tsval;		/* the TCP timestamp of the last SYN or FIN egress_parse saw, */
	__u32 ts_ok;		/* if this is 1 */
	__u8 opt[40];		/* that packet's TCP options (egress_tcp_ts) */
};
_Static_assert(sizeof(struct bpf_fib_lookup) == 8 * sizeof(__u64), "bpf_fib_lookup size");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct egress_scratch);
	__uint(max_entries, 1);
} genie_egress_scratch SEC(".maps");
