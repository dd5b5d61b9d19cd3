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
package e2e
