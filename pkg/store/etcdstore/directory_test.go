package etcdstore_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cni-genie/cni-genie/pkg/directory"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore/etcdtest"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
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

// An endpoint stored before the directory layout (no directory key) gets
// its key from BackfillDirectory, once; a later listing of its shard has
// it. A backfill never recreates the key of a deleted endpoint.
func TestDirectoryBackfill(t *testing.T) {
	ctx := context.Background()
	prefix := etcdtest.UniquePrefix(t)
	s := srv.NewStore(t, prefix)
	storetest.MustVPC(t, s, "blue", "10.1.0.0/16")
	storetest.MustSubnet(t, s, "blue", "web", "10.1.0.0/24")
	storetest.RegisterNodes(t, s, "n1")
	if _, err := s.ClaimBlock(ctx, "blue", "web", "n1"); err != nil {
		t.Fatal(err)
	}
	var eps []vpc.Endpoint
	for i := range 3 {
		e, err := s.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: fmt.Sprintf("c%d/eth0", i),
			IP: netip.AddrFrom4([4]byte{10, 1, 0, byte(2 + i)}), MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(i)}, Node: "n1"})
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, e)
	}
	// Make them legacy: drop every directory key behind the store's back.
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Delete(ctx, prefix+"/directory/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	// The third endpoint is deleted: its key must not come back.
	if err := s.DeleteEndpoint(ctx, "blue", eps[2].ID); err != nil {
		t.Fatal(err)
	}
	shards := func() []uint32 {
		var out []uint32
		for _, e := range eps {
			out = append(out, directory.Key{VNI: e.VNI, IP: e.IP}.Shard(s.DirectoryShards()))
		}
		return out
	}()
	if recs, _, _ := s.ListShards(ctx, shards); len(recs) != 0 {
		t.Fatalf("legacy endpoints listed: %+v", recs)
	}
	n, err := s.BackfillDirectory(ctx)
	if err != nil || n != 2 {
		t.Fatalf("backfill wrote %d, %v; want 2", n, err)
	}
	recs, _, err := s.ListShards(ctx, shards)
	if err != nil || len(recs) != 2 {
		t.Fatalf("after backfill: %+v, %v", recs, err)
	}
	for _, r := range recs {
		if r.Node != "n1" || (r.IP != eps[0].IP && r.IP != eps[1].IP) {
			t.Errorf("backfilled record %+v", r)
		}
	}
	if n, err := s.BackfillDirectory(ctx); err != nil || n != 0 {
		t.Errorf("second backfill wrote %d, %v; want 0", n, err)
	}
}
