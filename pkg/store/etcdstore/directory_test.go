package etcdstore_test

import (
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore/etcdtest"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
)

// The directory's view of the store, with one watch per shard (a large
// cluster's holder) and with one filtered watch of the whole directory
// (a small cluster's).
func TestDirectoryConformance(t *testing.T) {
	b := func(t *testing.T) func() store.Store {
		prefix := etcdtest.UniquePrefix(t)
		return func() store.Store { return srv.NewStore(t, prefix) }
	}
	t.Run("PerShardWatches", func(t *testing.T) { storetest.RunDirectory(t, b) })
	t.Run("OneWatch", func(t *testing.T) {
		old := etcdstore.SetMaxShardWatches(0)
		t.Cleanup(func() { etcdstore.SetMaxShardWatches(old) })
		storetest.RunDirectory(t, b)
	})
}
