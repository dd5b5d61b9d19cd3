package directory

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// testCluster is n Nodes on one MemNetwork and one MemSource, with a
// static membership the test changes.
type testCluster struct {
	t      testing.TB
	shards int
	r      int
	src    *MemSource
	net    *MemNetwork
	nodes  map[string]*Node
	cancel map[string]context.CancelFunc
	live   []Member
	invMu  sync.Mutex
	inv    map[string][]Invalidation // per receiving node
}

func newTestCluster(t testing.TB, n, shards, r int, tweak func(*Config)) *testCluster {
	c := &testCluster{t: t, shards: shards, r: r, src: NewMemSource(shards), net: NewMemNetwork(),
		nodes: map[string]*Node{}, cancel: map[string]context.CancelFunc{}, inv: map[string][]Invalidation{}}
	for _, m := range members(n) {
		c.start(m, tweak)
	}
	c.setMembers()
	t.Cleanup(func() {
		for _, cancel := range c.cancel {
			cancel()
		}
	})
	return c
}

func (c *testCluster) start(m Member, tweak func(*Config)) *Node {
	name := m.Name
	cfg := Config{Self: m, Shards: c.shards, Replicas: c.r, Source: c.src, Transport: c.net.Transport(),
		AttemptTimeout: 100 * time.Millisecond,
		OnInvalidate: func(inv Invalidation) {
			c.invMu.Lock()
			c.inv[name] = append(c.inv[name], inv)
			c.invMu.Unlock()
		}}
	if tweak != nil {
		tweak(&cfg)
	}
	nd, err := NewNode(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go nd.Run(ctx)
	c.net.Register(name, nd)
	c.nodes[name], c.cancel[name] = nd, cancel
	c.live = append(c.live, m)
	return nd
}

// kill stops a node and its RPC server without telling anyone.
func (c *testCluster) kill(name string) {
	c.cancel[name]()
	c.net.Kill(name)
}

// remove drops a member from the live set (what memberlist does once it
// declares the node dead) and tells the survivors.
func (c *testCluster) remove(names ...string) {
	c.live = slices.DeleteFunc(c.live, func(m Member) bool { return slices.Contains(names, m.Name) })
	for _, n := range names {
		delete(c.nodes, n)
	}
	c.setMembers()
}

func (c *testCluster) setMembers() {
	live := slices.Clone(c.live) // one copy, shared: nodes keep it
	for _, nd := range c.nodes {
		nd.SetMembers(live)
	}
}

// settled: every live node uses a placement of the live set and has
// loaded every shard it holds, and the holders have every record of the
// source R times (watch events of records put during loading included).
func (c *testCluster) settled() bool {
	total := 0
	for _, nd := range c.nodes {
		total += nd.Records()
	}
	if total != min(c.r, len(c.live))*c.src.Len() {
		return false
	}
	for _, nd := range c.nodes {
		p := nd.Placement()
		if len(p.Members()) != len(c.live) {
			return false
		}
		if _, loading := nd.HeldShards(); len(loading) > 0 {
			return false
		}
	}
	return true
}

func (c *testCluster) waitSettled() {
	c.t.Helper()
	waitFor(c.t, 5*time.Second, "cluster settled", c.settled)
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *testCluster) node(name string) *Node { return c.nodes[name] }

func (c *testCluster) invalidations(name string) []Invalidation {
	c.invMu.Lock()
	defer c.invMu.Unlock()
	return slices.Clone(c.inv[name])
}

func testKey(i int) Key {
	return Key{VNI: 100 + uint32(i%7), IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})}
}

func putEndpoints(src *MemSource, n int, hosts []Member) []Record {
	out := make([]Record, n)
	for i := range out {
		out[i] = src.Put(Record{Key: testKey(i), Node: hosts[i%len(hosts)].Name, MAC: [6]byte{0x02, 0, 0, 0, byte(i >> 8), byte(i)}})
	}
	return out
}

// holderCopies counts, per shard, the live nodes that hold it loaded.
func (c *testCluster) holderCopies() map[uint32]int {
	out := map[uint32]int{}
	for _, nd := range c.nodes {
		loaded, _ := nd.HeldShards()
		for _, s := range loaded {
			out[s]++
		}
	}
	return out
}

