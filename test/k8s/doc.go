// Package k8s holds the integration tests of the genie binary against a real
// kube-apiserver (pkg/testutil/kubeapi).
//
// # Design notes
//
// The tests play kubelet: they create Pod and NetworkAttachmentDefinition
// objects, then exec the real genie binary with CNI environment variables and
// its stdin configuration, exactly as a container runtime would, with real
// reference plugins (bridge, macvlan, host-local) as delegates. Nothing is
// faked: the credentials are a service-account token with only genie's RBAC
// rules (kube.PolicyRules), and the results are read back from the pod's
// network namespace, host-local's data dir and the Pod's annotations.
//
// Each test builds its own "node": a network namespace in which genie and its
// delegates run, so bridges and macvlan masters never touch the host. The API
// server listens on the host's loopback; a small TCP relay listening on the
// node namespace's 127.0.0.1 makes it reachable from there (a socket belongs
// to the namespace it was created in), and closing the relay is how a test
// makes the API server unreachable. The relay only connects loopback to
// loopback.
//
// The VPC tests (vpc_test.go) add the overlay: genied runs in the node
// netns with --datastore kubernetes, as a service account bound to exactly
// kubestore.PolicyRules(), reaching the API server through the same relay;
// VPCs and subnets are made with geniectl --datastore kubernetes, and a
// NetworkAttachmentDefinition of type genie-vpc is selected through the
// NPWG annotation like any other network. The data plane's pins live under
// a per-test bpffs directory, removed (with the agent stopped) before the
// netns goes.
package k8s
