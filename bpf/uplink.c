//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The node uplink (underlay interface). Two programs:
 *
 * from_uplink (tcx ingress): the decapsulation fast path. Geneve to our
 *   underlay address is validated, its inner destination must be a local
 *   endpoint of the packet's VNI and its inner source an endpoint of the same
 *   VNI hosted on the outer source node (no forged VNI from the underlay).
 *   The packet is decapsulated, its L2 rewritten, policed by the pod's
 *   ingress limit if it has one (lib/qos.h) and redirect_peer'ed into the
 *   pod. In directory mode a holder also forwards packets bounced to it, and
 *   the source check follows lib/directory.h. Everything that is not our
 *   overlay continues untouched (TCX_NEXT).
 *
 * uplink_prefilter (xdp.frags): optional early drop of malformed Geneve and
 *   Geneve for VNIs not hosted here, before an skb exists. It never
 *   delivers: XDP cannot redirect_peer, so the tcx program stays the only
 *   delivery path. Frags-aware for multi-buffer NICs. Not for veth uplinks:
 *   any XDP program on a veth clears TSO/USO on its peer (measured on 6.18,
 *   see pkg/datapath/doc.go).
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/drop.h"
#include "lib/eth.h"
#include "lib/geneve.h"
#include "lib/lb.h"
#include "lib/qos.h"
#include "lib/directory.h"
#include "lib/egress.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Outer eth + IPv4 + UDP + Geneve + inner eth + inner IPv4. */
#define DECAP_PULL_LEN (ETH_HLEN + ENCAP_LEN + sizeof(struct iphdr))

SEC("tc")
int from_uplink(struct __sk_buff *skb)
{
	struct endpoint_info *dst, *src;
	struct geneve_info gi = {};
	struct endpoint_key key;
	struct node_config *cfg;
	void *data, *data_end;
	struct ethhdr *ieth;
	struct iphdr *iip;
	__u8 pod_mac[ETH_ALEN];
	__u32 zero = 0, ifindex;
	__u32 pull;
	int ret;

	cfg = bpf_map_lookup_elem(&genie_config, &zero);
	if (!cfg)
		return TCX_NEXT;

	/* Make the headers linear if the frame is long enough to hold them. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + DECAP_PULL_LEN > data_end && skb->len > data_end - data) {
		pull = skb->len < DECAP_PULL_LEN ? skb->len : DECAP_PULL_LEN;
		bpf_skb_pull_data(skb, pull);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}

	ret = geneve_classify(data, data_end, cfg->underlay_ip, &gi);
	if (ret == GENEVE_NOT_OURS) {
		/* A reply to an egress SNAT of this gateway (lib/egress.h). */
		if (egress_reply(skb, cfg, &ret))
			return ret;
		return TCX_NEXT;
	}
	if (ret < 0)
		return drop_skb(skb, ret);

	ieth = data + ETH_HLEN + ENCAP_LEN - sizeof(struct ethhdr);
	iip = (void *)(ieth + 1);
	if ((void *)(iip + 1) > data_end)
		return drop_skb(skb, DROP_TRUNCATED);
	if (ieth->h_proto != bpf_htons(ETH_P_IP) || iip->version != 4)
		return drop_skb(skb, DROP_UNSUPPORTED_L3);
	if (iip->ihl < 5)
		return drop_skb(skb, DROP_TRUNCATED);

	/* The directory's bouncer path (lib/directory.h). */
	if (directory_uplink(skb, cfg, &gi, ieth, iip, &ret))
		return ret;

	key.vni = gi.vni;
	key.ip = iip->daddr;
	dst = bpf_map_lookup_elem(&genie_endpoints, &key);
	if (!dst) {
		/* Leaving the VPC through this gateway (lib/egress.h). */
		if (egress_from_tunnel(skb, cfg, &gi, &ret))
			return ret;
		/* Slow path only: tell an unknown VPC from an unknown address. */
		if (!bpf_map_lookup_elem(&genie_vnis, &gi.vni))
			return drop_skb(skb, DROP_UNKNOWN_VNI);
		return drop_skb(skb, DROP_NO_ROUTE);
	}
	if (!dst->ifindex)
		return drop_skb(skb, DROP_NOT_LOCAL);

	key.ip = iip->saddr;
	src = bpf_map_lookup_elem(&genie_endpoints, &key);
	if (src) {
		if (src->ifindex || src->node_ip != gi.outer_saddr)
			return drop_skb(skb, DROP_FORGED);
	} else if (!egress_tunnel_reply(skb, &gi)) {
		/* Not the reply of an egress flow from its gateway
		 * (lib/egress.h): the directory decides (lib/directory.h). */
		ret = directory_unknown_source(&key, gi.outer_saddr);
		if (ret < 0)
			return drop_skb(skb, ret);
	}

	ifindex = dst->ifindex;
	mac_copy(pod_mac, dst->mac);

	/* FIXED_GSO: gso_size stays the inner one. For UDP GSO it is the
	 * datagram size (the kernel refuses to change it), for TCP the pod's
	 * MSS already fits the overlay MTU. */
	if (bpf_skb_adjust_room(skb, -(__s32)ENCAP_LEN, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_DECAP_L3_IPV4))
		return drop_skb(skb, DROP_DECAP_FAILED);
	/* A service backend's reply to a local client: source back to the VIP. */
	ret = lb_rev_nat(skb, gi.vni, ETH_HLEN);
	if (ret < 0)
		return drop_skb(skb, ret);
	if (l2_rewrite(skb, pod_mac, cfg->gw_mac))
		return drop_skb(skb, DROP_DECAP_FAILED);
	ret = qos_ingress(skb, ifindex);	/* the pod's ingress limit (lib/qos.h) */
	if (ret < 0)
		return drop_skb(skb, ret);
	return bpf_redirect_peer(ifindex, 0);
}

SEC("xdp.frags")
int uplink_prefilter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct geneve_info gi = {};
	struct node_config *cfg;
	__u32 zero = 0;
	int ret;

	cfg = bpf_map_lookup_elem(&genie_config, &zero);
	if (!cfg)
		return XDP_PASS;

	ret = geneve_classify(data, data_end, cfg->underlay_ip, &gi);
	if (ret == GENEVE_NOT_OURS)
		return XDP_PASS;
	if (ret < 0)
		return drop_xdp(ret);
	if (!bpf_map_lookup_elem(&genie_vnis, &gi.vni) &&
	    !bpf_map_lookup_elem(&genie_egress_gw, &gi.vni) &&	/* a VPC we are the gateway of */
	    !directory_xdp_pass(data, data_end))
		return drop_xdp(DROP_UNKNOWN_VNI);
	return XDP_PASS;
}
