package k8s

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agent/reclaim"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// TestKubeDeadNodeReclaim: the dead-node lifecycle on the Kubernetes
// datastore, which keeps no heartbeat: geniectl node delete refuses a
// registered node without --force; a node whose GenieNode object is gone
// is reclaimed by the sweeper once it has been missing for the reclaim
// time (not before), and its endpoints and blocks are gone from the API
// server; the live nodes keep theirs.
func TestKubeDeadNodeReclaim(t *testing.T) {
	srv := kubeapi.Shared(t)
	if err := srv.InstallProjectCRDs(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	st, err := kubestore.NewForConfig(ctx, srv.RESTConfig(), kubestore.Options{Scope: strings.ToLower(kubeapi.UniqueName("rcl"))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24"), BlockPrefixLen: 28}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.DeleteSubnet(t.Context(), "blue", "web")
		st.DeleteVPC(t.Context(), "blue")
	})
	for i, n := range []string{"n1", "n2"} {
		if err := st.RegisterNode(ctx, vpc.Node{Name: n, UnderlayIP: netip.AddrFrom4([4]byte{192, 168, 9, byte(i + 1)}),
			UnderlayMAC: net.HardwareAddr{2, 0, 0, 0, 9, byte(i + 1)}, Heartbeat: time.Now()}); err != nil {
			t.Fatal(err)
		}
		b, err := st.ClaimBlock(ctx, "blue", "web", n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: n + "-c/eth0", IP: b.CIDR.Addr().Next().Next(), Node: n}); err != nil {
			t.Fatal(err)
		}
	}
	holds := func(node string) (eps, blocks int) {
		all, _, err := st.ListEndpoints(ctx, "blue")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range all {
			if e.Node == node {
				eps++
			}
		}
		bs, err := st.ListBlocks(ctx, "blue", "web")
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			if b.Node == node {
				blocks++
			}
		}
		return eps, blocks
	}
	// No heartbeat on this store: a registered node counts as alive.
	if _, err := reclaim.Node(ctx, st, "n2", false, time.Minute); !errors.Is(err, reclaim.ErrLive) || !strings.Contains(err.Error(), "keeps no heartbeat") {
		t.Fatalf("node delete without --force: %v", err)
	}
	// n2's GenieNode goes (the node left the cluster); its leftovers stay
	// until it has been missing for the reclaim time.
	if err := st.DeleteNode(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	r := &reclaim.Reclaimer{Store: st, Self: "n1", After: time.Minute, Now: func() time.Time { return clock }}
	if got, err := r.Sweep(ctx); err != nil || len(got) != 0 {
		t.Fatalf("first sweep: %v, %v", got, err)
	}
	clock = clock.Add(30 * time.Second)
	if got, err := r.Sweep(ctx); err != nil || len(got) != 0 {
		t.Fatalf("sweep before the reclaim time: %v, %v", got, err)
	}
	if e, b := holds("n2"); e != 1 || b != 1 {
		t.Fatalf("n2 before the reclaim time: %d endpoints, %d blocks", e, b)
	}
	clock = clock.Add(31 * time.Second)
	if got, err := r.Sweep(ctx); err != nil || len(got) != 1 || got[0] != "n2" {
		t.Fatalf("sweep after the reclaim time: %v, %v", got, err)
	}
	if e, b := holds("n2"); e != 0 || b != 0 {
		t.Fatalf("n2 after the reclaim: %d endpoints, %d blocks", e, b)
	}
	if e, b := holds("n1"); e != 1 || b != 1 {
		t.Fatalf("live n1 after the reclaim: %d endpoints, %d blocks", e, b)
	}
	if _, err := st.GetNode(ctx, "n1"); err != nil {
		t.Fatalf("live n1: %v", err)
	}
	// The forced delete of the live node takes everything.
	if _, err := reclaim.Node(ctx, st, "n1", true, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetNode(ctx, "n1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("n1 after forced delete: %v", err)
	}
	if e, b := holds("n1"); e != 0 || b != 0 {
		t.Fatalf("n1 after forced delete: %d endpoints, %d blocks", e, b)
	}
}
