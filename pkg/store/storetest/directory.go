package storetest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/directory"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// RunDirectory runs the conformance suite of store.DirectorySource (the
// endpoint directory's view of a store, laid out by shard) against b,
// whose stores must implement it. What it checks is what a directory
// holder relies on: a listing of some shards returns exactly their
// records, endpoints of the same address in two VPCs are two records, a
// watch of some shards delivers only their changes, every change after
// the start revision (create, move to another address, delete), each
// record's version grows with every change and equals what
// DirectoryRecord reports, and a watch resumed from an event's Revision
// misses nothing that came after it.
func RunDirectory(t *testing.T, b Backend) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T, func() store.Store)
	}{
		{"ListShards", testDirectoryList},
		{"WatchShards", testDirectoryWatch},
		{"WatchResume", testDirectoryResume},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(t, b(t))
		})
	}
}

func dirSource(t *testing.T, s store.Store) store.DirectorySource {
	t.Helper()
	ds, ok := s.(store.DirectorySource)
	if !ok {
		t.Fatalf("%T does not implement store.DirectorySource", s)
	}
	return ds
}

// dirFixture makes two VPCs with the same CIDR (blue on node n1, red on
// n2) and puts n endpoints in each at the same addresses.
func dirFixture(t *testing.T, s store.Store, n int) []vpc.Endpoint {
	t.Helper()
	ctx := t.Context()
	MustVPC(t, s, "blue", "10.1.0.0/16")
	MustVPC(t, s, "red", "10.1.0.0/16")
	MustSubnet(t, s, "blue", "web", "10.1.0.0/24")
	MustSubnet(t, s, "red", "web", "10.1.0.0/24")
	RegisterNodes(t, s, "n1", "n2")
	for _, c := range [][2]string{{"blue", "n1"}, {"red", "n2"}} {
		for range 4 { // 4 blocks of /28: 52 assignable addresses
			if _, err := s.ClaimBlock(ctx, c[0], "web", c[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	var out []vpc.Endpoint
	for _, c := range [][2]string{{"blue", "n1"}, {"red", "n2"}} {
		for i := range n {
			e := vpc.Endpoint{VPC: c[0], Subnet: "web", ID: fmt.Sprintf("c%d/eth0", i), IP: netip.AddrFrom4([4]byte{10, 1, 0, byte(2 + i)}),
				MAC: net.HardwareAddr{2, 0xaa, 0, 0, byte(len(c[0])), byte(i)}, Node: c[1]}
			got, err := s.PutEndpoint(ctx, e)
			if err != nil {
				t.Fatalf("put %s: %v", e.Key(), err)
			}
			out = append(out, got)
		}
	}
	return out
}

func recordKey(e vpc.Endpoint) directory.Key { return directory.Key{VNI: e.VNI, IP: e.IP} }

// checkRecord compares r with what e's write must have stored.
func checkRecord(t *testing.T, what string, r directory.Record, e vpc.Endpoint) {
	t.Helper()
	var mac [6]byte
	copy(mac[:], e.MAC)
	if r.Key != recordKey(e) || r.Node != e.Node || r.MAC != mac || r.Version == 0 {
		t.Errorf("%s: record %+v; want key %s node %s mac %s and a version", what, r, recordKey(e), e.Node, e.MAC)
	}
}

func testDirectoryList(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	ds := dirSource(t, s)
	shards := ds.DirectoryShards()
	if shards <= 0 || shards&(shards-1) != 0 {
		t.Fatalf("DirectoryShards = %d, not a power of two", shards)
	}
	eps := dirFixture(t, s, 12)
	// Half the shards the endpoints fall in, and some empty ones.
	byShard := map[uint32][]vpc.Endpoint{}
	for _, e := range eps {
		sh := recordKey(e).Shard(shards)
		byShard[sh] = append(byShard[sh], e)
	}
	var asked []uint32
	want := map[directory.Key]vpc.Endpoint{}
	i := 0
	for _, sh := range slices.Sorted(func(yield func(uint32) bool) {
		for k := range byShard {
			if !yield(k) {
				return
			}
		}
	}) {
		if i++; i%2 == 0 {
			continue
		}
		asked = append(asked, sh)
		for _, e := range byShard[sh] {
			want[recordKey(e)] = e
		}
	}
	for sh := uint32(0); len(asked) < len(byShard)/2+8; sh++ {
		if byShard[sh] == nil {
			asked = append(asked, sh)
		}
	}
	recs, rev, err := open().(store.DirectorySource).ListShards(ctx, asked)
	if err != nil {
		t.Fatal(err)
	}
	if rev <= 0 {
		t.Errorf("listing revision %d", rev)
	}
	got := map[directory.Key]bool{}
	for _, r := range recs {
		e, ok := want[r.Key]
		if !ok {
			t.Errorf("listed %+v, not in the shards asked", r)
			continue
		}
		if got[r.Key] {
			t.Errorf("listed %s twice", r.Key)
		}
		got[r.Key] = true
		checkRecord(t, "list", r, e)
		if uint64(rev) < r.Version {
			t.Errorf("record %s version %d above the listing's revision %d", r.Key, r.Version, rev)
		}
		dr, ok, err := ds.DirectoryRecord(ctx, e.VPC, r.Key)
		if err != nil || !ok || dr != r {
			t.Errorf("DirectoryRecord(%s, %s) = %+v, %v, %v; want %+v", e.VPC, r.Key, dr, ok, err, r)
		}
	}
	if len(got) != len(want) {
		t.Errorf("listed %d records, want %d", len(got), len(want))
	}
	// The same address in the other VPC is another record.
	if blue, red := recordKey(eps[0]), recordKey(eps[12]); blue.IP != red.IP || blue == red {
		t.Fatalf("fixture: %s and %s", blue, red)
	}
	if _, ok, err := ds.DirectoryRecord(ctx, "blue", directory.Key{VNI: eps[0].VNI, IP: netip.MustParseAddr("10.1.0.200")}); ok || err != nil {
		t.Errorf("record of an address without endpoint: %v, %v", ok, err)
	}
	if recs, _, err := ds.ListShards(ctx, nil); err != nil || len(recs) != 0 {
		t.Errorf("list no shard = %d records, %v", len(recs), err)
	}
}

// nextEvent waits for one event or fails.
func nextEvent(t *testing.T, ch <-chan directory.SourceEvent) directory.SourceEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch closed")
		}
		if ev.Type == directory.EventError {
			t.Fatalf("watch failed: %v", ev.Err)
		}
		return ev
	case <-time.After(EventTimeout):
		t.Fatal("no watch event")
	}
	return directory.SourceEvent{}
}

// noEvent checks that nothing arrives for a while.
func noEvent(t *testing.T, ch <-chan directory.SourceEvent, d time.Duration) {
	t.Helper()
	select {
	case ev := <-ch:
		t.Errorf("unexpected event %+v", ev)
	case <-time.After(d):
	}
}

func testDirectoryWatch(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	ds := dirSource(t, s)
	shards := ds.DirectoryShards()
	eps := dirFixture(t, s, 2)
	blue := eps[0]
	// A free address of blue whose shard differs from blue's first
	// endpoint's (the move below crosses shards), and one in another
	// shard again for an endpoint the watch must not see.
	var moveTo, other netip.Addr
	bsh := recordKey(blue).Shard(shards)
	for i := 20; i < 60 && !other.IsValid(); i++ {
		a := netip.AddrFrom4([4]byte{10, 1, 0, byte(i)})
		switch sh := (directory.Key{VNI: blue.VNI, IP: a}).Shard(shards); {
		case sh != bsh && !moveTo.IsValid():
			moveTo = a
		case sh != bsh && sh != (directory.Key{VNI: blue.VNI, IP: moveTo}).Shard(shards):
			other = a
		}
	}
	watched := []uint32{bsh, directory.Key{VNI: blue.VNI, IP: moveTo}.Shard(shards)}
	_, rev, err := ds.ListShards(ctx, watched)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := open().(store.DirectorySource).WatchShards(wctx, watched, rev)

	// An endpoint of an unwatched shard: no event.
	if _, err := s.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "x/eth0", IP: other, Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	// A change of the watched endpoint (its MAC): a put, newer version.
	before, _, _ := ds.DirectoryRecord(ctx, "blue", recordKey(blue))
	blue.MAC = net.HardwareAddr{2, 0xbb, 0, 0, 0, 1}
	if _, err := s.PutEndpoint(ctx, blue); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, ch)
	if ev.Type != directory.EventPut {
		t.Fatalf("event %+v, want a put", ev)
	}
	checkRecord(t, "put event", ev.Record, blue)
	if ev.Record.Version <= before.Version {
		t.Errorf("version %d after a change, was %d", ev.Record.Version, before.Version)
	}
	// A move to another address: the old record deleted, the new one put.
	moved := blue
	moved.IP = moveTo
	if _, err := s.PutEndpoint(ctx, moved); err != nil {
		t.Fatal(err)
	}
	seen := map[directory.EventType]directory.SourceEvent{}
	for range 2 {
		ev := nextEvent(t, ch)
		seen[ev.Type] = ev
	}
	if d := seen[directory.EventDelete]; d.Record.Key != recordKey(blue) || d.Record.Version <= ev.Record.Version {
		t.Errorf("move: delete event %+v; want %s after version %d", d, recordKey(blue), ev.Record.Version)
	}
	checkRecord(t, "move: put event", seen[directory.EventPut].Record, moved)
	// A delete.
	if err := s.DeleteEndpoint(ctx, moved.VPC, moved.ID); err != nil {
		t.Fatal(err)
	}
	ev = nextEvent(t, ch)
	if ev.Type != directory.EventDelete || ev.Record.Key != recordKey(moved) || ev.Record.Version <= seen[directory.EventPut].Record.Version {
		t.Errorf("delete event %+v", ev)
	}
	if _, ok, err := ds.DirectoryRecord(ctx, "blue", recordKey(moved)); ok || err != nil {
		t.Errorf("record after delete: %v, %v", ok, err)
	}
	noEvent(t, ch, 500*time.Millisecond)
}

