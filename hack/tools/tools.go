//go:build tools

// Package tools pins the test-only binaries (kube-apiserver, etcd) that the
// integration tests run on loopback. It is a separate module so the main
// module's dependency graph stays small. See hack/build-test-bins.sh.
package tools

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
