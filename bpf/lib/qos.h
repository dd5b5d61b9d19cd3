/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* QoS classes: from_pod marks what it sends to the uplink.
 *
 * lxc_info.flags (the agent writes it, pkg/datapath qos.go; keep in sync):
 *   bits 0-1   the class: 0 none (QoS off for this pod), 1 high, 2 normal, 3 low
 *   bits 4-15  the minor of the pod's own HTB class on the uplink (a per-pod
 *              egress rate limit); 0: the class's shared leaf
 *
 * A classified packet leaving through the uplink gets
 *   skb->priority = 1:<minor>, an HTB classid on the uplink's root qdisc 1:
 *                   (1:10 high, 1:20 normal, 1:30 low, or the pod's own), which
 *                   HTB honours directly (no filter); it survives bpf_redirect,
 *                   unlike IP forwarding, which resets it from the TOS;
 *   outer DSCP     = EF (46) high, CS0 (0) normal, CS1 (8) low, so that the
 *                   underlay can honour the class too; the inner ECN bits are
 *                   copied. An unclassified packet's outer TOS is the inner one.
 */
#pragma once

#include "common.h"

#define QOS_CLASS_MASK	0x3
#define QOS_NONE	0
#define QOS_HIGH	1
#define QOS_NORMAL	2
#define QOS_LOW		3
#define QOS_MINOR_SHIFT	4

#define QOS_HTB_MAJOR	1
#define QOS_MINOR_HIGH	0x10
#define QOS_MINOR_NORMAL 0x20
#define QOS_MINOR_LOW	0x30

#define DSCP_EF		46
#define DSCP_CS0	0
#define DSCP_CS1	8

/* qos_mark sets skb->priority for a packet of a pod with lxc_info.flags
 * flags and returns the outer TOS byte for inner TOS tos. */
__inline __u8 qos_mark(struct __sk_buff *skb, __u16 flags, __u8 tos)
{
	__u32 minor, dscp;

	switch (flags & QOS_CLASS_MASK) {
	case QOS_HIGH:
		minor = QOS_MINOR_HIGH;
		dscp = DSCP_EF;
		break;
	case QOS_NORMAL:
		minor = QOS_MINOR_NORMAL;
		dscp = DSCP_CS0;
		break;
	case QOS_LOW:
		minor = QOS_MINOR_LOW;
		dscp = DSCP_CS1;
		break;
	default:
		return tos;
	}
	if (flags >> QOS_MINOR_SHIFT)
		minor = flags >> QOS_MINOR_SHIFT;
	skb->priority = (QOS_HTB_MAJOR << 16) | minor;
	return (dscp << 2) | (tos & 0x3);
}
