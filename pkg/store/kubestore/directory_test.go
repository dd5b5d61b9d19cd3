package kubestore_test

import (
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
)

// The directory's view of the store on a real kube-apiserver, with the
// shards named in the selector and with the label's presence filtered
// here.
func TestDirectoryConformance(t *testing.T) {
	t.Run("SetSelector", func(t *testing.T) { storetest.RunDirectory(t, backend) })
	t.Run("LabelPresent", func(t *testing.T) {
		old := kubestore.SetMaxSelectorShards(0)
		t.Cleanup(func() { kubestore.SetMaxSelectorShards(old) })
		storetest.RunDirectory(t, backend)
	})
}
