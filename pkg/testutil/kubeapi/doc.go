// Package kubeapi runs a real etcd and a real kube-apiserver for tests.
//
// # Design notes
//
// Tests that talk to Kubernetes must talk to the real API server: validation,
// admission, RBAC, merge-patch semantics, CRD establishment and token
// authentication are exactly the behaviour the code under test depends on, and
// a fake clientset reproduces none of it. The binaries come from
// hack/build-test-bins.sh (found through $GENIE_TEST_BINDIR, default
// <module root>/_output/bin). When they are missing the tests skip with a
// message naming the build step, unless GENIE_REQUIRE_KUBE=1 (set by CI), in
// which case they fail.
//
// Everything is loopback-only and private to one Server: free ports on
// 127.0.0.1, a temp dir holding etcd's data, the logs of both processes, the
// CA, the serving certificate and the service-account key (all generated here
// with crypto/x509, no openssl), and a static token file with an admin token
// in system:masters. There is no controller-manager, scheduler or kubelet:
// Pods stay Pending and deleted namespaces stay Terminating, so tests use
// unique namespace names (UniqueName).
//
// Processes run in their own process group with Pdeathsig=SIGKILL, started
// from one goroutine locked to its OS thread for the Server's life (Pdeathsig
// follows the creating thread, not the process). Stop kills both groups and
// removes the temp dir; if the test binary dies first, the kernel kills the
// children, so no orphan survives a panic or a go test timeout.
//
// Start-up costs a few seconds, so a test binary normally shares one Server:
// call Main from TestMain and Shared from each test. Credentials for tests of
// token rotation come from two sources: ServiceAccountToken (TokenRequest
// bound to a Secret, revoked by deleting the Secret, no restart) and static
// tokens (AddToken/RemoveToken rewrite the token file and restart
// kube-apiserver on the same port, because the file is read only at start).
//
// StartPeer runs a second kube-apiserver on the same etcd, certificates and
// tokens (an HA pair), for tests that restart one member while clients fail
// over to the other. InstallPolicies applies deploy/policy (ClusterRoles,
// ValidatingAdmissionPolicies and their bindings), as a cluster would.
package kubeapi
