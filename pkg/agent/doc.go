// Package agent is genied, the CNI-Genie node agent of the eBPF VPC
// overlay. One agent runs per node (a DaemonSet in Kubernetes, a process per
// node namespace in the sandbox).
//
// # What it does
//
// Start-up: lock the socket (an flock on <socket>.lock holding the pid,
// so a second genied fails with a message naming the socket and the
// running agent's pid instead of unlinking its socket), connect to the store (--datastore etcd: --store-endpoints,
// unix:///path works; --datastore kubernetes: genie.cni.io custom
// resources through --kubeconfig or the in-cluster account), read the uplink's IPv4 and MAC (--uplink), register the node,
// open the data plane under --pin-dir (re-adopting the maps and links a
// previous agent pinned), attach the uplink program, load the IPAM state
// (--state-dir/ipam), list the nodes, restore the local attachments
// recorded in --state-dir/attachments, start the per-VPC watches (when
// Open replaced maps of another release, every attach waits until restore,
// the VPC syncs and the service and egress first passes have filled the
// new maps, then FinishUpgrade: upgrade.go), then serve
// the genie plugin on --socket (package agentapi) and Prometheus metrics on
// --metrics-addr.
//
// Attach (CNI ADD of a VPC network): resolve the VPC and subnet, allocate
// the address (a static request is honoured or refused; it differs from
// the addresses of the pod's other attachments, see below), create a veth
// whose host side is named "gv"+10 hex digits of a hash of containerID and
// ifname (deterministic, so DEL and a restarted agent find it), configure
// the pod side in the pod's netns (MAC, MTU = the VPC's, else the
// smallest uplink MTU the nodes registered minus datapath.EncapOverhead
// (podMTUFor), address with the subnet's prefix, route to the
// VPC CIDR via the gateway, optionally the default route; IPv6 disabled
// on the interface before it comes up; offloads stay on; a routing table
// of its own with a rule "from <its address>"),
// write the endpoint into the data plane, attach the pod program and
// publish the endpoint in the store. Each step is undone if a later one
// fails; errors name the VPC, subnet, pod and step. Detach undoes the same
// steps and is idempotent, also when the netns is gone; the store
// endpoint goes first and the address is freed only once it is gone, so a
// failed store delete keeps both and the retry finishes both. GC detaches every
// local attachment the runtime no longer lists and lets IPAM free
// addresses without an owner.
//
// Multihomed pods. A pod in two VPCs with overlapping CIDRs has the same
// connected route on two interfaces, so the destination cannot choose the
// interface a reply leaves through; this kernel has no VRF. The agent
// therefore gives one pod distinct addresses across its attachments (IPAM
// groups allocations by container ID) and every VPC interface a table
// (10000 + its ifindex in the pod) with a rule "from <its address> lookup
// <table>": a connected socket's source address picks its interface. A
// table without a matching route falls through to the main table, so a
// pod with one VPC interface routes as before. Unbound UDP servers that
// reply without IP_PKTINFO still get the main table's choice of source.
// IPv6 is off on VPC interfaces (the overlay is IPv4): router and
// neighbour solicitations and MLD reports were counted as drops.
//
// Node lifecycle. The agent re-registers its node with a fresh heartbeat
// every quarter of --node-reclaim-after and runs the dead-node reclaimer of
// package reclaim: a node whose heartbeat is that old, or whose node
// object has been gone that long while it holds blocks, loses its
// endpoints, then its blocks, then its node object. The live node with the
// smallest name sweeps (no election); concurrent sweeps are safe because
// every step is idempotent and conditional (see package reclaim).
// geniectl node delete does the same by hand and refuses a live node
// without --force.
//
// Services (service.go): with a store that has services
// (store.ServiceStore), the agent programs the frontends of the VPCs it
// hosts (package service/svcagent), campaigns for the cluster's backend
// resolver (service/resolver, store.LeaderElector) and runs the conntrack
// GC on its own handle of the pinned map, exporting genie_conntrack_*.
// Pods' labels from the ADD request are published on their endpoints.
//
// Egress gateways (egress.go): with a store that has them
// (store.EgressStore), package egress/egressagent programs this node's
// egress routes, pod selections and gateway sets, and the gateway role for
// the VPCs the node serves, whose endpoints the agent then follows as if
// it hosted a pod of them (acquireVPC). Gateway nodes beat in the store
// (store.BeatStore, --egress-heartbeat-interval/-timeout); --node-labels
// lets gateways select nodes; --egress-drain-timeout bounds a drain.
//
// A VPC as a pod's default network (egress_host.go): an attachment that is
// its pod's default network in a VPC with DefaultNetwork gets the default
// route, a host route and permanent neighbour (the node reaches it from
// its underlay address), and LXC_F_NODE_NET (it reaches the node, and
// leaves through it where no egress gateway selects it); the egress plan
// routes its VPC's CIDR, 0.0.0.0/0 and --service-cidr for it. Two such
// attachments of overlapping VPCs never share an address on one node: the
// second gets another, or (requested) is refused.
//
// Underlay next hops (underlay.go). The data plane sends encapsulated
// packets through the kernel's next hop (bpf_redirect_neigh); a peer
// without a route is a counted NO_NEXTHOP drop, but one whose next hop
// never answers ARP is dropped in the kernel's neighbour table, where no
// counter sees it. So every --underlay-check-interval (5 s) and on node
// events the agent looks up each peer node's next hop
// (datapath.LookupNextHop), classifies it reachable, unresolved, failed
// (neighbour FAILED) or no_route, exports genie_underlay_peers{state} and
// genie_underlay_peer_unreachable{node}, and logs a change once, naming
// the peer, its underlay IP and the gateway. Nothing resolves a next hop
// no packet went to, and a FAILED or STALE entry is not re-probed until
// used, so the check asks the kernel to resolve those itself (a neighbour
// update with NTF_USE: no packet is built). With the kernel's default
// timers a next hop that stops answering shows as failed 30-50 s later
// (reachable time, delay_first_probe_time, 3 probes); geniectl status
// shows the summary as NEXT HOPS in a sandbox.
//
// # Why it is shaped so
//
// Restart safety. Maps and links are pinned, so the data plane forwards
// while no agent runs. Every attachment is recorded in the state dir before
// anything is created for it and marked complete at the end; on start-up
// complete records whose veth still exists are re-programmed in place
// (the datapath updates pinned links atomically), incomplete or vanished
// ones are undone, and data plane entries, IPAM allocations and store
// endpoints of this node without a record are removed. Shutdown closes
// handles and never unpins.
//
// Failure handling. A detach that fails part-way (say the store is down)
// keeps the attachment and its record, so a retried DEL, GC or the next
// start-up finishes it; every undo step is idempotent. STATUS reports ready
// once the data plane is loaded and the store answers a cheap read, and
// not ready (with the reason) while the store does not answer, since an
// ADD must publish its endpoint.
//
// One writer. The agent is the only writer of the node's maps; a single
// mutex (Agent.mu) orders all map writes from ADD/DEL and the watches, and
// the VPC's remote entries never overwrite a local entry that reuses an
// address. No loop over a whole VPC runs under it: a VPC's listing is
// programmed, and an unhosted VPC's entries removed, in chunks of 256 with
// the mutex released in between (the VPC's watch events queue until its
// sync ends; a VPC unhosted meanwhile stops it), and a per-VPC index by
// address answers "who else has this address" in O(1). Measured with
// test/scale BenchmarkAddDuringSync (BENCHMARKS.md §4): before, an ADD
// during the removal of a 10k-endpoint VPC waited for all of it (2.7-4 s,
// the removal was quadratic). A node that first appears or changes its
// underlay address has its remote endpoints rewritten one hosted VPC per
// hold of the mutex (a scan of that VPC; rare); heartbeats and MAC or MTU
// changes touch no endpoint.
//
// Pod program attach. By default (--pod-attach tc) the pod program is a
// cls_bpf filter on a clsact qdisc of the host veth, not a tcx link: a tcx
// attach or detach makes the kernel wait for an RCU grace period while it
// holds the RTNL lock (7-20 ms per pod on a busy 2-core machine, measured;
// a qdisc plus a filter take about 0.3 ms), which alone made a VPC ADD
// twice as slow as a bridge+host-local ADD and serialised concurrent ADDs.
// The program and its verdicts are the same; the filter survives agent
// restarts without a pin and the next agent replaces it in place. Attaches
// and detaches run outside the agent's mutex either way. --pod-attach tcx
// keeps the pinned-link behaviour (see package datapath).
//
// # How it scales
//
// The ADD path is local: a hosted VPC and its subnets are cached, IPAM
// allocates from blocks the node already holds, and the only store write is
// publishing the endpoint (plus a block claim when the node's blocks of the
// subnet are full). ADDs of different attachments run concurrently (a lock
// per attachment); GC excludes them.
//
// A node learns only the VPCs it hosts: the first local endpoint of a VPC
// lists that VPC's endpoints and programs the remote ones, and the ADD
// returns only after that, so the pod can reach every pod of its VPC when
// its network is reported ready. Changes then arrive through ONE endpoint
// watch of the whole store, filtered on arrival by the hosted VPCs: events
// of other VPCs are dropped, events of a VPC being listed are queued and
// applied if newer than the listing's revision, so nothing falls between a
// listing and the watch. The last local endpoint of a VPC removes the VPC's
// remote entries. A failed watch resumes from the last revision seen; if
// that revision was compacted away every hosted VPC is listed again (from
// a revision read first). The node list is watched in full (nodes are few)
// for their underlay addresses and uplink MTUs. Memory and map entries are O(endpoints of the VPCs
// hosted here), not O(cluster); the watch traffic is O(endpoint changes of
// the cluster) on etcd. On a store with store.VPCWatcher (the Kubernetes
// backend) the one watch is filtered by the store instead, to the VPCs
// hosted here (vpcwatch.go): the API server's watch cache evaluates a
// genie.cni.io/vpc label selector, so the watch traffic is O(endpoint
// changes of the hosted VPCs) too. Its VPC set is fixed per stream, so a
// VPC acquired here restarts the stream from a revision no later than the
// VPC's listing (restarts spaced by 50 ms, joins coalesced).
//
// Why one watch and not one per hosted VPC (the first design): measured
// with test/scale's BenchmarkScale (one node hosting a pod in each of 1,000
// VPCs of 100 endpoints), per-VPC watches cost about 3 goroutines each
// (ours, the store's converter, etcd's substream) and an etcd watcher per
// VPC: 3,024 goroutines and an agent RSS of 67 MiB before a single remote
// endpoint was loaded, 90 MiB at 100k endpoints, against a budget of 64
// MiB. One filtered watch costs a few goroutines whatever the number of
// VPCs; its price is that every node decodes every endpoint change of the
// cluster (a few microseconds each), which is cheap next to pod churn.
// Start-up no longer dumps the endpoints map per VPC either: the one dump
// at start-up (removeStaleEntries) records leftover remote entries per VNI,
// and each VPC's first sync removes those the store no longer has; with a
// dump per VPC the restart of that node took more than 60 seconds.
//
// Drop tracing (trace.go): one goroutine reads the data plane's trace ring
// and fans events out to the clients of the socket's trace stream, each with
// its filter; the data plane's flag is set only while a client listens, so
// the drop path pays nothing otherwise (docs/trace.md).
// All of the above is the default endpoint mode, vpc-sync. With
// --endpoint-mode directory (directory.go) the agent lists and watches no
// VPC at all: it runs a member of the endpoint directory (package
// directory: its shards of the store's endpoints, gRPC lookups and
// memberlist on the underlay), the data plane bounces a packet to an
// unknown endpoint through a holder of its shard, and the agent learns
// the endpoint from the miss report into an LRU map; memory and map
// entries are then O(local endpoints + held shards + endpoints talked to).
// ADD publishes the new endpoint to its shard's holders before returning.
package agent
