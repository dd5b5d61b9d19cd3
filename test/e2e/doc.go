// Package e2e holds the end-to-end tests of the eBPF overlay on the
// sandbox: a 3-node virtual cluster per test, with the real genied, genie,
// embedded etcd and BPF data plane, built from this tree in TestMain.
//
// # Design notes
//
// Every probe is a Go socket opened inside a namespace (a goroutine locked
// to a thread that entered it; the socket stays there), and a probe counts
// as a success only when it reaches the target's own namespace — with
// overlapping VPCs the same address exists in several places, so "some
// reply came back" proves nothing. Traffic only flows between the test's
// own namespaces. Each test gets a sandbox with a random name and tears it
// down in t.Cleanup, then checks nothing is left behind.
//
// Underlay. The suite runs on the routed sandbox by default
// (GENIE_E2E_UNDERLAY=flat|routed overrides it): with node1 and node3 on
// one segment and node2 behind the router, a 3-node test crosses both an
// on-link and a routed underlay path, so the flat case is covered too;
// TestPrivilegedSameVPC additionally runs on a flat sandbox (about 2 s).
// TestPrivilegedPathMTU narrows the router to 1300 bytes and checks that
// TCP crosses it (ICMP frag-needed from the data plane, FRAG_NEEDED
// counted); running the suite twice, once per underlay, would double its
// ~70 s for no path the routed run misses.
package e2e
