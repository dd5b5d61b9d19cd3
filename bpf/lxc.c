//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* from_pod: tcx ingress of the host-side veth of a pod interface, i.e. every
 * packet the pod sends. The pod's identity (VNI, IP, MAC) comes from the
 * interface, never from the packet:
 *
 *   ARP request from the pod   -> answered with the gateway MAC, back to the pod
 *   IPv4 from the pod          -> anti-spoof, then {vni, dst}:
 *                                   local  -> the destination's ingress limit (lib/qos.h),
 *                                             L2 rewrite, redirect_peer into the pod
 *                                   remote -> next hop from the FIB; Geneve encap,
 *                                             redirect (or redirect_neigh) to it;
 *                                             too big for the path -> ICMP back;
 *                                             the QoS class -> skb->priority and
 *                                             the outer DSCP (lib/qos.h)
 *   everything else            -> counted drop
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/drop.h"
#include "lib/eth.h"
#include "lib/arp.h"
#include "lib/geneve.h"
#include "lib/icmp.h"
#include "lib/qos.h"
#include "lib/lb.h"
#include "lib/directory.h"
#include "lib/egress.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ingress_ifindex;
	struct endpoint_key key;
	struct endpoint_info *dst;
	struct node_config *cfg;
	struct lxc_info *ep;
	struct nexthop nh = {};
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 zero = 0, hash;
	int ret, bounce = 0;
	__u8 tos;

	if (!skb_ensure(skb, ETH_HLEN))
		return drop_skb(skb, DROP_TRUNCATED);

	ep = bpf_map_lookup_elem(&genie_lxc, &ifindex);
	if (!ep)
		return drop_skb(skb, DROP_UNKNOWN_ENDPOINT);
	cfg = bpf_map_lookup_elem(&genie_config, &zero);
	if (!cfg)	/* array map: cannot happen, but the verifier wants it */
		return drop_skb(skb, DROP_UNKNOWN_ENDPOINT);

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return drop_skb(skb, DROP_TRUNCATED);

	if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
		if (!mac_eq(eth->h_source, ep->mac))
			return drop_skb(skb, DROP_SPOOFED_MAC);
		return arp_respond(skb, ep, ifindex, cfg);
	}
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return drop_skb(skb, DROP_UNSUPPORTED_L3);

	if (!skb_ensure(skb, ETH_HLEN + sizeof(struct iphdr)))
		return drop_skb(skb, DROP_TRUNCATED);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return drop_skb(skb, DROP_TRUNCATED);
	if (ip->version != 4)
		return drop_skb(skb, DROP_UNSUPPORTED_L3);
	if (ip->ihl < 5 || (void *)ip + ip->ihl * 4 > data_end)
		return drop_skb(skb, DROP_TRUNCATED);

	if (!mac_eq(eth->h_source, ep->mac))
		return drop_skb(skb, DROP_SPOOFED_MAC);
	if (ip->saddr != ep->ip)
		return drop_skb(skb, DROP_SPOOFED_IP);

	key.vni = ep->vni;
	key.ip = ip->daddr;
	tos = ip->tos;
	/* Services: DNAT to a backend, or a reply back to the VIP (lib/lb.h). */
	ret = lb_from_pod(skb, ep, &key.ip);
	if (ret < 0)
		return drop_skb(skb, ret);
	if (!(ip = lb_reload_ip(skb, &data_end)))
		return drop_skb(skb, DROP_TRUNCATED);
	dst = bpf_map_lookup_elem(&genie_endpoints, &key);
	if (!dst) {
		/* Outside the VPC: an egress policy's gateway (lib/egress.h). */
		ret = egress_from_pod(skb, ep, cfg, key.ip);
		if (ret != EGRESS_PASS && ret != EGRESS_TUNNEL)
			return ret;
		if (ret == EGRESS_TUNNEL) {
			dst = egress_gateway();
		} else {
			/* Unknown here: the endpoint directory (lib/directory.h). */
			ret = directory_miss(cfg, &key);
			if (ret != DIR_SEND && ret != DIR_BOUNCE)
				return drop_skb(skb, ret);
			bounce = ret == DIR_BOUNCE;
			dst = directory_via();
		}
		if (!dst || !(ip = lb_reload_ip(skb, &data_end))) {
			report_miss(&key);
			return drop_skb(skb, DROP_NO_ROUTE);
		}
	}

	if (dst->ifindex) {
		/* Same node: the gateway "routes" it straight into the peer's
		 * netns; no second pass through the host stack. */
		ret = qos_ingress(skb, dst->ifindex);	/* its ingress limit (lib/qos.h) */
		if (ret < 0)
			return drop_skb(skb, ret);
		if (l2_rewrite(skb, dst->mac, cfg->gw_mac))
			return drop_skb(skb, DROP_ENCAP_FAILED);
		return bpf_redirect_peer(dst->ifindex, 0);
	}
	/* UDP source port entropy for the encap, read while ip is valid.
	 * Socket traffic carries sk_txhash; the rest (unconnected UDP,
	 * forwarded packets) gets a cheap inline hash instead of the flow
	 * dissector. */
	hash = skb->hash;
	if (!hash)
		hash = flow_hash(ip, data_end);
	ret = underlay_route(skb, cfg->underlay_ip, dst->node_ip, cfg->uplink_ifindex,
			     encap_seg_len(skb, ip, data_end), &nh);
	if (ret == ROUTE_TOO_BIG)
		return icmp_frag_needed(skb, ep, ifindex, cfg, nh.mtu);
	if (ret < 0)
		return drop_skb(skb, ret);
	tos = qos_mark(skb, ep->flags, tos);
	ret = geneve_encap(skb, cfg, ep->vni, dst, tos, hash, &nh);
	if (bounce)
		return directory_mark_bounce(skb, cfg, ret);
	return ret;
}
