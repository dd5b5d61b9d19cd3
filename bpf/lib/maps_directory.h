/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maps of the endpoint directory (lib/directory.h, pkg/directory). All are
 * written by the agent in directory mode (--endpoint-mode directory) and
 * empty otherwise; genie_dir_cfg.enabled says which mode the node runs.
 *
 *   genie_dir_cfg     the mode and the shard mask
 *   genie_dir_shard   shard -> its holders' underlay IPv4s, rank order
 *   genie_dir_held    on a holder: {vni, ip} -> hosting node, for the
 *                     records of the shards it holds (the bouncer's table)
 *   genie_dir_lru     learned remote endpoints (LRU): the node's cache of
 *                     the endpoints its pods talk to, with versions. Local
 *                     endpoints stay in genie_endpoints, which is never
 *                     evicted; in directory mode genie_endpoints holds only
 *                     local endpoints.
 *   genie_dir_nodes   underlay IPv4s of the directory's live members
 *   genie_dir_stats   per-CPU counters (DIR_STAT_*)
 */
#pragma once

#include "common.h"

#ifndef DIR_MAX_SHARDS
#define DIR_MAX_SHARDS 4096	/* shard array size; the agent sizes it to --directory-shards */
#endif
#define DIR_MAX_REPLICAS 7	/* holders kept per shard (R <= 7) */
#ifndef DIR_MAX_HELD
#define DIR_MAX_HELD 262144	/* records of the shards held here */
#endif
#ifndef DIR_MAX_REMOTE
#define DIR_MAX_REMOTE 65536	/* learned remote endpoints */
#endif
#ifndef DIR_MAX_NODES
#define DIR_MAX_NODES 16384	/* directory members */
#endif

struct dir_config {
	__u32 enabled;		/* 1: directory mode */
	__u32 shard_mask;	/* shards - 1 (shards a power of two) */
};

struct dir_shard {
	__be32 holder[DIR_MAX_REPLICAS];	/* underlay IPv4s, highest rank first */
	__u32 n;				/* holders in holder[] */
};

/* A learned or held record. ep is laid out as genie_endpoints' value, so a
 * learned entry is used exactly like a remote endpoint (ifindex 0). */
struct dir_entry {
	struct endpoint_info ep;
	__u64 version;		/* the store revision of the record (agent only) */
};

/* Counters of genie_dir_stats (pkg/datapath/directory.go mirrors them). */
#define DIR_STAT_LRU_HIT	0	/* pod packet sent direct from a learned entry */
#define DIR_STAT_HELD_HIT	1	/* pod packet sent direct from a held record */
#define DIR_STAT_BOUNCED	2	/* pod packet bounced to a holder */
#define DIR_STAT_FORWARDED	3	/* holder re-encapsulated a bounced packet */
#define DIR_STAT_DELIVERED	4	/* bounced packet accepted by the hosting node */
#define DIR_STAT_UNVERIFIED	5	/* accepted from a member before its source was learned */
#define DIR_STAT_MAX		8

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct dir_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_dir_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct dir_shard);
	__uint(max_entries, DIR_MAX_SHARDS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_dir_shard SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct dir_entry);
	__uint(max_entries, DIR_MAX_HELD);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_dir_held SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct dir_entry);
	__uint(max_entries, DIR_MAX_REMOTE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_dir_lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, __u32);
	__uint(max_entries, DIR_MAX_NODES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_dir_nodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, DIR_STAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} genie_dir_stats SEC(".maps");

/* The node directory_miss chose for a pod's packet, handed back to from_pod
 * (which encapsulates to it like to any remote endpoint): a per-CPU scratch
 * entry, not a stack frame of the miss path's own, so the call chain
 * from_pod -> directory_miss -> trace_drop stays within 512 bytes. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct endpoint_info);
	__uint(max_entries, 1);
} genie_dir_via SEC(".maps");
