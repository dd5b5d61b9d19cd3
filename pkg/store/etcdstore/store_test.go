package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

var ctx = context.Background()

func mustVPC(t *testing.T, s store.Store, name, cidr string) vpc.VPC {
	t.Helper()
	v, err := s.CreateVPC(ctx, vpc.VPC{Name: name, CIDR: netip.MustParsePrefix(cidr)})
	if err != nil {
		t.Fatalf("create vpc %s: %v", name, err)
	}
	return v
}

func mustSubnet(t *testing.T, s store.Store, v, name, cidr string) vpc.Subnet {
	t.Helper()
	sn, err := s.CreateSubnet(ctx, vpc.Subnet{VPC: v, Name: name, CIDR: netip.MustParsePrefix(cidr)})
	if err != nil {
		t.Fatalf("create subnet %s/%s: %v", v, name, err)
	}
	return sn
}

func TestVPCLifecycle(t *testing.T) {
	s, _ := newStore(t)
	a := mustVPC(t, s, "a", "10.0.0.0/16")
	b := mustVPC(t, s, "b", "10.0.0.0/16") // same CIDR in another VPC: allowed
	c := mustVPC(t, s, "c", "192.168.0.0/24")
	if a.VNI != 1 || b.VNI != 2 || c.VNI != 3 {
		t.Fatalf("vnis = %d %d %d, want 1 2 3", a.VNI, b.VNI, c.VNI)
	}
	if _, err := s.CreateVPC(ctx, vpc.VPC{Name: "a", CIDR: netip.MustParsePrefix("10.9.0.0/16")}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate vpc: err = %v, want ErrExists", err)
	}
	got, err := s.GetVPC(ctx, "b")
	if err != nil || got != b {
		t.Fatalf("get b = %+v, %v; want %+v", got, err, b)
	}
	if _, err := s.GetVPC(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get missing: err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteVPC(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVPC(ctx, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice: err = %v, want ErrNotFound", err)
	}
	// The lowest free VNI is reused.
	d := mustVPC(t, s, "d", "10.0.0.0/8")
	if d.VNI != 2 {
		t.Fatalf("vni after delete = %d, want 2 (lowest free)", d.VNI)
	}
	list, err := s.ListVPCs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range list {
		names = append(names, fmt.Sprintf("%s=%d", v.Name, v.VNI))
	}
	if want := "a=1 c=3 d=2"; strings.Join(names, " ") != want {
		t.Fatalf("list = %v, want %s", names, want)
	}
}

func TestCreateVPCInvalid(t *testing.T) {
	s, _ := newStore(t)
	for _, tc := range []struct {
		name, cidr, want string
	}{
		{"Blue", "10.0.0.0/16", "not a DNS-1123 label"},
		{"", "10.0.0.0/16", "name is empty"},
		{"blue", "10.0.0.1/16", "host bits set (did you mean 10.0.0.0/16?)"},
		{"blue", "fd00::/64", "is not IPv4"},
		{strings.Repeat("x", 64), "10.0.0.0/16", "not a DNS-1123 label"},
	} {
		var p netip.Prefix
		p, _ = netip.ParsePrefix(tc.cidr)
		_, err := s.CreateVPC(ctx, vpc.VPC{Name: tc.name, CIDR: p})
		if !errors.Is(err, vpc.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("create vpc %q %s: err = %v, want ErrInvalid containing %q", tc.name, tc.cidr, err, tc.want)
		}
	}
	if l, _ := s.ListVPCs(ctx); len(l) != 0 {
		t.Fatalf("invalid vpcs were stored: %+v", l)
	}
}

// Concurrent creators on separate connections never share a VNI, and the
// VNIs are exactly 1..n (lowest free, never random).
func TestCreateVPCConcurrentVNIs(t *testing.T) {
	_, prefix := newStore(t)
	const clients, perClient = 4, 10
	var wg sync.WaitGroup
	vnis := make(chan uint32, clients*perClient)
	errs := make(chan error, clients*perClient)
	for c := range clients {
		s := newStoreAt(t, prefix)
		wg.Go(func() {
			for i := range perClient {
				v, err := s.CreateVPC(ctx, vpc.VPC{Name: fmt.Sprintf("v%d-%d", c, i), CIDR: netip.MustParsePrefix("10.0.0.0/16")})
				if err != nil {
					errs <- err
					continue
				}
				vnis <- v.VNI
			}
		})
	}
	// Racing creates of one name: exactly one wins.
	var won sync.WaitGroup
	wins := make(chan struct{}, clients)
	for range clients {
		s := newStoreAt(t, prefix)
		won.Go(func() {
			_, err := s.CreateVPC(ctx, vpc.VPC{Name: "same", CIDR: netip.MustParsePrefix("10.0.0.0/16")})
			switch {
			case err == nil:
				wins <- struct{}{}
			case !errors.Is(err, store.ErrExists):
				errs <- err
			}
		})
	}
	wg.Wait()
	won.Wait()
	close(vnis)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(wins) != 1 {
		t.Errorf("%d concurrent creates of one name succeeded, want 1", len(wins))
	}
	var got []uint32
	for v := range vnis {
		got = append(got, v)
	}
	slices.Sort(got)
	if len(got) != clients*perClient {
		t.Fatalf("got %d vnis", len(got))
	}
	for i, v := range got[:len(got)] {
		if i > 0 && v == got[i-1] {
			t.Fatalf("vni %d allocated twice", v)
		}
	}
	// 41 VPCs in total: VNIs 1..41 with none skipped.
	all, _ := newStoreAt(t, prefix).ListVPCs(ctx)
	seen := map[uint32]bool{}
	for _, v := range all {
		seen[v.VNI] = true
	}
	for i := uint32(1); i <= uint32(len(all)); i++ {
		if !seen[i] {
			t.Fatalf("vni %d unused among %d vpcs: allocation is not lowest-free", i, len(all))
		}
	}
}

func TestSubnetValidation(t *testing.T) {
	s, _ := newStore(t)
	mustVPC(t, s, "blue", "10.1.0.0/16")
	mustVPC(t, s, "red", "10.1.0.0/16")
	mustSubnet(t, s, "blue", "db", "10.1.0.128/25")
	// Same CIDR in another VPC is fine.
	mustSubnet(t, s, "red", "web", "10.1.0.0/24")

	for _, tc := range []struct {
		sn      vpc.Subnet
		wantErr error
		want    string
	}{
		{vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24")}, store.ErrConflict,
			`subnet "blue/web" 10.1.0.0/24 overlaps subnet "blue/db" 10.1.0.128/25`},
		{vpc.Subnet{VPC: "blue", Name: "in", CIDR: netip.MustParsePrefix("10.1.0.192/26")}, store.ErrConflict,
			`overlaps subnet "blue/db" 10.1.0.128/25`},
		{vpc.Subnet{VPC: "blue", Name: "db", CIDR: netip.MustParsePrefix("10.1.9.0/24")}, store.ErrExists, "already exists"},
		{vpc.Subnet{VPC: "blue", Name: "out", CIDR: netip.MustParsePrefix("10.2.0.0/24")}, vpc.ErrInvalid,
			`cidr 10.2.0.0/24 is outside vpc "blue" 10.1.0.0/16`},
		{vpc.Subnet{VPC: "blue", Name: "big", CIDR: netip.MustParsePrefix("10.0.0.0/8")}, vpc.ErrInvalid, "is outside vpc"},
		{vpc.Subnet{VPC: "blue", Name: "gw", CIDR: netip.MustParsePrefix("10.1.2.0/24"), Gateway: netip.MustParseAddr("10.1.3.1")}, vpc.ErrInvalid,
			"gateway 10.1.3.1 is outside 10.1.2.0/24"},
		{vpc.Subnet{VPC: "blue", Name: "gw", CIDR: netip.MustParsePrefix("10.1.2.0/24"), Gateway: netip.MustParseAddr("10.1.2.255")}, vpc.ErrInvalid,
			"network or broadcast"},
		{vpc.Subnet{VPC: "blue", Name: "tiny", CIDR: netip.MustParsePrefix("10.1.2.0/31")}, vpc.ErrInvalid, "too small"},
		{vpc.Subnet{VPC: "blue", Name: "bits", CIDR: netip.MustParsePrefix("10.1.2.1/24")}, vpc.ErrInvalid, "host bits"},
		{vpc.Subnet{VPC: "blue", Name: "blk", CIDR: netip.MustParsePrefix("10.1.2.0/24"), BlockPrefixLen: 20}, vpc.ErrInvalid, "block prefix length /20"},
		{vpc.Subnet{VPC: "blue", Name: "Bad_Name", CIDR: netip.MustParsePrefix("10.1.2.0/24")}, vpc.ErrInvalid, "DNS-1123"},
		{vpc.Subnet{VPC: "green", Name: "web", CIDR: netip.MustParsePrefix("10.1.2.0/24")}, store.ErrNotFound, `vpc "green"`},
	} {
		_, err := s.CreateSubnet(ctx, tc.sn)
		if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("create %s: err = %v; want %v containing %q", tc.sn, err, tc.wantErr, tc.want)
		}
	}

	// Defaults: gateway = first host, block /26 (or the subnet when smaller).
	web := mustSubnet(t, s, "blue", "web", "10.1.0.0/25")
	if web.Gateway != netip.MustParseAddr("10.1.0.1") || web.BlockPrefixLen != 26 {
		t.Fatalf("defaults: %+v", web)
	}
	small := mustSubnet(t, s, "blue", "small", "10.1.1.0/28")
	if small.BlockPrefixLen != 28 {
		t.Fatalf("small subnet block = /%d, want /28", small.BlockPrefixLen)
	}
	got, err := s.GetSubnet(ctx, "blue", "web")
	if err != nil || got != web {
		t.Fatalf("get = %+v, %v; want %+v", got, err, web)
	}
	l, err := s.ListSubnets(ctx, "blue")
	if err != nil || len(l) != 3 {
		t.Fatalf("list blue = %+v, %v", l, err)
	}
	all, err := s.ListSubnets(ctx, "")
	if err != nil || len(all) != 4 {
		t.Fatalf("list all = %+v, %v", all, err)
	}
}

// Concurrent creates of overlapping subnets from separate connections:
// exactly one wins, whatever the interleaving.
func TestCreateSubnetConcurrentOverlap(t *testing.T) {
	s, prefix := newStore(t)
	mustVPC(t, s, "blue", "10.0.0.0/8")
	for round := range 5 {
		cidrs := []string{"10.%d.0.0/16", "10.%d.0.0/24", "10.%d.1.0/24", "10.%d.128.0/17", "10.%d.0.0/20", "10.%d.255.0/24"}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var ok []string
		for i, c := range cidrs {
			st := newStoreAt(t, prefix)
			cidr := fmt.Sprintf(c, round)
			wg.Go(func() {
				_, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: fmt.Sprintf("r%d-s%d", round, i), CIDR: netip.MustParsePrefix(cidr)})
				if err == nil {
					mu.Lock()
					ok = append(ok, cidr)
					mu.Unlock()
				} else if !errors.Is(err, store.ErrConflict) {
					t.Errorf("create %s: %v", cidr, err)
				}
			})
		}
		wg.Wait()
		// Only the non-overlapping pairs may both win: /24s and the /17
		// lie inside the /16; 0.0/24, 1.0/24 and 0.0/20 overlap each other
		// except 1.0/24 vs 0.0/24. Check directly that winners are disjoint.
		for i := range ok {
			for j := range i {
				if netip.MustParsePrefix(ok[i]).Overlaps(netip.MustParsePrefix(ok[j])) {
					t.Fatalf("round %d: overlapping subnets %s and %s both created", round, ok[i], ok[j])
				}
			}
		}
		if len(ok) == 0 {
			t.Fatalf("round %d: no subnet created", round)
		}
	}
}

