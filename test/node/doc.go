// Package node holds the end-to-end tests of the installed product under a
// real kubelet and containerd (pkg/testutil/kubenode): the chart is
// installed, upgraded and uninstalled with helm, then its rendered
// manifests (deploy/manifests) once more with kubectl; the image built by
// pkg/image is imported into containerd, and pods created through the API
// get their networks from genie as on a cluster. A second node (a worker:
// its own kubelet and containerd, kubenode.AddNode) joins for the
// cross-node VPC phase. GENIE_TEST_HELM_SET is passed to helm install as
// --set, for experiments (e.g. the agent's capabilities).
//
// # Design notes
//
// One node per test function, several phases per node: start-up (etcd to
// node Ready, about 7 s here) and the install dominate, so each phase reuses
// them. Everything is checked where it happens: interfaces and addresses in
// the container's network namespace, the network-status annotation on the
// Pod, leases in host-local's data dir, genie's records and the agent's
// state on the node's file system, endpoints in the store, links in the
// node's network namespace. The cluster's primary network is the bridge
// plugin ("cluster", 10.244.0.0/24), which genie wraps as its default.
package node
