package etcdstore_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store/etcdstore/etcdtest"
)

// srv is the embedded etcd shared by all tests of this package; each test
// uses its own key prefix (etcdtest.UniquePrefix).
var srv *etcdtest.Server

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv(childEnv) != "" {
		// A re-executed child (see TestPrivilegedUnixSocketAcrossNetns)
		// only runs its helper test against the parent's server.
		return m.Run()
	}
	s, err := etcdtest.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Stop()
	srv = s
	return m.Run()
}
