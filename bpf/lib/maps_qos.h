/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The map of QoS ingress rate limits (lib/qos.h). Included from maps.h; same
 * conventions. Keep the layout in sync with pkg/datapath/qos.go (the Go side
 * uses the struct bpf2go generates from this file).
 */
#pragma once

#include "common.h"

/* The token bucket of one pod interface's ingress limit, as GCRA: the bucket
 * is the single time tat (the theoretical arrival time: when the bytes
 * admitted so far would have drained at rate). One shared bucket per pod,
 * updated under its spin lock, so that the limit holds for the pod however
 * many CPUs deliver to it (see lib/qos.h for why not per-CPU or lock-free).
 * The agent writes rate and burst_ns; tat and the counters are the data
 * plane's (the agent zeroes them when it writes the bucket).
 */
struct qos_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 rate;		/* bits per second of L3 bytes (> 0) */
	__u64 burst_ns;		/* how far tat may run ahead of now: the burst, as time at rate */
	__u64 tat;		/* bpf_ktime_get_ns() time the admitted bytes drain by */
	__u64 pass_bytes;	/* L3 bytes admitted (every segment's headers counted) */
	__u64 pass_pkts;	/* segments admitted (a GSO packet counts gso_segs) */
	__u64 drop_bytes;	/* L3 bytes dropped over the limit */
	__u64 drop_pkts;	/* segments dropped over the limit */
};

/* host-side veth ifindex -> the ingress limit of the pod behind it. Written
 * with genie_lxc in the same operation and deleted with it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct qos_bucket);
	__uint(max_entries, MAX_LXC);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_qos_ingress SEC(".maps");
