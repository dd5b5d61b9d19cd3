/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Drop tracing (geniectl trace): the maps of lib/trace.h. Included from
 * maps.h, pinned by name like every other map. */
#pragma once

#include "common.h"

#ifndef TRACE_RINGBUF_BYTES
#define TRACE_RINGBUF_BYTES (256 * 1024)	/* about 4600 events */
#endif

/* Written by the agent: enabled is non-zero while at least one client
 * traces; lost counts events the ring had no room for. */
struct trace_state {
	__u32 enabled;
	__u32 pad;
	__u64 lost;
};

/* What the drop path reports, one per dropped packet while tracing.
 * Addresses and ports as in the packet (network byte order); of the inner
 * packet for Geneve from the uplink. */
struct trace_event {
	__u64 ts_ns;		/* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u32 ifindex;		/* ingress: host-side pod veth or the uplink */
	__u32 vni;		/* the pod's (genie_lxc) or the Geneve header's; 0 unknown */
	__be32 saddr;		/* IPv4 source, or ARP sender address */
	__be32 daddr;		/* IPv4 destination, or ARP target address */
	__be32 outer_saddr;	/* Geneve: the sending node's underlay address */
	__be16 sport;		/* TCP/UDP ports; ICMP: type, code */
	__be16 dport;
	__u32 len;		/* skb->len */
	__u16 eth_proto;	/* EtherType of the (inner) frame, host order */
	__u8 reason;		/* -DROP_* */
	__u8 proto;		/* IP protocol; 0 if not IPv4 */
	__u8 flags;		/* TRACE_F_* */
	__u8 pad[3];
	__u8 smac[ETH_ALEN];	/* (inner) Ethernet source */
	__u8 dmac[ETH_ALEN];	/* (inner) Ethernet destination */
};

#define TRACE_F_POD	0x01	/* ingress ifindex is a pod veth (genie_lxc) */
#define TRACE_F_GENEVE	0x02	/* Geneve from the uplink: vni, outer_saddr set */
#define TRACE_F_L4	0x04	/* sport/dport set */

/* The trace switch and the lost-event counter (single entry). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct trace_state);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_trace_state SEC(".maps");

/* Drop events for the agent's single reader (datapath.TraceReader). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, TRACE_RINGBUF_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_trace SEC(".maps");

/* trace_drop's buffers for the headers it reads (per CPU): trace_drop runs
 * at the end of the deepest call chain (from_pod -> an egress hook ->
 * drop_skb), so its own stack frame must stay a few bytes
 * (docs/design.md, "Stack budget"). */
struct trace_scratch {
	__u8 eth[16];		/* a struct ethhdr (14 used) */
	__u32 ip[5];		/* a struct iphdr (bpf2go cannot render its union) */
	__u8 hdr[16];		/* UDP + Geneve */
	__u8 l4[4];
	__be32 arp[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct trace_scratch);
	__uint(max_entries, 1);
} genie_trace_scratch SEC(".maps");
