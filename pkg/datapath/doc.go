// Package datapath loads, attaches and feeds the eBPF data plane of the VPC
// overlay (C sources in bpf/, compiled by bpf2go into lxc_bpfel.o and
// uplink_bpfel.o). It knows nothing of Kubernetes or the store: the agent
// translates its desired state into Upsert*/Delete* calls and Attach*.
//
// # Attach points
//
//   - from_pod (bpf/lxc.c), ingress of every host-side pod veth, i.e. every
//     packet a pod sends: a cls_bpf filter on a clsact qdisc (AttachTC, what
//     the agent uses by default: no RCU grace period per pod) or a pinned
//     tcx link (AttachTCX, the package default). The pod's identity (VNI,
//     IP, MAC) is looked up by skb->ingress_ifindex, never from the packet.
//     ARP requests are answered with the virtual gateway MAC for any target
//     (L3 gateway, nothing floods); IPv4 is anti-spoofed (source MAC and IP must be the
//     endpoint's) and looked up as {vni, dst}: a local endpoint gets an L2
//     rewrite and bpf_redirect_peer into its netns, a remote one gets a
//     Geneve header (RFC 8926, UDP 6081, built by the program: this kernel
//     has no geneve module) and leaves through the kernel's next hop for the
//     remote node (see Underlay).
//   - from_uplink (bpf/uplink.c), tcx ingress of the node uplink. Geneve to
//     our underlay address is validated, its inner destination must be a
//     local endpoint of the packet's VNI and its inner source an endpoint of
//     that VNI hosted on the outer source node (no forged VNI, no spoofing
//     from the underlay). It is decapsulated and redirect_peer'ed into the
//     pod. Everything else continues untouched (TCX_NEXT: next tcx program,
//     or the stack).
//   - uplink_prefilter (bpf/uplink.c), optional XDP (xdp.frags) on the
//     uplink: drops malformed Geneve and Geneve for VNIs not hosted here
//     (genie_vnis, maintained by Upsert/DeleteEndpoint) before an skb exists.
//     It never delivers.
//
// Egress: a packet to no endpoint of its VPC may leave it through an
// egress gateway (bpf/lib/egress.h, egress.go, package egress): from_pod
// encapsulates it to the flow's gateway (or SNATs it here if this node is
// the gateway), from_uplink decapsulates and SNATs it on the gateway and
// reverse-SNATs the replies back to the pod's node, where they are
// accepted only as replies of a flow pinned to that gateway.
//
// Services: before the {vni, dst} lookup, from_pod load-balances packets
// to a service frontend of its VNI (DNAT to a Maglev-picked backend,
// pinned by conntrack) and reverse-NATs replies of flows whose client is
// local; from_uplink does the reverse NAT after decap. See bpf/lib/lb.h
// and package service.
//
// # Why tc and not XDP on veths
//
// The issue asked for XDP on the uplink. Measured on this kind of machine
// (kernel 6.18, veth): XDP_REDIRECT between veths needs checksum offload off
// in the pod and reached 5.2 Gbit/s against 12.0 for tc + redirect_peer; XDP
// cannot redirect_peer at all. Declaring the program xdp.frags does not save
// GSO on a veth either: attaching it switched the peer's tx-tcp-segmentation,
// tx-tcp6-segmentation, tx-udp-segmentation and tx-gso-list from on to off
// (checked with ethtool on 6.18), so the peer sends MTU-sized frames. With
// the prefilter attached on the veth underlay, BenchmarkE2EThroughput saw pod
// to pod TCP across nodes fall to a third to a half of the tc-only path
// (noisy 2-core machine, same run). So delivery is tc-only, the prefilter is
// a separate opt-in (AttachUplinkPrefilter) for NICs with native multi-buffer
// XDP where an early drop is worth it, and the agent must not attach it on
// veth uplinks (the sandbox).
//
// # Underlay
//
// The outer packet goes wherever the node's routing table sends the remote
// node's underlay address, so the underlay may be one L2 segment or any
// routed IPv4 network. Before encapsulating, from_pod calls bpf_fib_lookup
// (output lookup, the uplink as oif, tot_len = the outer length, for GSO
// packets that of one segment); on success it writes the MACs the FIB
// returned and bpf_redirects to the egress device, and when the neighbour
// is not resolved (first packet, expired entry) it uses bpf_redirect_neigh,
// which resolves it and queues the packet meanwhile. No route (or an
// unreachable/blackhole one) is a counted NO_NEXTHOP drop. AttachUplink
// turns IPv4 forwarding on for the uplink: the helper refuses to resolve
// through a device without it. The agent needs no node MACs any more
// (UpsertNode is a deprecated no-op); a next hop that never answers ARP is
// dropped by the neighbour subsystem (ip -s neigh shows it FAILED).
//
// Chosen over agent-resolved neighbours (a node map holding the next hop's
// MAC, as the node's own MAC was held before) because the FIB lookup also
// gives the path MTU, including the kernel's PMTU exceptions, and follows
// route and neighbour changes without an agent loop. It costs a FIB and a
// neighbour lookup per packet: measured in the same run as the old
// node-map path (BenchmarkLxcEncap, BPF_PROG_RUN, loaded 2-core machine)
// 720-765 ns against 480-525 ns of program time, about +240 ns per packet,
// which GSO amortises for bulk traffic: end to end, the same-run ratios of
// BENCHMARKS.md §2 stayed within noise (two runs of each).
//
// Path MTU: see pmtu.go. A packet that does not fit is dropped
// (FRAG_NEEDED) and, with DF, answered by an ICMP "fragmentation needed"
// built in BPF (bpf/lib/icmp.h), so TCP lowers its MSS instead of
// blackholing.
//
// # Maps (bpf/lib/maps.h; pinned by name under Config.PinDir, except the per-CPU scratch maps)
//
//	genie_lxc        host ifindex -> {vni, ip, mac, flags}      the pod behind a veth
//	genie_endpoints  {vni, ip} -> {ifindex | node ip, mac}      where an endpoint lives
//	genie_vnis       vni -> number of local endpoints            prefilter/decap: VPCs hosted here
//	genie_config     [0] -> {underlay ip, uplink ifindex/mac, gateway mac}
//	genie_drops      per-CPU [reason] -> count                   see DropReason
//	genie_misses     ring buffer of {vni, ip} misses             on-demand learning (Misses): read in directory mode
//	genie_miss_seen  LRU {vni, ip} -> last report time           one report per address per second
//	genie_svc        {vni, vip, port, proto} -> {table id, M}    service frontends (service.go)
//	genie_maglev     table id -> inner array[M] of {ip, port}    Maglev tables, swapped atomically
//	genie_ct         LRU {vni, 5-tuple} -> NAT, TCP state, expiry conntrack (conntrack.go, GC in Go)
//	genie_qos_ingress host ifindex -> GCRA bucket + counters     a pod's ingress limit (qos.go, bpf/lib/qos.h)
//	genie_trace_state [0] -> {enabled, lost}                      drop tracing switch (trace.go)
//	genie_trace      ring buffer of dropped packets' headers     while enabled (Trace, geniectl trace)
//	genie_dir_*      the endpoint directory (directory.go, lib/maps_directory.h): mode, shard -> holders,
//	                 held records, learned LRU {vni, ip} -> {node ip, mac, version}, members, counters
//	genie_vpc_routes LPM {vni, prefix} -> internal | egress policy  egress.go, bpf/lib/egress.h
//	genie_egress_select {route, pod} -> policy                   a local pod's policy for a route
//	genie_egress_policies policy -> active + draining gateways   set by the agent from health and drains
//	genie_egress_flows LRU {vni, 5-tuple} -> gateway              pod-side pins (GC with conntrack)
//	genie_egress_gw  vni -> egress address                      VPCs this node is a gateway of
//	genie_egress_ips egress address -> 1                         replies to these may be reverse-SNATed
//
// Every key that concerns a VPC includes the VNI, so two VPCs with the same
// CIDR and the same pod addresses never see each other: isolation is by
// construction, a miss is a counted drop. Maps are shared by both objects and
// survive the agent; links are pinned under PinDir/links, so the programs stay
// attached when the agent exits. Open re-adopts the pins and Attach* replaces
// the programs atomically through the pinned link (no gap in forwarding).
//
// # Upgrades (migrate.go)
//
// A new data plane version, or other map sizes (--max-endpoints ...), may
// find pinned maps it cannot use: another key or value size, another
// max_entries. Open then migrates them before loading, by the role
// mapRoles gives every map of the objects (TestMapRoles fails on a map
// without one):
//
//   - derived: state the agent rebuilds anyway (endpoints, pods, VNIs,
//     config, services, QoS buckets, the directory's maps, the egress
//     policies and routes). If one changed, all are replaced by empty maps
//     as a group, because they refer to each other (genie_vnis counts
//     genie_endpoints' local entries, genie_svc names genie_maglev's tables).
//   - flow: state nobody can rebuild (genie_ct's NAT and chosen backend,
//     genie_egress_flows' gateway). Entries are converted field by field by
//     BTF member name: a kept field is copied, a new one is zero, a removed
//     or resized one makes the entry unconvertible (lost, counted).
//   - counter: genie_drops, genie_dir_stats. Values are carried over where
//     the index exists in both, so metrics do not go backwards.
//   - transient: ring buffers and per-CPU scratch maps. Replaced alone when
//     changed; unread events are lost.
//
// Replaced maps are pinned in place by rename(2), so a path never dangles.
// The programs still attached keep the old maps (a program holds its maps
// by reference) and keep forwarding on them: the caller must fill the new
// maps first and only then attach (UpgradePending says so), and then call
// FinishUpgrade, which copies the flow entries and adds the counts the old
// programs made meanwhile (kept for that under PinDir/upgrade) and unpins
// the old maps; the kernel frees them with the last old program. A
// derived map shrunk below what it holds is refused before anything
// changes. An agent killed half-way finds the upgrade dir, or an
// incompatible map again, and finishes the job.
//
// # Drops
//
// Every drop path increments genie_drops[reason] first. The reasons are
// defined once in bpf/lib/drop.h as negative codes and mirrored by
// DropReason (keep in sync); Drops sums them over CPUs for metrics.
//
// # MTU and offloads
//
// Encapsulation adds EncapOverhead (50) bytes: a pod's MTU must be at most
// the path's MTU - 50. The agent takes it from the network, not from its
// own uplink: the VPC's MTU if set, else the smallest uplink MTU any node
// registered minus 50 (vpc.VPC.PodMTU); paths narrower than that are
// handled by the path MTU check above. GSO/TSO and checksum offload stay ON in pods:
// bpf_skb_adjust_room with the ENCAP_L3_IPV4|ENCAP_L4_UDP|ENCAP_L2_ETH flags
// marks GSO packets as UDP tunnel packets, so the uplink segments them and
// fills inner checksums; the outer UDP checksum is 0 (allowed for IPv4) and
// the outer IPv4 checksum is computed by the program. The outer UDP source
// port is 49152 + 14 bits of the flow hash, for ECMP/RSS entropy. The
// measured prototype of this design reached 1.01x of the underlay.
//
// Encap and decap use BPF_F_ADJ_ROOM_FIXED_GSO: gso_size is never changed.
// The pod MTU already leaves room for the header, and for UDP GSO
// (UDP_SEGMENT) gso_size is the application's datagram size: shrinking it
// would re-cut datagrams, and the kernel refuses the decap without the flag.
// On a veth uplink one more step is needed, found by the e2e test: a veth
// hands GSO super-packets to its peer unsegmented, and a decapsulated UDP
// GSO packet keeps its tunnel GSO type (kernels before 7.x have no
// BPF_F_ADJ_ROOM_DECAP_L4_UDP to clear it), so the pod's UDP stack cannot
// segment it and the datagrams vanish. AttachUplink therefore switches
// tx-udp-segmentation off on veth uplinks (only there): encapsulated UDP GSO
// is then segmented by the sending node, while TCP super-packets still cross
// whole. Real NICs segment on the wire and are left alone.
//
// # Where the overlay's time goes (measured, kernel 6.18, 2-vCPU VM)
//
// hack/bench.sh compares the overlay with the underlay and with a "veth-hop
// floor": a pod on a plain routed veth (no BPF, no encapsulation) talking to
// the other node's underlay address, i.e. the underlay plus the one veth
// hop per direction that every veth-attached pod pays. One run: TCP RR p50
// underlay 5.85 us, floor 6.41 us (1.11x), overlay 6.93 us (1.19x; 1.07x
// of the floor); throughput overlay/floor 0.98x, floor/underlay 0.96x. So
// most of the gap to the underlay is the veth hop itself (a trip through
// the CPU's backlog queue on the sending side; the receiving side has none
// thanks to redirect_peer), and the rest is the four program runs per round
// trip (bpf_stats in vivo: ~190 ns per from_pod/from_uplink run against
// ~130 ns for the pass-through on the same uplink, stats overhead included).
// This kernel has no netkit (CONFIG_NETKIT unset, checked), which is what
// would remove the hop. Checked and ruled out with perf and ethtool:
//   - no software checksum or segmentation anywhere on the path: every hop
//     (pod veth, host veth, uplink veth, bridge ports) keeps TSO,
//     tx-udp_tnl-segmentation and tx-udp_tnl-csum-segmentation, packets
//     average ~51 KB on the uplink for both overlay and underlay, and
//     skb_segment/skb_checksum_help/csum_partial never show up. The one
//     software GSO step is validation only: adjust_room marks GSO packets
//     SKB_GSO_DODGY and veths lack NETIF_F_GSO_ROBUST, so each xmit hop
//     walks the headers (__skb_gso_segment -> skb_udp_tunnel_segment ->
//     tcp_gso_segment, which returns without segmenting), ~0.6% of samples;
//     BPF cannot clear the flag;
//   - tx-udp-segmentation off on veth uplinks (tuneVethUplink) does not
//     touch TCP: TCP-in-tunnel GSO needs only TSO and tx-udp_tnl-*;
//   - FIXED_GSO only keeps gso_size; on veths nothing is ever segmented;
//   - skb->hash is set for socket traffic, and hashless packets get an
//     inline hash (flow_hash), so encap never runs the flow dissector;
//   - redirect_peer to the uplink's peer (skipping one backlog hop on veth
//     uplinks) measured within noise (throughput +2..5%, latency no gain) and
//     would bypass the uplink's egress qdisc and tc programs (future QoS):
//     not done;
//   - RPS on host-side pod veths removes the reordering below but cost
//     8-44% of throughput (cross-CPU handoff, 3 runs): not done.
//
// Same node, the overlay takes one backlog hop fewer than a bridge
// (redirect_peer instead of bridge + veth xmit) but its pods run at the
// overlay MTU (uplink - 50) for every destination: pod MTU 1500 instead of
// 1450 between two overlay pods on one node measured +3.5% throughput
// (median of 6 interleaved pairs), which is about what the hop saves, so
// overlay and bridge-plugin pods (MTU 1500) come out at parity.
//
// On real NICs (not measurable here) the receive side gets no GRO for our
// Geneve: without a geneve device no UDP tunnel socket offers gro_receive
// for port 6081, so each MTU-sized frame runs from_uplink and reaches the
// pod alone. rx-udp-gro-forwarding would not help (it glues whole UDP
// payloads, which a tc decap cannot split); a kernel tunnel device in
// collect_metadata mode (vxlan external, fed by bpf_skb_set_tunnel_key),
// whose socket does tunnel GRO, is the known way to get it back.
//
// Retransmits: on a 2-CPU machine a TCP flow's packets are sent from both
// CPUs (the application's CPU and the one processing its ACKs) and get
// reordered between the per-CPU backlog queues; every veth path shows
// thousands of spurious retransmits per second (underlay too), the overlay
// about 1.3-1.4x the underlay's because its packets cross one more backlog.
//
// Not done: the inner TTL is not decremented (the gateway is virtual and
// delivery is direct, so there is no loop to stop); Geneve options are
// refused rather than skipped (our nodes never send any).
//
// # Scale
//
// Per packet: one hash lookup for the sender, one for the destination (plus
// a FIB lookup for remote, one source lookup on decap): O(1) in the number
// of VPCs and endpoints, O(routes) in the node's FIB (a trie), about 30 ns
// of program time for a local forward (see the Benchmark* functions). Map
// sizes are compile-time constants overridable with -D (MAX_ENDPOINTS
// etc.); a full map is reported as ErrMapFull naming the map, and a failed
// upsert leaves the maps as they were (a journal of map writes is rolled
// back). In vpc-sync mode every remote endpoint of a hosted VPC is pushed
// by the agent's store watch, and a packet to an unknown {vni, ip} is
// dropped (NO_ROUTE) and reported through Misses, which nothing reads. In
// directory mode (SetDirectoryMode, lib/directory.h) genie_endpoints holds
// only local endpoints: a packet to an unknown endpoint is sent direct
// from a learned or held record, or bounced through a holder of its shard
// and reported, and the agent installs what it looks up (LearnRemote);
// decap accepts a bounced packet from a holder of the destination's shard
// and checks the inner source against the origin node (docs/design.md has
// the trust model).
package datapath
