package kubestore_test

import (
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store/storetest"
)

// The store contract, on a real kube-apiserver with etcd.
func TestConformance(t *testing.T) {
	storetest.Run(t, backend)
}
