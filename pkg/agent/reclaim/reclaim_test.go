package reclaim_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agent/reclaim"
	"github.com/cni-genie/cni-genie/pkg/ipam"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore/etcdtest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

var srv *etcdtest.Server

func TestMain(m *testing.M) { etcdtest.Main(m, &srv) }

// fixture: VPC blue with subnet web (blocks of /28) and nodes that each
// hold a block with an endpoint in it.
func fixture(t *testing.T, nodes ...string) store.Store {
	t.Helper()
	ctx := t.Context()
	s := srv.NewStore(t, "")
	if _, err := s.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24"), BlockPrefixLen: 28}); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		if err := s.RegisterNode(ctx, vpc.Node{Name: n, UnderlayIP: netip.AddrFrom4([4]byte{192, 168, 0, byte(i + 1)}),
			UnderlayMAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(i + 1)}, Heartbeat: time.Now()}); err != nil {
			t.Fatal(err)
		}
		a, err := ipam.New(ctx, s, n, t.TempDir(), ipam.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for j := range 2 {
			al, err := a.Allocate(ctx, "blue", "web", fmt.Sprintf("%s-c%d/eth0", n, j), netip.Addr{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: al.Owner, IP: al.IP.Addr(), Node: n}); err != nil {
				t.Fatal(err)
			}
		}
		a.Close()
	}
	return s
}

// holdings counts the node's endpoints and blocks in the store, and
// whether its node object exists.
func holdings(t *testing.T, s store.Store, node string) (eps, blocks int, registered bool) {
	t.Helper()
	ctx := t.Context()
	all, _, err := s.ListEndpoints(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		if e.Node == node {
			eps++
		}
	}
	bs, err := s.ListBlocks(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if b.Node == node {
			blocks++
		}
	}
	_, err = s.GetNode(ctx, node)
	return eps, blocks, err == nil
}

func setHeartbeat(t *testing.T, s store.Store, node string, at time.Time) {
	t.Helper()
	n, err := s.GetNode(t.Context(), node)
	if err != nil {
		t.Fatal(err)
	}
	n.Heartbeat = at
	if err := s.RegisterNode(t.Context(), n); err != nil {
		t.Fatal(err)
	}
}

// A node whose heartbeat stopped is reclaimed once it is older than
// After, not before; a node whose object vanished is reclaimed After
// after the sweeper first saw it missing; live nodes keep everything; and
// only the live node with the smallest name sweeps. Seen failing with
// Alive always true (nothing reclaimed) and with the leader check removed
// (the non-sweeper reclaimed).
func TestSweep(t *testing.T) {
	s := fixture(t, "n1", "n2", "n3", "n4")
	ctx := t.Context()
	now := time.Now()
	clock := now
	after := time.Minute
	r := &reclaim.Reclaimer{Store: s, Self: "n1", After: after, Now: func() time.Time { return clock }}
	other := &reclaim.Reclaimer{Store: s, Self: "n4", After: after, Now: func() time.Time { return clock }}

	setHeartbeat(t, s, "n2", now) // its agent dies now
	if err := s.DeleteNode(ctx, "n3"); err != nil {
		t.Fatal(err)
	}
	clock = now.Add(after / 2)
	// The others keep heartbeating.
	for _, n := range []string{"n1", "n4"} {
		setHeartbeat(t, s, n, clock)
	}
	if got, err := r.Sweep(ctx); err != nil || len(got) != 0 {
		t.Fatalf("sweep before the reclaim time: %v, %v", got, err)
	}
	for _, n := range []string{"n2", "n3"} {
		if eps, bs, _ := holdings(t, s, n); eps != 2 || bs != 1 {
			t.Fatalf("%s before the reclaim time: %d endpoints, %d blocks", n, eps, bs)
		}
	}
	clock = now.Add(after + time.Second)
	for _, n := range []string{"n1", "n4"} {
		setHeartbeat(t, s, n, clock)
	}
	if got, err := other.Sweep(ctx); err != nil || len(got) != 0 {
		t.Fatalf("n4 swept although n1 is the sweeper: %v, %v", got, err)
	}
	got, err := r.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// n2's heartbeat is stale; n3 was first seen missing at after/2, so
	// it waits for the next sweep past after/2 + after.
	if len(got) != 1 || got[0] != "n2" {
		t.Fatalf("reclaimed %v, want [n2]", got)
	}
	if eps, bs, reg := holdings(t, s, "n2"); eps != 0 || bs != 0 || reg {
		t.Fatalf("n2 after reclaim: %d endpoints, %d blocks, registered %v", eps, bs, reg)
	}
	clock = now.Add(after/2 + after + time.Second)
	for _, n := range []string{"n1", "n4"} {
		setHeartbeat(t, s, n, clock)
	}
	if got, err := r.Sweep(ctx); err != nil || len(got) != 1 || got[0] != "n3" {
		t.Fatalf("second sweep reclaimed %v, %v; want [n3]", got, err)
	}
	if eps, bs, _ := holdings(t, s, "n3"); eps != 0 || bs != 0 {
		t.Fatalf("n3 after reclaim: %d endpoints, %d blocks", eps, bs)
	}
	for _, n := range []string{"n1", "n4"} {
		if eps, bs, reg := holdings(t, s, n); eps != 2 || bs != 1 || !reg {
			t.Fatalf("live %s lost something: %d endpoints, %d blocks, registered %v", n, eps, bs, reg)
		}
	}
}