func TestNodeLookupFromAnyNode(t *testing.T) {
	c := newTestCluster(t, 8, 64, 3, nil)
	recs := putEndpoints(c.src, 500, c.live)
	c.waitSettled()
	ctx := context.Background()
	for i, want := range recs {
		looker := c.live[i%len(c.live)].Name
		got, err := c.node(looker).Lookup(ctx, want.Key)
		if err != nil {
			t.Fatalf("lookup %s from %s: %v", want.Key, looker, err)
		}
		if got != want {
			t.Fatalf("lookup %s from %s: %+v, want %+v", want.Key, looker, got, want)
		}
	}
	// Holders names the nodes that hold a key loaded.
	for _, m := range c.node("node-00000").Holders(recs[0].Key) {
		if loaded, _ := c.node(m.Name).HeldShards(); !slices.Contains(loaded, recs[0].Shard(64)) {
			t.Fatalf("Holders(%s) names %s, which does not hold shard %d", recs[0].Key, m.Name, recs[0].Shard(64))
		}
	}
	// Every shard has R loaded copies, exactly on its placement's holders.
	copies := c.holderCopies()
	for s := range uint32(64) {
		if copies[s] != 3 {
			t.Fatalf("shard %d: %d loaded copies, want 3", s, copies[s])
		}
	}
	if _, err := c.node("node-00000").Lookup(ctx, testKey(99999)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup of an absent key: %v, want ErrNotFound", err)
	}
	// Each record is on exactly its R holders: memory is R/N of the
	// directory per node.
	total := 0
	for _, nd := range c.nodes {
		total += nd.Records()
	}
	if total != 3*len(recs) {
		t.Fatalf("records held over all nodes = %d, want R*%d = %d", total, len(recs), 3*len(recs))
	}
}

// A record written after the holders loaded reaches them by the watch.
func TestNodeWatchKeepsHoldersCurrent(t *testing.T) {
	c := newTestCluster(t, 5, 64, 3, nil)
	c.waitSettled()
	r := c.src.Put(Record{Key: testKey(7), Node: "node-00002"})
	waitFor(t, 2*time.Second, "record visible", func() bool {
		got, err := c.node("node-00004").Lookup(context.Background(), r.Key)
		return err == nil && got == r
	})
}

// The first holder hangs (a lost host): the lookup waits out the attempt
// deadline, no longer, and the next replica answers. The next lookup of
// the shard skips the suspected holder.
func TestNodeFallbackHonoursDeadline(t *testing.T) {
	c := newTestCluster(t, 6, 64, 3, func(cfg *Config) { cfg.AttemptTimeout = 150 * time.Millisecond })
	recs := putEndpoints(c.src, 200, c.live)
	c.waitSettled()
	p := c.node("node-00000").Placement()
	// A key whose first holder is neither the looker nor ...
	var k Record
	var first string
	for _, r := range recs {
		hs := p.HolderNames(r.Shard(64))
		if !slices.Contains(hs, "node-00000") {
			k, first = r, hs[0]
			break
		}
	}
	c.net.Hang(first)
	looker := c.node("node-00000")
	start := time.Now()
	got, err := looker.Lookup(context.Background(), k.Key)
	took := time.Since(start)
	if err != nil || got != k {
		t.Fatalf("lookup with a hung first holder: %+v, %v", got, err)
	}
	if took < 150*time.Millisecond || took > 1500*time.Millisecond {
		t.Fatalf("lookup took %s: want the 150ms attempt deadline, then the next replica", took)
	}
	start = time.Now()
	if _, err := looker.Lookup(context.Background(), k.Key); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Fatalf("second lookup took %s: the suspected holder was asked first again", took)
	}
	// The caller's own deadline bounds the whole lookup too.
	for _, h := range p.HolderNames(k.Shard(64)) {
		c.net.Hang(h)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := looker.Lookup(ctx, k.Key); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("all holders hung: %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Fatalf("all holders hung: lookup took %s past a 50ms caller deadline", took)
	}
}

