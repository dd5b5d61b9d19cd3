//go:build tools

// Package tools pins the test-only binaries that the integration and
// real-node tests run: kube-apiserver and etcd on loopback, and kubelet and
// kubectl for the real-node harness (pkg/testutil/kubenode). It is a separate
// module so the main module's dependency graph stays small. See
// hack/build-test-bins.sh.
package tools

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
