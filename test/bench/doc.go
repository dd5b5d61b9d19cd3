// Package bench holds the data-plane benchmarks: the eBPF overlay against
// the paths it must beat, all built on the same sandbox in the same run.
//
// # Design notes
//
// Throughput numbers on a shared 2-core machine move by ±10% between runs,
// so absolute figures mean little; every result is a ratio against a
// baseline measured minutes apart on the same nodes. Measurements are
// interleaved (overlay, baseline, overlay, ...) over several rounds and
// the median of each is kept, so a burst of background load hits both
// sides. iperf3 measures TCP throughput (run in the namespaces through
// nsenter); latency is a Go TCP 1-byte ping-pong whose sockets live in the
// pod namespaces (p50/p99 of per-round-trip times).
//
// Paths:
//   - same node: overlay pod to pod vs the reference bridge plugin's pods;
//   - cross node: overlay vs node-to-node on the underlay, and vs a
//     flannel-style path (pod veth, linux bridge, kernel vxlan device);
//   - cross node, the floor: a pod attached to node1 by a plain routed veth
//     (no BPF, no encapsulation) talking to node2's underlay address. It
//     is the underlay plus the one veth hop per direction that any
//     veth-attached pod pays, so overlay / floor is what our programs and
//     the encapsulation cost, and floor / underlay is the part of the gap
//     to the underlay that no veth-based data plane can close (this kernel
//     has no netkit, which would remove the hop);
//   - latency: overlay vs underlay and vs the floor, cross node;
//   - retransmits per run: on veths they are spurious (packets of one flow
//     sent from both CPUs, by the application and by ACK processing, are
//     reordered between the CPUs' backlog queues), so they show how much
//     a path suffers from reordering;
//   - readiness: CNI ADD latency through genie and genied, and how long
//     after ADD returns a pod on another node first gets an answer from
//     the new pod (the design's readiness promise is "at once");
//   - QoS (TestPrivilegedQoSBench, its own sandbox): class shares and RR
//     latency on an uplink the agent's HTB tree shapes, against one HTB
//     class at the same rate and against no qdisc.
//
// Run with hack/bench.sh (GENIE_BENCH=1); CI does not run it.
package bench
