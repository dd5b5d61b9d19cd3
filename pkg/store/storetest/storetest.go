// Package storetest is the conformance suite of store.Store: the
// behaviours every backend must have, run against a real backend (etcd,
// kube-apiserver) by that backend's tests.
//
// # Design notes
//
// The suite tests the contract of package store, not an implementation:
// the sentinels and the object named in each error, lowest-free VNIs,
// refusal of overlapping subnets, one endpoint per IP, one owner per
// block, deletion refused while in use, and list-then-watch without gaps.
// Every uniqueness rule is also exercised concurrently, from separate
// clients (separate connections), because that is where a backend that
// checks-then-writes without atomicity fails. The concurrency tests have
// no timing assertions; they check invariants of the outcome.
//
// Backends differ in how a change is seen by a watcher where the contract
// leaves room: an endpoint moving to another IP is one put in etcd and a
// delete plus a put in Kubernetes (the object is named by its IP). The
// suite checks what a consumer relies on instead: events in revision
// order, only of the watched VPC, and the state folded from them never
// holds one IP twice and ends equal to a fresh list.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// Backend prepares an empty store namespace for one test (a key prefix, a
// scope) and returns a function that opens a new client of it, closed at
// the end of the test. Each call must return a separate client, so that
// concurrent tests really race through the backend.
type Backend func(t *testing.T) (open func() store.Store)

// EventTimeout bounds the wait for a watch event.
var EventTimeout = 20 * time.Second

// Run runs the whole suite against b, each test as a parallel subtest.
func Run(t *testing.T, b Backend) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T, func() store.Store)
	}{
		{"VPCLifecycle", testVPCLifecycle},
		{"CreateVPCInvalid", testCreateVPCInvalid},
		{"CreateVPCConcurrentVNIs", testCreateVPCConcurrentVNIs},
		{"SubnetValidation", testSubnetValidation},
		{"CreateSubnetConcurrentOverlap", testCreateSubnetConcurrentOverlap},
		{"DeleteInUse", testDeleteInUse},
		{"Blocks", testBlocks},
		{"BlocksConcurrent", testBlocksConcurrent},
		{"Endpoints", testEndpoints},
		{"EndpointIPConcurrent", testEndpointIPConcurrent},
		{"DeleteSubnetRacesPutEndpoint", testDeleteSubnetRacesPutEndpoint},
		{"DeleteSubnetRacesClaimBlock", testDeleteSubnetRacesClaimBlock},
		{"PutEndpointAfterSubnetRecreate", testPutEndpointAfterSubnetRecreate},
		{"Nodes", testNodes},
		{"WatchResume", testWatchResume},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(t, b(t))
		})
	}
}

// --- helpers ---

// MustVPC creates a VPC or fails the test.
func MustVPC(t testing.TB, s store.Store, name, cidr string) vpc.VPC {
	t.Helper()
	v, err := s.CreateVPC(t.Context(), vpc.VPC{Name: name, CIDR: netip.MustParsePrefix(cidr)})
	if err != nil {
		t.Fatalf("create vpc %s: %v", name, err)
	}
	return v
}

// MustSubnet creates a subnet with defaults or fails the test.
func MustSubnet(t testing.TB, s store.Store, v, name, cidr string) vpc.Subnet {
	t.Helper()
	sn, err := s.CreateSubnet(t.Context(), vpc.Subnet{VPC: v, Name: name, CIDR: netip.MustParsePrefix(cidr)})
	if err != nil {
		t.Fatalf("create subnet %s/%s: %v", v, name, err)
	}
	return sn
}

// RegisterNodes registers nodes with underlay 192.0.2.<i+1>.
func RegisterNodes(t testing.TB, s store.Store, names ...string) {
	t.Helper()
	for i, n := range names {
		err := s.RegisterNode(t.Context(), vpc.Node{Name: n, UnderlayIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}),
			UnderlayMAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(i + 1)}})
		if err != nil {
			t.Fatalf("register node %s: %v", n, err)
		}
	}
}

func wantErr(t *testing.T, what string, err, sentinel error, contains string) {
	t.Helper()
	if !errors.Is(err, sentinel) || !strings.Contains(fmt.Sprint(err), contains) {
		t.Errorf("%s: err = %v; want %v containing %q", what, err, sentinel, contains)
	}
}

// --- VPCs ---

