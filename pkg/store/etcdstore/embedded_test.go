package etcdstore_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
)

// A second server on a data dir in use fails at once (etcd itself would
// block forever) and leaves the first one serving.
func TestStartEmbeddedDataDirInUse(t *testing.T) {
	dir := shortTempDir(t)
	e, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e2, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: dir, StartTimeout: 5 * time.Second})
	if err == nil {
		e2.Close()
		t.Fatal("second server on the same data dir started")
	}
	if !strings.Contains(err.Error(), "is in use by another server") {
		t.Fatalf("err = %v", err)
	}
	s, err := etcdstore.New(ctx, e.Endpoints(), etcdstore.Options{DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("first server no longer reachable: %v", err)
	}
	s.Close()
}