// A holder pushes an invalidation to the nodes that looked an endpoint up
// when it moves (an address reused on another node) or is deleted.
func TestNodeInvalidationPushedToLookers(t *testing.T) {
	c := newTestCluster(t, 6, 64, 3, nil)
	recs := putEndpoints(c.src, 50, c.live)
	c.waitSettled()
	k := recs[3]
	lookers := []string{"node-00001", "node-00004"}
	for _, l := range lookers {
		if _, err := c.node(l).Lookup(context.Background(), k.Key); err != nil {
			t.Fatal(err)
		}
	}
	moved := c.src.Put(Record{Key: k.Key, Node: "node-00005", MAC: [6]byte{2, 9, 9, 9, 9, 9}})
	for _, l := range lookers {
		waitFor(t, 2*time.Second, "move invalidation at "+l, func() bool {
			inv := c.invalidations(l)
			return len(inv) == 1 && !inv[0].Deleted && inv[0].Record == moved
		})
	}
	for _, m := range c.live {
		if !slices.Contains(lookers, m.Name) && len(c.invalidations(m.Name)) != 0 {
			t.Fatalf("%s never looked %s up but got %v", m.Name, k.Key, c.invalidations(m.Name))
		}
	}
	// A change that does not move the endpoint is not pushed.
	c.src.Put(moved)
	c.src.Delete(k.Key)
	for _, l := range lookers {
		waitFor(t, 2*time.Second, "delete invalidation at "+l, func() bool {
			inv := c.invalidations(l)
			return len(inv) == 2 && inv[1].Deleted && inv[1].Record.Key == k.Key && inv[1].Record.Version > moved.Version
		})
	}
	// A stale invalidation (older than what was learned) is ignored.
	r2 := recs[4]
	if _, err := c.node("node-00002").Lookup(context.Background(), r2.Key); err != nil {
		t.Fatal(err)
	}
	_ = c.node("node-00002").ServeInvalidate(context.Background(), Invalidation{Record: Record{Key: r2.Key, Version: r2.Version - 1}, Deleted: true})
	if inv := c.invalidations("node-00002"); len(inv) != 0 {
		t.Fatalf("stale invalidation delivered: %v", inv)
	}
}

// Kill 2 of the 3 holders of a shard: no endpoint is lost. The
// survivors serve at once; after membership drops the dead, the new
// holders load the shard from the source and every shard has R copies
// again. Lookers re-register with the new holders, so invalidations keep
// reaching them.
func TestNodeKillTwoOfThreeHolders(t *testing.T) {
	c := newTestCluster(t, 8, 64, 3, nil)
	recs := putEndpoints(c.src, 400, c.live)
	c.waitSettled()
	p := c.node("node-00000").Placement()
	var target uint32
	var holders []string
	for s := range uint32(64) {
		if hs := p.HolderNames(s); !slices.Contains(hs, "node-00000") {
			target, holders = s, hs
			break
		}
	}
	var inShard []Record
	for _, r := range recs {
		if r.Shard(64) == target {
			inShard = append(inShard, r)
		}
	}
	if len(inShard) == 0 {
		t.Fatal("no record in the target shard")
	}
	looker := c.node("node-00000")
	if _, err := looker.Lookup(context.Background(), inShard[0].Key); err != nil {
		t.Fatal(err)
	}
	_, lists0 := c.src.Listed()

	c.kill(holders[0])
	c.kill(holders[1])
	// Before membership notices: the third holder answers. (inShard[0]
	// stays learned through the dead first holder, so the looker must
	// re-register it on its own after the membership change.)
	for _, r := range inShard[1:] {
		got, err := looker.Lookup(context.Background(), r.Key)
		if err != nil || got != r {
			t.Fatalf("lookup %s with 2 of 3 holders dead: %+v, %v", r.Key, got, err)
		}
	}
	c.remove(holders[0], holders[1])
	c.waitSettled()
	copies := c.holderCopies()
	for s := range uint32(64) {
		if copies[s] != 3 {
			t.Fatalf("shard %d: %d copies after re-replication, want 3", s, copies[s])
		}
	}
	for _, r := range recs {
		got, err := c.node(c.live[len(c.live)-1].Name).Lookup(context.Background(), r.Key)
		if err != nil || got != r {
			t.Fatalf("endpoint %s lost after killing %v: %+v, %v", r.Key, holders[:2], got, err)
		}
	}
	// Only the moved shards were loaded: each dead node's copies, once.
	_, lists1 := c.src.Listed()
	deadCopies := len(p.ShardsOf(holders[0])) + len(p.ShardsOf(holders[1]))
	if got := lists1 - lists0; got != deadCopies {
		t.Fatalf("survivors listed %d shards, want the %d copies the dead held", got, deadCopies)
	}
	// The looker re-registered with a current holder: a move still
	// reaches it.
	newHolders := c.node("node-00000").Placement().HolderNames(target)
	waitFor(t, 2*time.Second, "looker re-registered", func() bool {
		for _, h := range newHolders {
			if slices.Contains(c.node(h).Lookers(inShard[0].Key), "node-00000") {
				return true
			}
		}
		return false
	})
	moved := c.src.Put(Record{Key: inShard[0].Key, Node: "node-00000"})
	waitFor(t, 2*time.Second, "invalidation after failover", func() bool {
		inv := c.invalidations("node-00000")
		return len(inv) > 0 && inv[len(inv)-1].Record == moved
	})
}

