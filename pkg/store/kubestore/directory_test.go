package kubestore_test

import (
	"fmt"
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cni-genie/cni-genie/pkg/directory"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/store/storetest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
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

// A VPCEndpoint stored before the directory layout (no shard label, or a
// wrong one, written by hand) is labelled by BackfillDirectory and then
// listed with its shard; a second backfill writes nothing.
func TestDirectoryBackfill(t *testing.T) {
	cfg := server(t).RESTConfig()
	d := dyn(t, cfg)
	sc := scope()
	ctx := t.Context()
	s := open(t, cfg, sc)
	storetest.MustVPC(t, s, "blue", "10.1.0.0/16")
	storetest.MustSubnet(t, s, "blue", "web", "10.1.0.0/24")
	storetest.RegisterNodes(t, s, "n1")
	if _, err := s.ClaimBlock(ctx, "blue", "web", "n1"); err != nil {
		t.Fatal(err)
	}
	var shards []uint32
	for i := range 2 {
		e, err := s.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: fmt.Sprintf("c%d/eth0", i),
			IP: netip.AddrFrom4([4]byte{10, 1, 0, byte(2 + i)}), Node: "n1"})
		if err != nil {
			t.Fatal(err)
		}
		shards = append(shards, directory.Key{VNI: e.VNI, IP: e.IP}.Shard(s.DirectoryShards()))
	}
	// One loses its label, the other gets a wrong one.
	l, err := d.Resource(gvr("vpcendpoints")).List(ctx, metav1.ListOptions{LabelSelector: kubestore.LabelScope + "=" + sc})
	if err != nil || len(l.Items) != 2 {
		t.Fatalf("endpoint objects: %v, %v", len(l.Items), err)
	}
	for i, o := range l.Items {
		labels := o.GetLabels()
		if i == 0 {
			delete(labels, kubestore.LabelShard)
		} else {
			labels[kubestore.LabelShard] = "9999"
		}
		o.SetLabels(labels)
		if _, err := d.Resource(gvr("vpcendpoints")).Update(ctx, &o, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if recs, _, err := s.ListShards(ctx, shards); err != nil || len(recs) != 0 {
		t.Fatalf("legacy endpoints listed: %+v, %v", recs, err)
	}
	if n, err := s.BackfillDirectory(ctx); err != nil || n != 2 {
		t.Fatalf("backfill wrote %d, %v; want 2", n, err)
	}
	if recs, _, err := s.ListShards(ctx, shards); err != nil || len(recs) != 2 {
		t.Fatalf("after backfill: %+v, %v", recs, err)
	}
	if n, err := s.BackfillDirectory(ctx); err != nil || n != 0 {
		t.Errorf("second backfill wrote %d, %v; want 0", n, err)
	}
}
