package directory

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"
)

// simFigures are the results of one simulated cluster.
type simFigures struct {
	nodes, endpoints, shards int
	// Memory (heap + goroutine stacks) of the directory over all nodes,
	// per node: an empty node, and its records at steady state.
	nodeOverheadBytes, perNodeBytes float64
	recordsMean, recordsMax         float64
	bytesPerRecord                  float64
	// Keys whose holder set changed on a join and on a leave, and the
	// R/(N+1) and R/N expectations.
	joinMoved, leaveMoved int
	// The same, counted from the placements over every key.
	joinChanged, leaveChanged        int
	joinExpected, leaveExpected      float64
	settleJoin, settleLeave          time.Duration
	rpcsPerLookup, rpcsPerLookupDead float64
	// Distinct first holders of 1,000 active keys of one looker: the
	// connections its lookups fan out to.
	holdersFor1000 int
	// Memory of one Placement, which every real node keeps (the
	// simulation shares one through a PlacementCache).
	placementBytes float64
}

func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

func simKey(i int) Key {
	// 1,000 VPCs with overlapping 10.0.0.0/8 ranges.
	return Key{VNI: 1 + uint32(i%1000), IP: netip.AddrFrom4([4]byte{10, byte(i >> 18), byte(i >> 10), byte(i >> 2)})}
}

// simulate runs nodes real Nodes over a MemNetwork with one MemSource of
// endpoints records and measures memory, moves on a join and a leave,
// and lookup fan-out.
func simulate(t testing.TB, nodes, endpoints, shards int) simFigures {
	const r = DefaultReplicas
	f := simFigures{nodes: nodes, endpoints: endpoints, shards: shards}
	ms := members(nodes + 1) // the last one joins later
	src := NewMemSource(shards)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range endpoints {
		src.Put(Record{Key: simKey(i), Node: ms[rng.IntN(nodes)].Name, MAC: [6]byte{2, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}})
	}
	src.Compact()
	if got := src.Len(); got != endpoints {
		t.Fatalf("simKey collides: %d distinct of %d", got, endpoints)
	}
	cache := &PlacementCache{}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	tweak := func(c *Config) {
		c.Placements, c.Logger, c.OnInvalidate = cache, quiet, nil
		c.AttemptTimeout = 100 * time.Millisecond
	}
	hp := heapAndStacks()
	pl, err := NewPlacement(ms[:nodes], shards, r)
	if err != nil {
		t.Fatal(err)
	}
	f.placementBytes = float64(heapAndStacks() - hp)
	runtime.KeepAlive(pl)
	h0 := heapAndStacks()
	c := &testCluster{t: t, shards: shards, r: r, src: src, net: NewMemNetwork(),
		nodes: map[string]*Node{}, cancel: map[string]context.CancelFunc{}, inv: map[string][]Invalidation{}}
	t.Cleanup(func() {
		for _, cancel := range c.cancel {
			cancel()
		}
	})
	for _, m := range ms[:nodes] {
		c.start(m, tweak)
	}
	h1 := heapAndStacks()
	f.nodeOverheadBytes = float64(h1-h0) / float64(nodes)
	c.setMembers()
	waitFor(t, 10*time.Minute, "initial load", c.settled)
	h2 := heapAndStacks()
	f.perNodeBytes = float64(h2-h0) / float64(nodes)
	f.bytesPerRecord = float64(h2-h1) / float64(r*endpoints)
	counts := []int{}
	for _, nd := range c.nodes {
		counts = append(counts, nd.Records())
	}
	f.recordsMax = float64(slices.Max(counts))
	f.recordsMean = float64(r*endpoints) / float64(nodes)

	// Lookups from random nodes for random keys: RPCs per lookup.
	ctx := context.Background()
	lookups := func(n int) float64 {
		calls0 := c.net.Calls()
		for range n {
			looker := c.live[rng.IntN(len(c.live))].Name
			i := rng.IntN(endpoints)
			if _, err := c.node(looker).Lookup(ctx, simKey(i)); err != nil {
				t.Fatalf("lookup %s from %s: %v", simKey(i), looker, err)
			}
			c.node(looker).Forget(simKey(i))
		}
		return float64(c.net.Calls()-calls0) / float64(n)
	}
	f.rpcsPerLookup = lookups(5000)
	p := c.node(ms[0].Name).Placement()
	first := map[int32]bool{}
	for range 1000 {
		first[p.Holders(simKey(rng.IntN(endpoints)).Shard(shards))[0]] = true
	}
	f.holdersFor1000 = len(first)

	// changed counts the keys whose holder set differs between p and q.
	changed := func(p, q *Placement) int {
		n := 0
		for i := range endpoints {
			sh := simKey(i).Shard(shards)
			if !slices.Equal(p.HolderNames(sh), q.HolderNames(sh)) {
				n++
			}
		}
		return n
	}
	// Join: the joiner loads exactly the keys whose holder set changed.
	start := time.Now()
	joiner := c.start(ms[nodes], tweak)
	c.setMembers()
	waitFor(t, 10*time.Minute, "join settled", c.settled)
	f.settleJoin = time.Since(start)
	f.joinMoved = joiner.Records()
	pJoined := joiner.Placement()
	f.joinChanged = changed(p, pJoined)
	f.joinExpected = float64(r*endpoints) / float64(nodes+1)

	// Leave (a crash): survivors load the victim's keys, once each.
	victim := ms[3].Name
	f.leaveMoved = c.node(victim).Records()
	f.leaveExpected = float64(r*endpoints) / float64(nodes+1)
	start = time.Now()
	c.kill(victim)
	// Until membership notices, lookups fall back past the dead holder.
	f.rpcsPerLookupDead = lookups(5000)
	c.remove(victim)
	waitFor(t, 10*time.Minute, "leave settled", c.settled)
	f.settleLeave = time.Since(start)
	f.leaveChanged = changed(pJoined, c.node(ms[0].Name).Placement())
	if got := lookups(2000); got > 1 {
		t.Fatalf("after the leave settled: %.2f RPCs per lookup", got)
	}
	return f
}