// A join moves only the shards the joiner takes; the old holders drop
// them and every shard keeps R loaded copies.
func TestNodeJoinLoadsOnlyMovedShards(t *testing.T) {
	c := newTestCluster(t, 6, 256, 3, nil)
	putEndpoints(c.src, 300, c.live)
	c.waitSettled()
	before := c.node("node-00000").Placement()
	_, lists0 := c.src.Listed()
	joiner := Member{Name: "node-00006"}
	c.start(joiner, nil)
	c.setMembers()
	c.waitSettled()
	after := c.node("node-00000").Placement()
	_, lists1 := c.src.Listed()
	if got, want := lists1-lists0, before.Moved(after); got != want || want == 0 {
		t.Fatalf("join listed %d shards, want the %d moved", got, want)
	}
	copies := c.holderCopies()
	for s := range uint32(256) {
		if copies[s] != 3 {
			t.Fatalf("shard %d: %d copies after join", s, copies[s])
		}
	}
}

// A change the holders' watch missed (lost to a compaction): they relist
// every held shard and invalidate the lookers of what changed.
func TestNodeRelistAfterCompaction(t *testing.T) {
	c := newTestCluster(t, 4, 16, 2, nil)
	recs := putEndpoints(c.src, 40, c.live)
	c.waitSettled()
	if _, err := c.node("node-00000").Lookup(context.Background(), recs[1].Key); err != nil {
		t.Fatal(err)
	}
	moved := c.src.PutUnwatched(Record{Key: recs[1].Key, Node: "node-00002"})
	c.src.BreakWatches()
	waitFor(t, 2*time.Second, "invalidation from the relist", func() bool {
		inv := c.invalidations("node-00000")
		return len(inv) > 0 && inv[len(inv)-1].Record == moved
	})
	// The holders watch again.
	moved2 := c.src.Put(Record{Key: recs[1].Key, Node: "node-00003"})
	waitFor(t, 2*time.Second, "invalidation from the new watch", func() bool {
		inv := c.invalidations("node-00000")
		return len(inv) > 0 && inv[len(inv)-1].Record == moved2
	})
}

// OnHeld keeps a mirror (the holder's BPF forward map) equal to the held
// records through loads, watch events, relists and dropped shards.
func TestNodeOnHeldMirrorsHeldRecords(t *testing.T) {
	var mu sync.Mutex
	mirrors := map[string]map[Key]Record{}
	c := newTestCluster(t, 4, 64, 2, func(cfg *Config) {
		name := cfg.Self.Name
		mu.Lock()
		mirrors[name] = map[Key]Record{}
		mu.Unlock()
		cfg.OnHeld = func(put []Record, deleted []Key) {
			mu.Lock()
			defer mu.Unlock()
			for _, k := range deleted {
				delete(mirrors[name], k)
			}
			for _, r := range put {
				mirrors[name][r.Key] = r
			}
		}
	})
	recs := putEndpoints(c.src, 200, c.live)
	c.waitSettled()
	c.src.Put(Record{Key: recs[0].Key, Node: "node-00003"})
	c.src.Delete(recs[1].Key)
	c.src.PutUnwatched(Record{Key: recs[2].Key, Node: "node-00001"})
	c.src.BreakWatches()
	c.start(Member{Name: "node-00004"}, nil) // joins without a mirror: others drop shards
	c.setMembers()
	check := func() bool {
		for name, nd := range c.nodes {
			mu.Lock()
			mirror, ok := mirrors[name]
			if !ok {
				mu.Unlock()
				continue
			}
			want := map[Key]Record{}
			nd.mu.Lock()
			for _, st := range nd.held {
				for k, e := range st.records {
					want[k.key()] = e.record(k)
				}
			}
			nd.mu.Unlock()
			same := len(want) == len(mirror)
			for k, r := range want {
				same = same && mirror[k] == r
			}
			mu.Unlock()
			if !same {
				return false
			}
		}
		return true
	}
	waitFor(t, 3*time.Second, "mirrors equal held records", func() bool {
		if !c.settled() {
			return false
		}
		got, _ := c.src.Get(recs[2].Key)
		return got.Node == "node-00001" && check()
	})
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for _, m := range mirrors {
		n += len(m)
		if _, ok := m[recs[1].Key]; ok {
			t.Fatal("a deleted record is still mirrored")
		}
	}
	if n == 0 || n >= 2*c.src.Len() {
		t.Fatalf("mirrors hold %d records for %d endpoints with R=2 and a mirrorless fifth node", n, c.src.Len())
	}
}

