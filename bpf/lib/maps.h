/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every map of the data plane, with its purpose. All maps are pinned by name
 * (LIBBPF_PIN_BY_NAME) under the agent's pin directory, so every object file
 * shares them and they survive agent restarts. Every key that concerns a VPC
 * includes its VNI: isolation is by construction, not by policy.
 *
 * IPv4 addresses are stored as in the packet (network byte order); VNIs and
 * ifindexes in host byte order. The Go side uses the structs bpf2go generates
 * from this file (lxc_bpfel.go), so there is nothing to keep in sync by hand;
 * a changed layout makes maps pinned by an older agent incompatible
 * (ErrMapIncompatible on Open).
 */
#pragma once

#include "common.h"

#ifndef MAX_LXC
#define MAX_LXC 4096		/* pod interfaces on one node */
#endif
#ifndef MAX_ENDPOINTS
#define MAX_ENDPOINTS 65536	/* local + remote endpoints known to a node */
#endif
#ifndef MAX_VNIS
#define MAX_VNIS 4096		/* VPCs with endpoints on one node */
#endif
#ifndef MAX_MISS_SEEN
#define MAX_MISS_SEEN 4096	/* recently reported unknown destinations */
#endif
#ifndef MISS_RINGBUF_BYTES
#define MISS_RINGBUF_BYTES (64 * 1024)
#endif
#define MISS_INTERVAL_NS 1000000000ULL	/* report an unknown {vni, ip} at most once a second */
#define DROP_MAX 64		/* size of the drop counter array (> largest reason) */

/* The endpoint bound to a host-side pod veth: identity comes from here. */
struct lxc_info {
	__u32 vni;
	__be32 ip;
	__u8 mac[ETH_ALEN];
	__u16 flags;		/* QoS class and HTB minor (lib/qos.h) */
};

struct endpoint_key {
	__u32 vni;
	__be32 ip;
};

struct endpoint_info {
	__u32 ifindex;		/* host-side veth if local, 0 if remote */
	__be32 node_ip;		/* underlay IPv4 of the hosting node (remote) */
	__u8 mac[ETH_ALEN];	/* pod MAC */
	__u16 pad;
};

struct node_config {
	__be32 underlay_ip;	/* outer source address */
	__u32 uplink_ifindex;	/* FIB lookup oif for the outer packet */
	__u8 uplink_mac[ETH_ALEN]; /* informational: the outer MACs come from the FIB */
	__u8 gw_mac[ETH_ALEN];	/* the virtual gateway pods see */
};

/* host-side veth ifindex -> the pod endpoint behind it (VNI, IP, MAC). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lxc_info);
	__uint(max_entries, MAX_LXC);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_lxc SEC(".maps");

/* {vni, ipv4} -> where the endpoint lives (local veth or remote node). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, MAX_ENDPOINTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_endpoints SEC(".maps");

/* VNI -> number of local endpoints; the uplink accepts Geneve only for these. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, MAX_VNIS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_vnis SEC(".maps");

/* The node's own addresses (single entry, written by the agent on start). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct node_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_config SEC(".maps");

/* Per-CPU drop counters indexed by -DROP_* (see drop.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, DROP_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_drops SEC(".maps");

/* Unknown destinations and sources {vni, ip} for on-demand endpoint
 * resolution: in directory mode the agent looks each up in the directory and
 * installs it in genie_dir_lru (lib/directory.h); in vpc-sync mode nothing
 * reads it (every remote endpoint is pushed by the store watch). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MISS_RINGBUF_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_misses SEC(".maps");

/* {vni, ip} -> time of its last miss report (rate limit per address). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct endpoint_key);
	__type(value, __u64);
	__uint(max_entries, MAX_MISS_SEEN);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_miss_seen SEC(".maps");

#include "maps_lb.h"	/* service LB and conntrack: genie_svc, genie_maglev, genie_ct */
#include "maps_qos.h"	/* QoS ingress limits: genie_qos_ingress */
#include "maps_trace.h"	/* drop tracing: genie_trace_state, genie_trace */
#include "maps_directory.h"	/* endpoint directory: genie_dir_* */
#include "maps_egress.h"	/* egress gateway: genie_vpc_routes, genie_egress_* */

/* QoS classes live in lxc_info.flags (lib/qos.h). */
