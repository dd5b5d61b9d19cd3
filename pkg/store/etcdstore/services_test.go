package etcdstore_test

import (
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore/etcdtest"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
)

// The service conformance tests (store.ServiceStore) against embedded etcd.
func TestServiceConformance(t *testing.T) {
	storetest.RunServices(t, func(t *testing.T) func() store.Store {
		prefix := etcdtest.UniquePrefix(t)
		return func() store.Store { return srv.NewStore(t, prefix) }
	})
}
