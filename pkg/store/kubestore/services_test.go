package kubestore_test

import (
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store/storetest"
)

// The service contract (store.ServiceStore), on a real kube-apiserver,
// with the administrator's PolicyRules.
func TestServiceConformance(t *testing.T) {
	storetest.RunServices(t, backend)
}