// A looker that left the cluster is dropped from a record's lookers at
// the record's next move.
func TestNodeDeadLookerForgotten(t *testing.T) {
	c := newTestCluster(t, 6, 64, 3, nil)
	recs := putEndpoints(c.src, 50, c.live)
	c.waitSettled()
	k := recs[0].Key
	var looker string
	for _, m := range c.live {
		if _, ok := c.node(m.Name).Placement().Holds(m.Name, k.Shard(64)); !ok {
			looker = m.Name
			break
		}
	}
	if _, err := c.node(looker).Lookup(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	if _, err := c.node("node-00005").Lookup(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	holdersWith := func(name string) int {
		n := 0
		for _, nd := range c.nodes {
			if slices.Contains(nd.Lookers(k), name) {
				n++
			}
		}
		return n
	}
	if holdersWith(looker) == 0 {
		t.Fatal("looker not registered")
	}
	c.kill(looker)
	c.remove(looker)
	c.waitSettled()
	c.src.Put(Record{Key: k, Node: "node-00004"})
	waitFor(t, 2*time.Second, "dead looker forgotten", func() bool { return holdersWith(looker) == 0 })
}

// Publish makes a new record servable by all R holders before their watch
// brings it (here the watch never does), and a published move reaches the
// lookers as an invalidation.
func TestNodePublishAheadOfWatch(t *testing.T) {
	c := newTestCluster(t, 6, 64, 3, nil)
	putEndpoints(c.src, 20, c.live)
	c.waitSettled()
	host := c.node("node-00002")
	rec := c.src.PutUnwatched(Record{Key: testKey(5000), Node: "node-00002", MAC: [6]byte{2, 1, 2, 3, 4, 5}})
	n, err := host.Publish(context.Background(), Publication{Record: rec})
	if err != nil || n != 3 {
		t.Fatalf("publish: %d holders applied, %v; want 3", n, err)
	}
	for _, m := range c.live {
		got, err := c.node(m.Name).Lookup(context.Background(), rec.Key)
		if err != nil || got != rec {
			t.Fatalf("lookup from %s right after publish: %+v, %v", m.Name, got, err)
		}
	}
	moved := c.src.PutUnwatched(Record{Key: rec.Key, Node: "node-00004"})
	if n, err := c.node("node-00004").Publish(context.Background(), Publication{Record: moved}); err != nil || n != 3 {
		t.Fatalf("publish move: %d, %v", n, err)
	}
	waitFor(t, 2*time.Second, "published move invalidates lookers", func() bool {
		inv := c.invalidations("node-00000")
		return len(inv) > 0 && inv[len(inv)-1].Record == moved
	})
	// An older version published late changes nothing.
	if _, err := host.Publish(context.Background(), Publication{Record: rec}); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.node("node-00001").Lookup(context.Background(), rec.Key); got != moved {
		t.Fatalf("a stale publication overwrote the record: %+v", got)
	}
	// With every holder dead the publisher learns it.
	for _, h := range host.Holders(rec.Key) {
		c.net.Kill(h.Name)
	}
	if _, err := c.node(c.live[0].Name).Publish(context.Background(), Publication{Record: moved}); err == nil && !slices.ContainsFunc(host.Holders(rec.Key), func(m Member) bool { return m.Name == c.live[0].Name }) {
		t.Fatal("publish with every holder dead reported success")
	}
}