// Concurrent reclaims of one node (several agents sweeping at once, or a
// retry racing a first run) all succeed and free everything exactly once.
func TestReclaimConcurrent(t *testing.T) {
	s := fixture(t, "n1", "dead")
	var wg sync.WaitGroup
	var mu sync.Mutex
	eps, blocks := 0, 0
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := ipam.ReclaimNode(context.Background(), s, "dead")
			if err != nil {
				t.Errorf("concurrent reclaim: %v", err)
				return
			}
			mu.Lock()
			eps += len(r.Endpoints)
			blocks += len(r.Blocks)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if e, b, _ := holdings(t, s, "dead"); e != 0 || b != 0 {
		t.Fatalf("after concurrent reclaims: %d endpoints, %d blocks left", e, b)
	}
	if eps < 2 || blocks < 1 {
		t.Fatalf("reclaims reported %d endpoints and %d blocks freed, want at least 2 and 1", eps, blocks)
	}
	if e, b, _ := holdings(t, s, "n1"); e != 2 || b != 1 {
		t.Fatalf("n1 after reclaiming another node: %d endpoints, %d blocks", e, b)
	}
}

// geniectl node delete: a live node is refused unless forced; a dead one
// (stale heartbeat) is deleted with its endpoints and blocks.
func TestNodeDelete(t *testing.T) {
	s := fixture(t, "n1", "n2")
	ctx := t.Context()
	if _, err := reclaim.Node(ctx, s, "n1", false, time.Minute); !errors.Is(err, reclaim.ErrLive) {
		t.Fatalf("delete of a live node: %v, want ErrLive", err)
	}
	if eps, bs, reg := holdings(t, s, "n1"); eps != 2 || bs != 1 || !reg {
		t.Fatalf("refused delete touched n1: %d endpoints, %d blocks, registered %v", eps, bs, reg)
	}
	setHeartbeat(t, s, "n2", time.Now().Add(-2*time.Minute))
	r, err := reclaim.Node(ctx, s, "n2", false, time.Minute)
	if err != nil || len(r.Endpoints) != 2 || len(r.Blocks) != 1 {
		t.Fatalf("delete of a dead node: %+v, %v", r, err)
	}
	if eps, bs, reg := holdings(t, s, "n2"); eps != 0 || bs != 0 || reg {
		t.Fatalf("n2 after delete: %d endpoints, %d blocks, registered %v", eps, bs, reg)
	}
	if _, err := reclaim.Node(ctx, s, "n1", true, time.Minute); err != nil {
		t.Fatalf("forced delete: %v", err)
	}
	if eps, bs, reg := holdings(t, s, "n1"); eps != 0 || bs != 0 || reg {
		t.Fatalf("n1 after forced delete: %d endpoints, %d blocks, registered %v", eps, bs, reg)
	}
}
