// Package sandbox runs a virtual multi-node CNI-Genie cluster inside
// network namespaces on one machine. It is the project's demo and test bed:
// geniectl's sandbox commands, the end-to-end tests and the data-plane
// benchmarks all drive this one Go API (Up, PodAdd, PodDel, Exec, Status,
// Down).
//
// # Design notes
//
// Topology. A fabric namespace holds the underlay: linux bridges, one per
// L2 segment. On the flat underlay (the default) every node is on br0: a
// namespace whose eth0 is a veth into br0 (port pN in the fabric),
// addressed from 172.30.0.0/24. On the routed underlay (Options.Underlay =
// UnderlayRouted, `sandbox up --underlay routed`) node i sits on segment
// (i-1) mod 2, bridge br0 (172.30.0.0/24) or br1 (172.30.1.0/24), and a
// router namespace with ip_forward joins the segments (.1 on each); the
// nodes route 172.30.0.0/16 through it. So one 3-node routed sandbox has
// on-link pairs (node1-node3) and routed ones (node2 with either), and the
// data plane must follow the kernel's next hop to reach node2.
// SetRouterMTU makes the router forward into a segment at a smaller MTU
// (a route MTU: it answers with ICMP "fragmentation needed" like a real
// narrow link) for path MTU tests. These addresses exist only inside the
// sandbox's own namespaces, and the host's interfaces are never touched:
// every link is created directly in its target namespace through a netlink
// handle bound to that namespace.
//
// The outside world. AddExternal adds an "external" namespace on segment 0
// answering on 198.18.0.10 (ExternalPrefix, the benchmarking range of RFC
// 2544, again only inside the sandbox's namespaces); only the nodes named
// (egress gateways) route to it, so a pod reaches it only through an egress
// gateway, and the external server sees the gateway's egress address.
//
// Processes. The store is an embedded etcd (pkg/store/etcdstore) run by a
// detached `geniectl sandbox serve-store`, serving on a filesystem unix
// socket: unlike loopback TCP, a path is reachable from every namespace.
// Each node runs its own genied inside its namespace (nsenter --net, not
// `ip netns exec`, which remounts /sys and would hide the agent's bpffs
// pins), with its own pin dir /sys/fs/bpf/genie-sb-<name>/<node>, socket,
// state dir and log under /run/genie-sandbox/<name>/. All of them run in
// their own session, so Up returns while they keep running.
//
// Pods. A pod is a namespace attached through the real genie binary,
// exactly as a runtime would call it: libcni with CNI_PATH = the genie
// binary's dir plus the reference plugins, stdin config naming the node's
// agent socket, and the selection in CNI_ARGS GENIE_NETWORKS. libcni runs
// on a thread that entered the node's namespace, so genie and its
// delegates see the node's network as on a real node. Next to the VPCs,
// genie's conf dir offers one delegate network (DelegateNetwork: the
// reference bridge plugin), so a pod can mix overlay and delegated
// interfaces. Baseline pods (the
// reference bridge plugin, hand-built flannel-style paths) use the same
// machinery, so the overlay is measured against them on the same nodes.
//
// Probes. Tests, the demo and `geniectl sandbox matrix` probe with Go
// sockets opened on a thread that entered the source namespace (the
// socket stays there), optionally bound to one interface. A probe counts
// only if it reaches the target's own namespace: the TCP/UDP listener is
// opened there, and for ICMP a raw socket there must see the echo request.
// With overlapping VPCs the same address answers from several places, so
// "a reply came back" would prove nothing. A pod in two VPCs with
// overlapping CIDRs has two identical connected routes; the agent gives
// its VPC interfaces distinct addresses and per-source routing tables, so
// its replies leave through the interface they belong to (SourceRoutes
// does the same for delegate interfaces).
//
// State and concurrency. sandbox.json in the state dir records nodes, pids
// and pods; every mutation reloads and saves it under a flock, so the CLI
// and tests can act on one sandbox from several processes.
//
// Teardown. Down deletes pods through CNI DEL (releasing IPs and endpoints
// the normal way), stops the agents and then the store, deletes the
// namespaces (pods, nodes, fabric), unpins the bpffs dirs and removes the
// state dir. It also finds leftovers by name — namespaces named
// gsb.<name>.*, processes whose command line points into the state dir,
// the pin dir — so it is idempotent and cleans up after a crash.
//
// Scale. Nodes are cheap (a namespace, a veth and one agent process); the
// limit is one /24 per segment (MaxNodes). Several sandboxes can run side by
// side: names keep their namespaces, state and pins apart.
package sandbox