func testDirectoryResume(t *testing.T, open func() store.Store) {
	ctx := t.Context()
	s := open()
	ds := dirSource(t, s)
	shards := ds.DirectoryShards()
	eps := dirFixture(t, s, 8)
	var watched []uint32
	for _, e := range eps {
		watched = append(watched, recordKey(e).Shard(shards))
	}
	_, rev, err := ds.ListShards(ctx, watched)
	if err != nil {
		t.Fatal(err)
	}
	// Delete every endpoint, then read the first half of the events.
	for _, e := range eps {
		if err := s.DeleteEndpoint(ctx, e.VPC, e.ID); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	ch := ds.WatchShards(wctx, watched, rev)
	got := map[directory.Key]bool{}
	var resume int64
	for range len(eps) / 2 {
		ev := nextEvent(t, ch)
		got[ev.Record.Key] = true
		if ev.Revision < resume {
			t.Errorf("resume revision went back: %d after %d", ev.Revision, resume)
		}
		resume = ev.Revision
	}
	cancel()
	// Resumed from the last event's Revision: everything not seen comes
	// (events seen twice are allowed).
	ch = open().(store.DirectorySource).WatchShards(ctx, watched, resume)
	for len(got) < len(eps) {
		ev := nextEvent(t, ch)
		if ev.Type != directory.EventDelete {
			t.Fatalf("event %+v, want deletes only", ev)
		}
		got[ev.Record.Key] = true
	}
}
