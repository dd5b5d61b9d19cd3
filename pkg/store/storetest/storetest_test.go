package storetest_test

import (
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore/etcdtest"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
)

var srv *etcdtest.Server

func TestMain(m *testing.M) { etcdtest.Main(m, &srv) }

// The suite against the reference backend: etcd (embedded, real server).
func TestEtcdConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func() store.Store {
		prefix := etcdtest.UniquePrefix(t)
		return func() store.Store { return srv.NewStore(t, prefix) }
	})
}