func (f simFigures) log(t testing.TB) {
	t.Logf("nodes=%d endpoints=%d shards=%d R=3", f.nodes, f.endpoints, f.shards)
	t.Logf("  per-node directory memory %.1f KiB (empty node %.1f KiB) + its placement %.1f KiB; records per node mean %.0f max %.0f; %.0f B per held record",
		f.perNodeBytes/1024, f.nodeOverheadBytes/1024, f.placementBytes/1024, f.recordsMean, f.recordsMax, f.bytesPerRecord)
	t.Logf("  join: %d keys moved (R/(N+1) of R*E: %.0f, ratio %.2f), settled in %s", f.joinMoved, f.joinExpected, float64(f.joinMoved)/f.joinExpected, f.settleJoin.Round(time.Millisecond))
	t.Logf("  leave: %d keys moved (%.0f expected, ratio %.2f), settled in %s", f.leaveMoved, f.leaveExpected, float64(f.leaveMoved)/f.leaveExpected, f.settleLeave.Round(time.Millisecond))
	t.Logf("  RPCs per lookup %.3f; with one dead node not yet detected %.3f; 1,000 active keys fan out to %d holders", f.rpcsPerLookup, f.rpcsPerLookupDead, f.holdersFor1000)
}

// A small simulation on every run: the same code as the big ones below.
func TestSimulation(t *testing.T) {
	f := simulate(t, 100, 20000, 1024)
	f.log(t)
	// HRW moves a key only when the joiner enters or the leaver leaves
	// its shard's top R: the node that joined loaded exactly the keys
	// whose holder set changed, and a crash moves exactly the dead
	// node's keys.
	if f.joinMoved != f.joinChanged || f.leaveMoved != f.leaveChanged {
		t.Errorf("join: joiner loaded %d keys, %d changed holders; leave: victim held %d, %d changed holders",
			f.joinMoved, f.joinChanged, f.leaveMoved, f.leaveChanged)
	}
	for _, m := range []struct {
		what      string
		got, want float64
	}{{"join", float64(f.joinMoved), f.joinExpected}, {"leave", float64(f.leaveMoved), f.leaveExpected}} {
		if ratio := m.got / m.want; ratio < 0.6 || ratio > 1.4 {
			t.Errorf("%s moved %.0f keys, want about %.0f (R/N)", m.what, m.got, m.want)
		}
	}
	// A lookup is at most one RPC (none when the looker holds the
	// shard); a dead first holder costs one more for the 3% of keys
	// whose shards it led.
	if f.rpcsPerLookup > 1 || f.rpcsPerLookup < 0.9 {
		t.Errorf("%.3f RPCs per lookup, want about 1 - R/N", f.rpcsPerLookup)
	}
	if f.rpcsPerLookupDead > 1.1 {
		t.Errorf("%.3f RPCs per lookup with a dead node", f.rpcsPerLookupDead)
	}
}

// BenchmarkSimulation runs the simulation at 1,000 and 10,000 nodes with
// 1M endpoints (minutes, about 2 GiB at 10,000): go test -run '^$'
// -bench Simulation -benchtime 1x ./pkg/directory/
func BenchmarkSimulation(b *testing.B) {
	// 4096 shards give 1,000 nodes about 12 each; 10,000 nodes need
	// more shards than nodes to hold a share each (65,536: about 20).
	for _, tc := range []struct{ nodes, shards int }{{1000, DefaultShards}, {10000, 1 << 16}} {
		b.Run(fmt.Sprintf("nodes=%d/shards=%d/endpoints=1M", tc.nodes, tc.shards), func(b *testing.B) {
			var f simFigures
			for b.Loop() {
				f = simulate(b, tc.nodes, 1<<20, tc.shards)
			}
			f.log(b)
			b.ReportMetric(f.perNodeBytes/1024, "KiB/node")
			b.ReportMetric(f.placementBytes/1024, "placement-KiB")
			b.ReportMetric(f.recordsMax, "max-records/node")
			b.ReportMetric(float64(f.joinMoved)/f.joinExpected, "join-moved/expected")
			b.ReportMetric(float64(f.leaveMoved)/f.leaveExpected, "leave-moved/expected")
			b.ReportMetric(f.rpcsPerLookup, "rpcs/lookup")
			b.ReportMetric(0, "ns/op")
		})
	}
}