func testVPCLifecycle(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	a := MustVPC(t, s, "a", "10.0.0.0/16")
	b := MustVPC(t, s, "b", "10.0.0.0/16") // same CIDR in another VPC: allowed
	c := MustVPC(t, s, "c", "192.168.0.0/24")
	if a.VNI != 1 || b.VNI != 2 || c.VNI != 3 {
		t.Fatalf("vnis = %d %d %d, want 1 2 3", a.VNI, b.VNI, c.VNI)
	}
	_, err := s.CreateVPC(ctx, vpc.VPC{Name: "a", CIDR: netip.MustParsePrefix("10.9.0.0/16")})
	wantErr(t, "duplicate vpc", err, store.ErrExists, `vpc "a"`)
	if got, err := s.GetVPC(ctx, "b"); err != nil || got != b {
		t.Fatalf("get b = %+v, %v; want %+v", got, err, b)
	}
	_, err = s.GetVPC(ctx, "nope")
	wantErr(t, "get missing", err, store.ErrNotFound, `vpc "nope"`)
	if err := s.DeleteVPC(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete twice", s.DeleteVPC(ctx, "b"), store.ErrNotFound, `vpc "b"`)
	// The lowest free VNI is reused.
	if d := MustVPC(t, s, "d", "10.0.0.0/8"); d.VNI != 2 {
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
	// The optional fields round-trip.
	q, err := s.CreateVPC(ctx, vpc.VPC{Name: "q", CIDR: netip.MustParsePrefix("10.5.0.0/16"), MTU: 1400, QoSClass: "low"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetVPC(ctx, "q"); err != nil || got != q || got.QoSClass != "low" || got.MTU != 1400 {
		t.Fatalf("get q = %+v, %v; want %+v with mtu 1400 and qos class low", got, err, q)
	}
}

func testCreateVPCInvalid(t *testing.T, open func() store.Store) {
	s := open()
	for _, tc := range []struct{ name, cidr, want string }{
		{"Blue", "10.0.0.0/16", "not a DNS-1123 label"},
		{"", "10.0.0.0/16", "name is empty"},
		{"blue", "10.0.0.1/16", "host bits set (did you mean 10.0.0.0/16?)"},
		{"blue", "fd00::/64", "is not IPv4"},
		{strings.Repeat("x", 64), "10.0.0.0/16", "not a DNS-1123 label"},
	} {
		p, _ := netip.ParsePrefix(tc.cidr)
		_, err := s.CreateVPC(t.Context(), vpc.VPC{Name: tc.name, CIDR: p})
		wantErr(t, fmt.Sprintf("create vpc %q %s", tc.name, tc.cidr), err, vpc.ErrInvalid, tc.want)
	}
	_, err := s.CreateVPC(t.Context(), vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.0.0.0/16"), QoSClass: "gold"})
	wantErr(t, "create vpc with qos class gold", err, vpc.ErrInvalid, `qos class "gold": want high, normal or low`)
	if l, _ := s.ListVPCs(t.Context()); len(l) != 0 {
		t.Fatalf("invalid vpcs were stored: %+v", l)
	}
}

// Concurrent creators on separate clients never share a VNI, the VNIs are
// exactly 1..n (lowest free, never random), and of racing creates of one
// name exactly one wins.
func testCreateVPCConcurrentVNIs(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	const clients, perClient = 4, 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	var vnis []uint32
	wins := 0
	for c := range clients {
		s := open()
		wg.Go(func() {
			for i := range perClient {
				v, err := s.CreateVPC(ctx, vpc.VPC{Name: fmt.Sprintf("v%d-%d", c, i), CIDR: netip.MustParsePrefix("10.0.0.0/16")})
				if err != nil {
					t.Error(err)
					continue
				}
				mu.Lock()
				vnis = append(vnis, v.VNI)
				mu.Unlock()
			}
		})
		s2 := open()
		wg.Go(func() {
			_, err := s2.CreateVPC(ctx, vpc.VPC{Name: "same", CIDR: netip.MustParsePrefix("10.0.0.0/16")})
			switch {
			case err == nil:
				mu.Lock()
				wins++
				mu.Unlock()
			case !errors.Is(err, store.ErrExists):
				t.Errorf("racing create of one name: %v", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d concurrent creates of one name succeeded, want 1", wins)
	}
	slices.Sort(vnis)
	if len(vnis) != clients*perClient || len(slices.Compact(slices.Clone(vnis))) != len(vnis) {
		t.Fatalf("vnis = %v: want %d distinct", vnis, clients*perClient)
	}
	all, err := open().ListVPCs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]bool{}
	for _, v := range all {
		if seen[v.VNI] {
			t.Fatalf("vni %d listed twice", v.VNI)
		}
		seen[v.VNI] = true
	}
	for i := uint32(1); i <= uint32(len(all)); i++ {
		if !seen[i] {
			t.Fatalf("vni %d unused among %d vpcs: allocation is not lowest-free", i, len(all))
		}
	}
}

// --- subnets ---

func testSubnetValidation(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	MustVPC(t, s, "blue", "10.1.0.0/16")
	MustVPC(t, s, "red", "10.1.0.0/16")
	MustSubnet(t, s, "blue", "db", "10.1.0.128/25")
	MustSubnet(t, s, "red", "web", "10.1.0.0/24") // same CIDR in another VPC

	for _, tc := range []struct {
		sn       vpc.Subnet
		sentinel error
		want     string
	}{
		{vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24")}, store.ErrConflict,
			`subnet "blue/web" 10.1.0.0/24 overlaps subnet "blue/db" 10.1.0.128/25`},
		{vpc.Subnet{VPC: "blue", Name: "in", CIDR: netip.MustParsePrefix("10.1.0.192/26")}, store.ErrConflict,
			`overlaps subnet "blue/db" 10.1.0.128/25`},
		{vpc.Subnet{VPC: "blue", Name: "db", CIDR: netip.MustParsePrefix("10.1.9.0/24")}, store.ErrExists, `subnet "blue/db"`},
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
		wantErr(t, "create "+tc.sn.String(), err, tc.sentinel, tc.want)
	}
	_, err := s.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "db", CIDR: netip.MustParsePrefix("10.1.9.0/24")})
	wantErr(t, "create duplicate subnet", err, store.ErrExists, "already exists")

	// Defaults: gateway = first host; blocks of at most /26, at least 16
	// per subnet, at most /30.
	web := MustSubnet(t, s, "blue", "web", "10.1.0.0/25")
	if web.Gateway != netip.MustParseAddr("10.1.0.1") || web.BlockPrefixLen != 29 {
		t.Fatalf("defaults: %+v", web)
	}
	if big := MustSubnet(t, s, "blue", "big", "10.1.16.0/20"); big.BlockPrefixLen != 26 {
		t.Fatalf("big subnet block = /%d, want /26", big.BlockPrefixLen)
	}
	if small := MustSubnet(t, s, "blue", "small", "10.1.1.0/28"); small.BlockPrefixLen != 30 {
		t.Fatalf("small subnet block = /%d, want /30", small.BlockPrefixLen)
	}
	if got, err := s.GetSubnet(ctx, "blue", "web"); err != nil || got != web {
		t.Fatalf("get = %+v, %v; want %+v", got, err, web)
	}
	_, err = s.GetSubnet(ctx, "blue", "nope")
	wantErr(t, "get missing subnet", err, store.ErrNotFound, `subnet "blue/nope"`)
	l, err := s.ListSubnets(ctx, "blue")
	if err != nil || len(l) != 4 || l[0].Name != "big" || l[1].Name != "db" || l[2].Name != "small" || l[3].Name != "web" {
		t.Fatalf("list blue = %+v, %v", l, err)
	}
	if all, err := s.ListSubnets(ctx, ""); err != nil || len(all) != 5 {
		t.Fatalf("list all = %+v, %v", all, err)
	}
}

// Concurrent creates of overlapping subnets from separate clients: the
// winners never overlap, whatever the interleaving, and someone wins.
func testCreateSubnetConcurrentOverlap(t *testing.T, open func() store.Store) {
	s := open()
	MustVPC(t, s, "blue", "10.0.0.0/8")
	cidrs := []string{"10.%d.0.0/16", "10.%d.0.0/24", "10.%d.1.0/24", "10.%d.128.0/17", "10.%d.0.0/20", "10.%d.255.0/24"}
	clients := make([]store.Store, len(cidrs))
	for i := range clients {
		clients[i] = open()
	}
	for round := range 4 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var won []netip.Prefix
		for i, c := range cidrs {
			p := netip.MustParsePrefix(fmt.Sprintf(c, round))
			wg.Go(func() {
				_, err := clients[i].CreateSubnet(t.Context(), vpc.Subnet{VPC: "blue", Name: fmt.Sprintf("r%d-s%d", round, i), CIDR: p})
				switch {
				case err == nil:
					mu.Lock()
					won = append(won, p)
					mu.Unlock()
				case !errors.Is(err, store.ErrConflict):
					t.Errorf("create %s: %v", p, err)
				}
			})
		}
		wg.Wait()
		for i := range won {
			for j := range i {
				if won[i].Overlaps(won[j]) {
					t.Fatalf("round %d: overlapping subnets %s and %s both created", round, won[i], won[j])
				}
			}
		}
		if len(won) == 0 {
			t.Fatalf("round %d: no subnet created", round)
		}
		l, err := s.ListSubnets(t.Context(), "blue")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, sn := range l {
			if strings.HasPrefix(sn.Name, fmt.Sprintf("r%d-", round)) {
				n++
			}
		}
		if n != len(won) {
			t.Fatalf("round %d: %d subnets listed, %d creates succeeded", round, n, len(won))
		}
	}
}

func testDeleteInUse(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	MustVPC(t, s, "blue", "10.1.0.0/16")
	MustSubnet(t, s, "blue", "web", "10.1.0.0/24")
	MustSubnet(t, s, "blue", "db", "10.1.1.0/24")
	wantErr(t, "delete vpc with subnets", s.DeleteVPC(ctx, "blue"), store.ErrInUse, "db, web")
	if _, err := s.ClaimBlock(ctx, "blue", "web", "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c1/eth0", IP: netip.MustParseAddr("10.1.0.9"), Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete subnet with endpoint", s.DeleteSubnet(ctx, "blue", "web"), store.ErrInUse, "c1/eth0")
	// The refused delete left the subnet usable.
	if _, err := s.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c2/eth0", IP: netip.MustParseAddr("10.1.0.10"), Node: "n1"}); err != nil {
		t.Fatalf("put after refused delete: %v", err)
	}
	if err := s.DeleteSubnet(ctx, "blue", "db"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete missing subnet", s.DeleteSubnet(ctx, "blue", "db"), store.ErrNotFound, `subnet "blue/db"`)
	for _, id := range []string{"c1/eth0", "c2/eth0"} {
		if err := s.DeleteEndpoint(ctx, "blue", id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteSubnet(ctx, "blue", "web"); err != nil {
		t.Fatal(err)
	}
	if b, err := s.ListBlocks(ctx, "blue", ""); err != nil || len(b) != 0 {
		t.Fatalf("blocks left after subnet delete: %+v, %v", b, err)
	}
	if err := s.DeleteVPC(ctx, "blue"); err != nil {
		t.Fatal(err)
	}
}

// --- blocks ---

func testBlocks(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	MustVPC(t, s, "blue", "10.1.0.0/16")
	if _, err := s.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24"), BlockPrefixLen: 26}); err != nil {
		t.Fatal(err) // four /26 blocks
	}
	b1, err := s.ClaimBlock(ctx, "blue", "web", "n1")
	if err != nil || b1.CIDR != netip.MustParsePrefix("10.1.0.0/26") || b1.Node != "n1" || b1.VPC != "blue" || b1.Subnet != "web" {
		t.Fatalf("claim 1 = %+v, %v", b1, err)
	}
	b, err := s.ClaimBlockContaining(ctx, "blue", "web", "n2", netip.MustParseAddr("10.1.0.200"))
	if err != nil || b.CIDR != netip.MustParsePrefix("10.1.0.192/26") {
		t.Fatalf("claim containing = %+v, %v", b, err)
	}
	_, err = s.ClaimBlockContaining(ctx, "blue", "web", "n2", netip.MustParseAddr("10.1.0.5"))
	wantErr(t, "claim held block", err, store.ErrConflict, `block 10.1.0.0/26 containing 10.1.0.5 is held by node "n1"`)
	_, err = s.ClaimBlockContaining(ctx, "blue", "web", "n2", netip.MustParseAddr("10.1.5.5"))
	wantErr(t, "claim outside subnet", err, vpc.ErrInvalid, "outside")
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
	wantErr(t, "full", err, store.ErrSubnetFull, `all 4 blocks of /26 in subnet "blue/web" 10.1.0.0/24 are claimed`)
	wantErr(t, "release someone else's block", s.ReleaseBlock(ctx, "blue", "web", b1.CIDR, "n2"), store.ErrConflict, `held by node "n1"`)
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
	_, err = s.ClaimBlock(ctx, "blue", "nope", "n1")
	wantErr(t, "claim in missing subnet", err, store.ErrNotFound, `subnet "blue/nope"`)

	// A /30 subnet is a single block with one assignable address.
	MustSubnet(t, s, "blue", "p2p", "10.1.1.0/30")
	if b, err := s.ClaimBlock(ctx, "blue", "p2p", "n1"); err != nil || b.CIDR != netip.MustParsePrefix("10.1.1.0/30") {
		t.Fatalf("claim /30 = %+v, %v", b, err)
	}
	// /32 blocks of a /29: the network, gateway and broadcast blocks are
	// skipped.
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
	if all, err := s.ListBlocks(ctx, "", ""); err != nil || len(all) != 4+1+5 {
		t.Fatalf("list all blocks = %d, %v", len(all), err)
	}
	if vb, err := s.ListBlocks(ctx, "blue", ""); err != nil || len(vb) != 10 {
		t.Fatalf("list blocks of vpc = %d, %v", len(vb), err)
	}
}

// Nodes claiming concurrently through separate clients never share a
// block, and together claim every block exactly once.
func testBlocksConcurrent(t *testing.T, open func() store.Store) {
	s := open()
	MustVPC(t, s, "blue", "10.1.0.0/16")
	MustSubnet(t, s, "blue", "race", "10.1.64.0/21") // 32 blocks of /26
	var wg sync.WaitGroup
	var mu sync.Mutex
	owner := map[netip.Prefix]string{}
	for n := range 5 {
		st := open()
		node := fmt.Sprintf("node-%d", n)
		wg.Go(func() {
			for {
				b, err := st.ClaimBlock(t.Context(), "blue", "race", node)
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
	if len(owner) != 32 {
		t.Fatalf("%d blocks claimed, want 32", len(owner))
	}
	l, err := s.ListBlocks(t.Context(), "blue", "race")
	if err != nil || len(l) != 32 {
		t.Fatalf("list = %d, %v", len(l), err)
	}
	for _, b := range l {
		if owner[b.CIDR] != b.Node {
			t.Errorf("block %s listed for %s, claimed by %s", b.CIDR, b.Node, owner[b.CIDR])
		}
	}
}

// --- endpoints ---

// fold applies endpoint events to a state keyed by ID and fails if two
// IDs ever hold one IP.
type fold struct {
	byID map[string]netip.Addr
	puts []string
	dels []string
	rev  int64
}

func (f *fold) apply(t *testing.T, vpcName string, ev store.EndpointEvent) {
	t.Helper()
	if ev.Type == store.EventError {
		t.Fatalf("watch error: %v", ev.Err)
	}
	if ev.Revision <= f.rev {
		t.Fatalf("event revision %d after %d", ev.Revision, f.rev)
	}
	f.rev = ev.Revision
	if vpcName != "" && ev.Endpoint.VPC != vpcName {
		t.Fatalf("watch of vpc %q got an event of vpc %q", vpcName, ev.Endpoint.VPC)
	}
	switch ev.Type {
	case store.EventPut:
		for id, ip := range f.byID {
			if ip == ev.Endpoint.IP && id != ev.Endpoint.ID {
				t.Fatalf("watch: %s put at %s while %s holds it", ev.Endpoint.ID, ip, id)
			}
		}
		f.byID[ev.Endpoint.ID] = ev.Endpoint.IP
		f.puts = append(f.puts, ev.Endpoint.ID+" "+ev.Endpoint.IP.String())
	case store.EventDelete:
		if ev.Endpoint.ID == "" {
			t.Fatalf("delete event without id: %+v", ev)
		}
		delete(f.byID, ev.Endpoint.ID)
		f.dels = append(f.dels, ev.Endpoint.ID)
	}
}

func testEndpoints(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	blue := MustVPC(t, s, "blue", "10.1.0.0/16")
	MustVPC(t, s, "red", "10.1.0.0/16")
	MustSubnet(t, s, "blue", "web", "10.1.0.0/24")
	MustSubnet(t, s, "red", "web", "10.1.0.0/24")
	RegisterNodes(t, s, "n1", "n2")
	if _, err := s.ClaimBlock(ctx, "blue", "web", "n1"); err != nil { // 10.1.0.0/28
		t.Fatal(err)
	}
	if _, err := s.ClaimBlock(ctx, "red", "web", "n2"); err != nil { // red 10.1.0.0/28
		t.Fatal(err)
	}
	_, rev0, err := s.ListEndpoints(ctx, "blue")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := open().WatchEndpoints(wctx, "blue", rev0)

	ep := vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c1/eth1", PodNamespace: "default", PodName: "a", Interface: "eth1",
		IP: netip.MustParseAddr("10.1.0.2"), MAC: net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}, Node: "n1",
		QoS: &vpc.EndpointQoS{Class: "high", EgressRate: 10_000_000, IngressRate: 20_000_000}}
	got, err := s.PutEndpoint(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	if got.VNI != blue.VNI {
		t.Fatalf("vni = %d, want %d", got.VNI, blue.VNI)
	}
	if l, _, err := s.ListEndpoints(ctx, "blue"); err != nil || len(l) != 1 || l[0].QoS == nil || *l[0].QoS != *ep.QoS {
		t.Fatalf("listed %+v, %v; want the endpoint with its qos %+v", l, err, *ep.QoS)
	}
	bad := ep
	bad.ID, bad.IP, bad.QoS = "c3/eth1", netip.MustParseAddr("10.1.0.4"), &vpc.EndpointQoS{Class: "gold"}
	_, err = s.PutEndpoint(ctx, bad)
	wantErr(t, "endpoint with qos class gold", err, vpc.ErrInvalid, `qos class "gold"`)
	// Putting the same endpoint again is a no-op success.
	if _, err := s.PutEndpoint(ctx, ep); err != nil {
		t.Fatalf("put again: %v", err)
	}
	// Same IP in another VPC is fine (own block there).
	if _, err := s.PutEndpoint(ctx, vpc.Endpoint{VPC: "red", Subnet: "web", ID: "c9/eth1", IP: ep.IP, Node: "n2"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		e        vpc.Endpoint
		sentinel error
		want     string
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
		_, err := s.PutEndpoint(ctx, tc.e)
		wantErr(t, fmt.Sprintf("put %s %s", tc.e.Key(), tc.e.IP), err, tc.sentinel, tc.want)
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
	if got, err := s.GetEndpoint(ctx, "blue", "c1/eth1"); err != nil || got.MAC.String() != "02:aa:00:00:00:01" || got.IP != moved.IP ||
		got.PodName != "a" || got.Interface != "eth1" || got.VNI != blue.VNI || got.Node != "n1" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	_, err = s.GetEndpoint(ctx, "blue", "nope/eth0")
	wantErr(t, "get missing endpoint", err, store.ErrNotFound, `endpoint "blue/nope/eth0"`)
	for _, id := range []string{"c1/eth1", "c2/eth1", "c1/eth1"} {
		if err := s.DeleteEndpoint(ctx, "blue", id); err != nil {
			t.Fatalf("delete %s: %v", id, err)
		}
	}
	list, _, err := s.ListEndpoints(ctx, "")
	if err != nil || len(list) != 1 || list[0].VPC != "red" || list[0].ID != "c9/eth1" {
		t.Fatalf("list all = %+v, %v", list, err)
	}
	// The freed address can be used again.
	again := vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c3/eth1", IP: moved.IP, Node: "n1"}
	if _, err := s.PutEndpoint(ctx, again); err != nil {
		t.Fatalf("reuse after delete: %v", err)
	}
	if err := s.DeleteEndpoint(ctx, "blue", "c3/eth1"); err != nil {
		t.Fatal(err)
	}

	// The watch saw every change of blue, in order, none of red.
	f := &fold{byID: map[string]netip.Addr{}}
	wantPuts := []string{"c1/eth1 10.1.0.2", "c1/eth1 10.1.0.3", "c2/eth1 10.1.0.2", "c3/eth1 10.1.0.3"}
	deadline := time.After(EventTimeout)
	// A put without change may or may not produce an event: compare the
	// puts without consecutive repeats.
	for len(slices.Compact(slices.Clone(f.puts))) < len(wantPuts) || len(f.byID) > 0 {
		select {
		case ev := <-events:
			f.apply(t, "blue", ev)
		case <-deadline:
			t.Fatalf("watch: puts %v, state %v; want puts %v and an empty state", f.puts, f.byID, wantPuts)
		}
	}
	if !slices.Equal(slices.Compact(f.puts), wantPuts) {
		t.Fatalf("watch puts = %v, want %v", f.puts, wantPuts)
	}
	cancel()
	for ev := range events {
		if ev.Type == store.EventError {
			t.Fatalf("event after cancel: %+v", ev)
		}
	}
}

// Endpoints with one IP put concurrently by separate clients: exactly one
// wins, the others get ErrConflict naming the winner, and only the winner
// is stored.
func testEndpointIPConcurrent(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	MustVPC(t, s, "blue", "10.1.0.0/16")
	MustSubnet(t, s, "blue", "web", "10.1.0.0/24")
	if _, err := s.ClaimBlock(ctx, "blue", "web", "n1"); err != nil {
		t.Fatal(err)
	}
	const racers = 5
	clients := make([]store.Store, racers)
	for i := range clients {
		clients[i] = open()
	}
	for round := range 4 {
		ip := netip.AddrFrom4([4]byte{10, 1, 0, byte(10 + round)})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var winners []string
		for i := range racers {
			id := fmt.Sprintf("r%d-c%d/eth0", round, i)
			wg.Go(func() {
				_, err := clients[i].PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: id, IP: ip, Node: "n1"})
				switch {
				case err == nil:
					mu.Lock()
					winners = append(winners, id)
					mu.Unlock()
				case errors.Is(err, store.ErrConflict):
					if !strings.Contains(err.Error(), "is held by endpoint") && !strings.Contains(err.Error(), "conflicting concurrent") {
						t.Errorf("put %s: conflict without the holder: %v", id, err)
					}
				default:
					t.Errorf("put %s: %v", id, err)
				}
			})
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: %d puts of %s succeeded (%v), want 1", round, len(winners), ip, winners)
		}
		for i := range racers {
			id := fmt.Sprintf("r%d-c%d/eth0", round, i)
			e, err := s.GetEndpoint(ctx, "blue", id)
			switch {
			case id == winners[0] && (err != nil || e.IP != ip):
				t.Fatalf("winner %s: get = %+v, %v", id, e, err)
			case id != winners[0] && !errors.Is(err, store.ErrNotFound):
				t.Fatalf("loser %s: get = %+v, %v; want ErrNotFound", id, e, err)
			}
			// A loser's delete must not remove the winner.
			if id != winners[0] {
				if err := s.DeleteEndpoint(ctx, "blue", id); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	l, _, err := s.ListEndpoints(ctx, "blue")
	if err != nil || len(l) != 4 {
		t.Fatalf("list = %+v, %v; want the 4 winners", l, err)
	}
}

// DeleteSubnet racing PutEndpoint: whatever wins, no endpoint is left in
// a subnet that no longer exists.
func testDeleteSubnetRacesPutEndpoint(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s, s1, s2 := open(), open(), open()
	MustVPC(t, s, "blue", "10.1.0.0/16")
	for round := range 6 {
		name := fmt.Sprintf("web%d", round)
		sn := MustSubnet(t, s, "blue", name, fmt.Sprintf("10.1.%d.0/24", round))
		if _, err := s.ClaimBlock(ctx, "blue", name, "n1"); err != nil {
			t.Fatal(err)
		}
		var putErr, delErr error
		var wg sync.WaitGroup
		wg.Go(func() {
			_, putErr = s1.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: name, ID: fmt.Sprintf("c%d/eth0", round),
				IP: sn.CIDR.Addr().Next().Next(), Node: "n1"})
		})
		wg.Go(func() { delErr = s2.DeleteSubnet(ctx, "blue", name) })
		wg.Wait()
		if putErr != nil && !errors.Is(putErr, store.ErrConflict) && !errors.Is(putErr, store.ErrNotFound) {
			t.Fatalf("round %d: put: %v", round, putErr)
		}
		if delErr != nil && !errors.Is(delErr, store.ErrInUse) {
			t.Fatalf("round %d: delete: %v", round, delErr)
		}
		_, gerr := s.GetSubnet(ctx, "blue", name)
		eps, _, err := s.ListEndpoints(ctx, "blue")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range eps {
			if e.Subnet == name {
				n++
			}
		}
		switch {
		case errors.Is(gerr, store.ErrNotFound) && n > 0:
			t.Fatalf("round %d: subnet deleted (put err %v) but %d endpoint(s) left in it", round, putErr, n)
		case gerr == nil && delErr == nil:
			t.Fatalf("round %d: delete succeeded but the subnet is still there", round)
		case putErr == nil && delErr == nil:
			t.Fatalf("round %d: both the put and the delete succeeded", round)
		}
	}
}

// DeleteSubnet racing ClaimBlock: a deleted subnet leaves no block.
func testDeleteSubnetRacesClaimBlock(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s, s1, s2 := open(), open(), open()
	MustVPC(t, s, "blue", "10.1.0.0/16")
	for round := range 6 {
		name := fmt.Sprintf("web%d", round)
		MustSubnet(t, s, "blue", name, fmt.Sprintf("10.1.%d.0/24", round))
		var claimErr, delErr error
		var wg sync.WaitGroup
		wg.Go(func() { _, claimErr = s1.ClaimBlock(ctx, "blue", name, "n1") })
		wg.Go(func() { delErr = s2.DeleteSubnet(ctx, "blue", name) })
		wg.Wait()
		if claimErr != nil && !errors.Is(claimErr, store.ErrNotFound) && !errors.Is(claimErr, store.ErrConflict) {
			t.Fatalf("round %d: claim: %v", round, claimErr)
		}
		if delErr != nil {
			t.Fatalf("round %d: delete: %v", round, delErr)
		}
		if b, err := s.ListBlocks(ctx, "blue", name); err != nil || len(b) != 0 {
			t.Fatalf("round %d: blocks of the deleted subnet: %+v, %v (claim err %v)", round, b, err, claimErr)
		}
	}
}

// A subnet deleted and recreated: an agent's stale block is refused.
func testPutEndpointAfterSubnetRecreate(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	MustVPC(t, s, "blue", "10.1.0.0/16")
	MustSubnet(t, s, "blue", "web", "10.1.0.0/24")
	if _, err := s.ClaimBlock(ctx, "blue", "web", "n1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSubnet(ctx, "blue", "web"); err != nil {
		t.Fatal(err)
	}
	MustSubnet(t, s, "blue", "web", "10.1.0.0/24")
	_, err := s.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c/eth0", IP: netip.MustParseAddr("10.1.0.9"), Node: "n1"})
	wantErr(t, "put from a block of the deleted subnet", err, store.ErrConflict, "not claimed by node")
	if _, err := s.ClaimBlock(ctx, "blue", "web", "n2"); err != nil {
		t.Fatal(err)
	}
	_, err = s.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c/eth0", IP: netip.MustParseAddr("10.1.0.9"), Node: "n1"})
	wantErr(t, "put from a stale block", err, store.ErrConflict, `held by node "n2"`)
}

// --- nodes and watches ---

func testNodes(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	_, rev, err := s.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := open().WatchNodes(wctx, rev)
	RegisterNodes(t, s, "n1", "n2.example")
	err = s.RegisterNode(ctx, vpc.Node{Name: "bad node", UnderlayIP: netip.MustParseAddr("192.0.2.9")})
	wantErr(t, "bad node", err, vpc.ErrInvalid, "DNS-1123")
	wantErr(t, "node without ip", s.RegisterNode(ctx, vpc.Node{Name: "n3"}), vpc.ErrInvalid, "underlay ip")
	n, err := s.GetNode(ctx, "n2.example")
	if err != nil || n.UnderlayIP != netip.MustParseAddr("192.0.2.2") || n.UnderlayMAC.String() != "02:00:00:00:00:02" {
		t.Fatalf("get = %+v, %v", n, err)
	}
	_, err = s.GetNode(ctx, "n9")
	wantErr(t, "get missing node", err, store.ErrNotFound, `node "n9"`)
	if err := s.DeleteNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteNode(ctx, "n1"); err != nil {
		t.Fatalf("delete twice: %v", err)
	}
	nodes, _, err := s.ListNodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].Name != "n2.example" {
		t.Fatalf("list = %+v, %v", nodes, err)
	}
	var seen []string
	deadline := time.After(EventTimeout)
	for !slices.Contains(seen, "delete n1") {
		select {
		case ev := <-events:
			if ev.Type == store.EventError {
				t.Fatal(ev.Err)
			}
			seen = append(seen, fmt.Sprintf("%s %s", ev.Type, ev.Node.Name))
		case <-deadline:
			t.Fatalf("watch: %v", seen)
		}
	}
	if want := []string{"put n1", "put n2.example", "delete n1"}; !slices.Equal(seen, want) {
		t.Fatalf("watch = %v, want %v", seen, want)
	}
	// Registering again updates the node.
	moved := vpc.Node{Name: "n2.example", UnderlayIP: netip.MustParseAddr("192.0.2.77"), Uplink: "eth9"}
	if err := s.RegisterNode(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if n, err := s.GetNode(ctx, "n2.example"); err != nil || n.UnderlayIP != moved.UnderlayIP || n.Uplink != "eth9" || len(n.UnderlayMAC) != 0 {
		t.Fatalf("get after update = %+v, %v", n, err)
	}
	select {
	case ev := <-events:
		if ev.Type != store.EventPut || ev.Node.UnderlayIP != moved.UnderlayIP {
			t.Fatalf("event of the update = %+v", ev)
		}
	case <-time.After(EventTimeout):
		t.Fatal("no event for the update")
	}
}

// A watch resumed from the revision of the last event seen gets exactly
// the changes made since, none twice.
func testWatchResume(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	_, rev, err := s.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next := func(events <-chan store.NodeEvent) store.NodeEvent {
		t.Helper()
		select {
		case ev := <-events:
			if ev.Type == store.EventError {
				t.Fatal(ev.Err)
			}
			return ev
		case <-time.After(EventTimeout):
			t.Fatal("no watch event")
		}
		return store.NodeEvent{}
	}
	w1, stop1 := context.WithCancel(ctx)
	events := s.WatchNodes(w1, rev)
	RegisterNodes(t, s, "a", "b")
	if ev := next(events); ev.Type != store.EventPut || ev.Node.Name != "a" {
		t.Fatalf("first event = %+v", ev)
	}
	last := next(events)
	if last.Type != store.EventPut || last.Node.Name != "b" {
		t.Fatalf("second event = %+v", last)
	}
	stop1()
	for range events {
	}
	RegisterNodes(t, s, "c")
	if err := s.DeleteNode(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	w2, stop2 := context.WithCancel(ctx)
	defer stop2()
	events = open().WatchNodes(w2, last.Revision)
	if ev := next(events); ev.Type != store.EventPut || ev.Node.Name != "c" || ev.Revision <= last.Revision {
		t.Fatalf("first resumed event = %+v (resumed after %d)", ev, last.Revision)
	}
	if ev := next(events); ev.Type != store.EventDelete || ev.Node.Name != "a" {
		t.Fatalf("second resumed event = %+v", ev)
	}
	// A list-then-watch from the list's revision starts after the list.
	_, rev, err = s.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w3, stop3 := context.WithCancel(ctx)
	defer stop3()
	events = s.WatchNodes(w3, rev)
	RegisterNodes(t, s, "d")
	if ev := next(events); ev.Type != store.EventPut || ev.Node.Name != "d" {
		t.Fatalf("event after list = %+v", ev)
	}
}
