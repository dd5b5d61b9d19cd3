package etcdstore_test

import (
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore/etcdtest"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
)

// The egress gateway conformance tests (store.EgressStore) against
// embedded etcd.
func TestEgressConformance(t *testing.T) {
	storetest.RunEgress(t, func(t *testing.T) func() store.Store {
		prefix := etcdtest.UniquePrefix(t)
		return func() store.Store { return srv.NewStore(t, prefix) }
	})
}

// Heartbeats (store.BeatStore) against embedded etcd.
func TestHeartbeats(t *testing.T) {
	storetest.RunHeartbeats(t, srv.NewStore(t, etcdtest.UniquePrefix(t)))
}
