/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Common includes and the constants Debian's linux-libc-dev (6.1) lacks. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Defined after the includes: if a newer header has the enum constant, this
 * macro only shadows later uses, with the same value. */
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#endif

/* tcx return codes (linux 6.6, enum tcx_action_base). TCX_NEXT lets the next
 * program in the tcx chain run, or passes the packet if we are last; it is
 * the same value as TC_ACT_UNSPEC. */
#ifndef TCX_NEXT
#define TCX_NEXT (-1)
#endif

#ifndef ETH_P_TEB
#define ETH_P_TEB 0x6558
#endif

#ifndef IP_DF
#define IP_DF 0x4000
#endif
#ifndef IP_MF
#define IP_MF 0x2000
#endif
#ifndef IP_OFFSET
#define IP_OFFSET 0x1fff
#endif

#define GENEVE_PORT 6081
/* Bytes the encapsulation adds on the wire: outer IPv4 + UDP + Geneve + inner
 * Ethernet (EncapOverhead in Go). */
#define ENCAP_OVERHEAD 50

#define __inline static __always_inline

/* mac_copy copies a 6-byte MAC; mac_eq compares two (as 4+2 bytes). */
__inline void mac_copy(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, ETH_ALEN);
}

__inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) |
		(a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}