func registerNodes(t *testing.T, s store.Store, names ...string) {
	t.Helper()
	for i, n := range names {
		if err := s.RegisterNode(ctx, vpc.Node{Name: n, UnderlayIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}),
			UnderlayMAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(i + 1)}}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBlocks(t *testing.T) {
	s, prefix := newStore(t)
	mustVPC(t, s, "blue", "10.1.0.0/16")
	mustSubnet(t, s, "blue", "web", "10.1.0.0/24") // four /26 blocks
	b1, err := s.ClaimBlock(ctx, "blue", "web", "n1")
	if err != nil || b1.CIDR != netip.MustParsePrefix("10.1.0.0/26") || b1.Node != "n1" {
		t.Fatalf("claim 1 = %+v, %v", b1, err)
	}
	b, err := s.ClaimBlockContaining(ctx, "blue", "web", "n2", netip.MustParseAddr("10.1.0.200"))
	if err != nil || b.CIDR != netip.MustParsePrefix("10.1.0.192/26") {
		t.Fatalf("claim containing = %+v, %v", b, err)
	}
	if _, err := s.ClaimBlockContaining(ctx, "blue", "web", "n2", netip.MustParseAddr("10.1.0.5")); !errors.Is(err, store.ErrConflict) ||
		!strings.Contains(err.Error(), `block 10.1.0.0/26 containing 10.1.0.5 is held by node "n1"`) {
		t.Fatalf("claim held block: %v", err)
	}
	// Claiming a block one already holds returns it.
	if again, err := s.ClaimBlockContaining(ctx, "blue", "web", "n1", netip.MustParseAddr("10.1.0.5")); err != nil || again != b1 {
		t.Fatalf("reclaim own = %+v, %v", again, err)
	}
	if _, err := s.ClaimBlock(ctx, "blue", "web", "n1"); err != nil {
		t.Fatal(err)
	}
	if b, err := s.ClaimBlock(ctx, "blue", "web", "n3"); err != nil || b.CIDR != netip.MustParsePrefix("10.1.0.128/26") {
		t.Fatalf("claim 4 = %+v, %v", b, err)
	}
	_, err = s.ClaimBlock(ctx, "blue", "web", "n3")
	if !errors.Is(err, store.ErrSubnetFull) || !strings.Contains(err.Error(), `all 4 blocks of /26 in subnet "blue/web" 10.1.0.0/24 are claimed`) {
		t.Fatalf("full: %v", err)
	}
	if err := s.ReleaseBlock(ctx, "blue", "web", b1.CIDR, "n2"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("release someone else's block: %v", err)
	}
	if err := s.ReleaseBlock(ctx, "blue", "web", b1.CIDR, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseBlock(ctx, "blue", "web", b1.CIDR, "n1"); err != nil {
		t.Fatalf("release twice: %v", err)
	}
	if b, err := s.ClaimBlock(ctx, "blue", "web", "n3"); err != nil || b.CIDR != b1.CIDR {
		t.Fatalf("claim after release = %+v, %v", b, err)
	}
	l, err := s.ListBlocks(ctx, "blue", "web")
	if err != nil || len(l) != 4 || l[0].CIDR != b1.CIDR || l[0].Node != "n3" {
		t.Fatalf("list = %+v, %v", l, err)
	}
	if _, err := s.ClaimBlock(ctx, "blue", "nope", "n1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("claim in missing subnet: %v", err)
	}

	// A /30 subnet is a single block with one assignable address.
	mustSubnet(t, s, "blue", "p2p", "10.1.1.0/30")
	if b, err := s.ClaimBlock(ctx, "blue", "p2p", "n1"); err != nil || b.CIDR != netip.MustParsePrefix("10.1.1.0/30") {
		t.Fatalf("claim /30 = %+v, %v", b, err)
	}
	// /32 blocks of a /29: the network (.0), gateway (.1) and broadcast
	// (.7) blocks are skipped.
	if _, err := s.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "host", CIDR: netip.MustParsePrefix("10.1.2.0/29"), BlockPrefixLen: 32}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		b, err := s.ClaimBlock(ctx, "blue", "host", "n1")
		if errors.Is(err, store.ErrSubnetFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b.CIDR.String())
	}
	if want := "10.1.2.2/32 10.1.2.3/32 10.1.2.4/32 10.1.2.5/32 10.1.2.6/32"; strings.Join(got, " ") != want {
		t.Fatalf("/32 blocks = %v, want %s", got, want)
	}

	// Concurrent claimers on separate connections never share a block.
	mustSubnet(t, s, "blue", "race", "10.1.64.0/20") // 64 blocks
	var wg sync.WaitGroup
	var mu sync.Mutex
	owner := map[netip.Prefix]string{}
	for n := range 6 {
		st := newStoreAt(t, prefix)
		node := fmt.Sprintf("node-%d", n)
		wg.Go(func() {
			for {
				b, err := st.ClaimBlock(ctx, "blue", "race", node)
				if errors.Is(err, store.ErrSubnetFull) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if o, dup := owner[b.CIDR]; dup {
					t.Errorf("block %s claimed by %s and %s", b.CIDR, o, node)
				}
				owner[b.CIDR] = node
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(owner) != 64 {
		t.Fatalf("%d blocks claimed, want 64", len(owner))
	}
	all, _ := s.ListBlocks(ctx, "", "")
	if len(all) != 4+1+5+64 {
		t.Fatalf("list all blocks: %d", len(all))
	}
}

func TestEndpoints(t *testing.T) {
	s, _ := newStore(t)
	blue := mustVPC(t, s, "blue", "10.1.0.0/16")
	mustVPC(t, s, "red", "10.1.0.0/16")
	mustSubnet(t, s, "blue", "web", "10.1.0.0/24")
	mustSubnet(t, s, "red", "web", "10.1.0.0/24")
	registerNodes(t, s, "n1", "n2")
	if _, err := s.ClaimBlock(ctx, "blue", "web", "n1"); err != nil { // 10.1.0.0/26
		t.Fatal(err)
	}
	if _, err := s.ClaimBlock(ctx, "red", "web", "n2"); err != nil { // red 10.1.0.0/26
		t.Fatal(err)
	}
	_, rev0, err := s.ListEndpoints(ctx, "blue")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := s.WatchEndpoints(wctx, "blue", rev0)

	ep := vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c1/eth1", PodNamespace: "default", PodName: "a", Interface: "eth1",
		IP: netip.MustParseAddr("10.1.0.2"), MAC: net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}, Node: "n1"}
	got, err := s.PutEndpoint(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	if got.VNI != blue.VNI {
		t.Fatalf("vni = %d, want %d", got.VNI, blue.VNI)
	}
	// Same IP in another VPC is fine (own block there).
	if _, err := s.PutEndpoint(ctx, vpc.Endpoint{VPC: "red", Subnet: "web", ID: "c9/eth1", IP: ep.IP, Node: "n2"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		e       vpc.Endpoint
		wantErr error
		want    string
	}{
		{vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c2/eth1", IP: ep.IP, Node: "n1"}, store.ErrConflict, `ip 10.1.0.2 is held by endpoint "blue/c1/eth1"`},
		{vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c2/eth1", IP: netip.MustParseAddr("10.1.0.3"), Node: "n2"}, store.ErrConflict, `held by node "n1", not "n2"`},
		{vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c2/eth1", IP: netip.MustParseAddr("10.1.0.99"), Node: "n1"}, store.ErrConflict, "is not claimed by node"},
		{vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c2/eth1", IP: netip.MustParseAddr("10.1.0.1"), Node: "n1"}, vpc.ErrInvalid, "not assignable"},
		{vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c2/eth1", IP: netip.MustParseAddr("10.1.1.5"), Node: "n1"}, vpc.ErrInvalid, "not assignable"},
		{vpc.Endpoint{VPC: "blue", Subnet: "db", ID: "c2/eth1", IP: netip.MustParseAddr("10.1.0.3"), Node: "n1"}, store.ErrNotFound, `subnet "blue/db"`},
		{vpc.Endpoint{VPC: "green", Subnet: "web", ID: "c2/eth1", IP: netip.MustParseAddr("10.1.0.3"), Node: "n1"}, store.ErrNotFound, `vpc "green"`},
		{vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c2 eth1", IP: netip.MustParseAddr("10.1.0.3"), Node: "n1"}, vpc.ErrInvalid, "space"},
	} {
		if _, err := s.PutEndpoint(ctx, tc.e); !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("put %+v: err = %v; want %v containing %q", tc.e, err, tc.wantErr, tc.want)
		}
	}
	// Moving an endpoint to another IP frees the old one.
	moved := ep
	moved.IP = netip.MustParseAddr("10.1.0.3")
	if _, err := s.PutEndpoint(ctx, moved); err != nil {
		t.Fatal(err)
	}
	other := vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c2/eth1", IP: ep.IP, Node: "n1"}
	if _, err := s.PutEndpoint(ctx, other); err != nil {
		t.Fatalf("reuse of freed ip: %v", err)
	}
	if got, err := s.GetEndpoint(ctx, "blue", "c1/eth1"); err != nil || got.MAC.String() != "02:aa:00:00:00:01" || got.IP != moved.IP {
		t.Fatalf("get = %+v, %v", got, err)
	}
	// Subnet and VPC deletion are refused while endpoints exist.
	if err := s.DeleteSubnet(ctx, "blue", "web"); !errors.Is(err, store.ErrInUse) || !strings.Contains(err.Error(), "c1/eth1") {
		t.Fatalf("delete used subnet: %v", err)
	}
	if err := s.DeleteVPC(ctx, "blue"); !errors.Is(err, store.ErrInUse) || !strings.Contains(err.Error(), "web") {
		t.Fatalf("delete used vpc: %v", err)
	}
	for _, id := range []string{"c1/eth1", "c2/eth1", "c1/eth1"} {
		if err := s.DeleteEndpoint(ctx, "blue", id); err != nil {
			t.Fatalf("delete %s: %v", id, err)
		}
	}
	list, _, err := s.ListEndpoints(ctx, "")
	if err != nil || len(list) != 1 || list[0].VPC != "red" {
		t.Fatalf("list all = %+v, %v", list, err)
	}

	// The watch saw every change of blue, in order, none of red.
	want := []string{
		"put c1/eth1 10.1.0.2", "put c1/eth1 10.1.0.3", "put c2/eth1 10.1.0.2",
		"delete c1/eth1 10.1.0.3", "delete c2/eth1 10.1.0.2",
	}
	var seen []string
	for len(seen) < len(want) {
		select {
		case ev := <-events:
			if ev.Type == store.EventError {
				t.Fatal(ev.Err)
			}
			seen = append(seen, fmt.Sprintf("%s %s %s", ev.Type, ev.Endpoint.ID, ev.Endpoint.IP))
		case <-time.After(10 * time.Second):
			t.Fatalf("watch: got %v, want %v", seen, want)
		}
	}
	if !slices.Equal(seen, want) {
		t.Fatalf("watch = %v, want %v", seen, want)
	}
	cancel()
	for ev := range events {
		t.Fatalf("event after cancel: %+v", ev)
	}

	// Now both deletions succeed, and the subnet's blocks go with it.
	if err := s.DeleteSubnet(ctx, "blue", "web"); err != nil {
		t.Fatal(err)
	}
	if b, _ := s.ListBlocks(ctx, "blue", "web"); len(b) != 0 {
		t.Fatalf("blocks left after subnet delete: %+v", b)
	}
	if err := s.DeleteVPC(ctx, "blue"); err != nil {
		t.Fatal(err)
	}
}

// A subnet deleted and recreated: an agent's stale block is refused.
func TestPutEndpointAfterSubnetRecreate(t *testing.T) {
	s, _ := newStore(t)
	mustVPC(t, s, "blue", "10.1.0.0/16")
	mustSubnet(t, s, "blue", "web", "10.1.0.0/24")
	if _, err := s.ClaimBlock(ctx, "blue", "web", "n1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSubnet(ctx, "blue", "web"); err != nil {
		t.Fatal(err)
	}
	mustSubnet(t, s, "blue", "web", "10.1.0.0/24")
	if _, err := s.ClaimBlock(ctx, "blue", "web", "n2"); err != nil {
		t.Fatal(err)
	}
	_, err := s.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c/eth0", IP: netip.MustParseAddr("10.1.0.9"), Node: "n1"})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("put from stale block: %v", err)
	}
}

func TestNodes(t *testing.T) {
	s, _ := newStore(t)
	_, rev, err := s.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := s.WatchNodes(wctx, rev)
	registerNodes(t, s, "n1", "n2.example")
	if err := s.RegisterNode(ctx, vpc.Node{Name: "bad node", UnderlayIP: netip.MustParseAddr("192.0.2.9")}); !errors.Is(err, vpc.ErrInvalid) {
		t.Fatalf("bad node: %v", err)
	}
	if err := s.RegisterNode(ctx, vpc.Node{Name: "n3"}); !errors.Is(err, vpc.ErrInvalid) {
		t.Fatalf("node without ip: %v", err)
	}
	n, err := s.GetNode(ctx, "n2.example")
	if err != nil || n.UnderlayIP != netip.MustParseAddr("192.0.2.2") || n.UnderlayMAC.String() != "02:00:00:00:00:02" {
		t.Fatalf("get = %+v, %v", n, err)
	}
	if err := s.DeleteNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	nodes, _, err := s.ListNodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].Name != "n2.example" {
		t.Fatalf("list = %+v, %v", nodes, err)
	}
	var seen []string
	for len(seen) < 3 {
		select {
		case ev := <-events:
			seen = append(seen, fmt.Sprintf("%s %s %s", ev.Type, ev.Node.Name, ev.Node.UnderlayMAC))
		case <-time.After(10 * time.Second):
			t.Fatalf("watch: %v", seen)
		}
	}
	if want := []string{"put n1 02:00:00:00:00:01", "put n2.example 02:00:00:00:00:02", "delete n1 02:00:00:00:00:01"}; !slices.Equal(seen, want) {
		t.Fatalf("watch = %v, want %v", seen, want)
	}
}

// A watch from a compacted revision reports ErrCompacted (own server: the
// compaction would disturb the other tests).
func TestWatchCompacted(t *testing.T) {
	dir := shortTempDir(t)
	e, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	s, err := etcdstore.New(ctx, e.Endpoints(), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	registerNodes(t, s, "n1", "n2", "n3")
	_, rev, _ := s.ListNodes(ctx)
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	ev, ok := <-s.WatchNodes(ctx, 1)
	if !ok || ev.Type != store.EventError || !errors.Is(ev.Err, store.ErrCompacted) {
		t.Fatalf("event = %+v, %v; want ErrCompacted", ev, ok)
	}
}

func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "genie-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestEmbeddedTCP(t *testing.T) {
	e, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: shortTempDir(t), ClientURL: "http://127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if eps := e.Endpoints(); len(eps) != 1 || !strings.HasPrefix(eps[0], "http://127.0.0.1:") || strings.HasSuffix(eps[0], ":0") {
		t.Fatalf("endpoints = %v", eps)
	}
	s, err := etcdstore.New(ctx, e.Endpoints(), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.CreateVPC(ctx, vpc.VPC{Name: "tcp", CIDR: netip.MustParsePrefix("10.0.0.0/8")}); err != nil || v.VNI != 1 {
		t.Fatalf("create = %+v, %v", v, err)
	}
}

func TestEmbeddedRestartKeepsData(t *testing.T) {
	dir := shortTempDir(t)
	e, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s, err := etcdstore.New(ctx, e.Endpoints(), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustVPC(t, s, "keep", "10.0.0.0/8")
	s.Close()
	e.Close()
	e, err = etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	s, err = etcdstore.New(ctx, e.Endpoints(), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.GetVPC(ctx, "keep"); err != nil || v.VNI != 1 {
		t.Fatalf("after restart = %+v, %v", v, err)
	}
}

func TestNewUnreachable(t *testing.T) {
	_, err := etcdstore.New(ctx, []string{"unix:///nonexistent/genie-etcd.sock"}, etcdstore.Options{DialTimeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "connect to etcd unix:///nonexistent/genie-etcd.sock") {
		t.Fatalf("err = %v", err)
	}
}

func TestStartEmbeddedBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  etcdstore.EmbeddedConfig
		want string
	}{
		{etcdstore.EmbeddedConfig{}, "data dir is empty"},
		{etcdstore.EmbeddedConfig{DataDir: shortTempDir(t), ClientURL: "ftp://x:1"}, "scheme must be unix or http"},
		{etcdstore.EmbeddedConfig{DataDir: shortTempDir(t), ClientURL: "unix://rel/x.sock"}, "must be absolute"},
		{etcdstore.EmbeddedConfig{DataDir: shortTempDir(t), ClientURL: "unix:///" + strings.Repeat("d", 120)}, "longer than 107"},
	} {
		if _, err := etcdstore.StartEmbedded(ctx, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
