// Package scale holds the control plane's proofs (issue #4): a concurrency
// test of ADD/DEL across sandbox nodes on one subnet, and the benchmarks of
// ADD latency, readiness (ADD returned -> reachable from another node) and
// agent memory and propagation latency at 100k endpoints in 1,000 VPCs.
//
// # Design notes
//
// Everything runs on the sandbox (package sandbox): real genied processes
// in node namespaces, the embedded etcd store, pods in their own
// namespaces. Pod namespaces are created with sandbox.PodAddBare and
// attached by calling libcni from inside the node's namespace, exactly as
// sandbox.PodAdd does, but without the sandbox's state lock: PodAdd
// serialises every call on a flock of sandbox.json, which would turn a
// concurrency test into a sequential one. CNI ADD/DEL of the VPC network
// go through the real genie binary (not the agent socket): at about 40
// ADD+DEL per second on two cores it is fast enough, and it proves the
// whole path a runtime uses.
//
// Timing assertions do not belong in tests, so only the concurrency test
// (correctness) runs in CI; the measurements are benchmarks (go test
// -bench, gated by GENIE_SCALE_BENCH=1 for the long ones) that report their
// figures with b.ReportMetric, each against a baseline of the same run
// where one exists.
//
// Running (as root, after hack/build-test-bins.sh):
//
//	go test ./test/scale -run TestPrivilegedConcurrentAddDel -v   # GENIE_SCALE_OPS=1000, _WORKERS=3 per node, _MAX_LIVE=6
//	go test ./test/scale -run XXX -bench 'AddLatency|Readiness' -benchtime=1x   # GENIE_SCALE_ADD_PODS=100, GENIE_SCALE_READY_PODS=100
//	GENIE_SCALE_BENCH=1 go test ./test/scale -run XXX -bench Scale -benchtime=1x -timeout 40m   # GENIE_SCALE_VPCS=1000, _EPS=100, _SAMPLES=200
//
// GENIE_SCALE_AGENT_ARGS passes extra genied flags (e.g. "--pod-attach tcx").
package scale
