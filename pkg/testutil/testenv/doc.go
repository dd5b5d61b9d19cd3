// Package testenv holds the few helpers every privileged test package of
// cni-genie needs, written once: where the module and the test binaries
// are, skipping when not root or when a binary was not built, a random
// suffix for names shared with the rest of the machine, and a network
// namespace removed at test end.
//
// # Design notes
//
// Test binaries are built by hack/build-test-bins.sh outside the Go build
// and found through $GENIE_TEST_BINDIR (cnitool, etcd, kube-apiserver) and
// $GENIE_TEST_CNI_BINDIR (the CNI reference plugins), defaulting to
// <module root>/_output/bin and <module root>/_output/cni/bin. A missing
// binary is a skip that names the build step, never a silent pass.
//
// The package depends only on the standard library and the CNI plugins'
// ns/testutils, so that any test package can import it cheaply; helpers
// that need heavier machinery (a kube-apiserver, an embedded etcd, a
// sandbox) live with that machinery (pkg/testutil/kubeapi,
// pkg/store/etcdstore/etcdtest).
package testenv
