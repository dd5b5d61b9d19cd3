package directory

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc"
)

// realNode is a directory node on the real stack: memberlist and gRPC on
// 127.0.0.1, distinct ports.
type realNode struct {
	name   string
	node   *Node
	gossip *Gossip
	srv    *grpc.Server
	tr     *GRPCTransport
	cancel context.CancelFunc

	mu      sync.Mutex
	members []Member
	changed []time.Time // when each member set was seen
}

func startRealNode(t testing.TB, name string, src Source, shards int, seeds []string) *realNode {
	t.Helper()
	l, err := ListenRPC("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rn := &realNode{name: name, tr: NewGRPCTransport()}
	self := Member{Name: name, RPC: netip.MustParseAddrPort(l.Addr().String())}
	rn.node, err = NewNode(Config{Self: self, Shards: shards, Source: src, Transport: rn.tr, AttemptTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rn.srv = NewGRPCServer(rn.node)
	go rn.srv.Serve(l)
	ctx, cancel := context.WithCancel(context.Background())
	rn.cancel = cancel
	go rn.node.Run(ctx)
	rn.gossip, err = JoinGossip(GossipConfig{Name: name, BindAddr: "127.0.0.1", RPC: self.RPC, Seeds: seeds, Memberlist: testGossipConfig(),
		OnChange: func(ms []Member) {
			rn.mu.Lock()
			rn.members = ms
			rn.changed = append(rn.changed, time.Now())
			rn.mu.Unlock()
			rn.node.SetMembers(ms)
			rn.tr.Prune(ms)
		}})
	if err != nil {
		cancel()
		rn.srv.Stop()
		t.Fatal(err)
	}
	t.Cleanup(rn.stop)
	return rn
}

// testGossipConfig is FastLANConfig, made tolerant under the race
// detector (probe timeouts a loaded, instrumented process misses would
// declare live members dead).
func testGossipConfig() *memberlist.Config {
	c := FastLANConfig()
	if raceEnabled {
		c.ProbeInterval, c.ProbeTimeout, c.SuspicionMult = 500*time.Millisecond, 400*time.Millisecond, 4
	}
	return c
}

// lookupEventually retries a lookup for up to 5 s, as the agent's miss
// path would, for checks that must not depend on one RPC under load.
func lookupEventually(t testing.TB, nd *Node, want Record) {
	t.Helper()
	var got Record
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err = nd.Lookup(context.Background(), want.Key)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lookup %s: %+v, %v", want.Key, got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops everything without leaving: a crashed node.
func (rn *realNode) kill() {
	rn.gossip.Shutdown()
	rn.srv.Stop()
	rn.cancel()
}

func (rn *realNode) stop() {
	rn.kill()
	rn.tr.Close()
}

func (rn *realNode) has(name string) bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return slices.ContainsFunc(rn.members, func(m Member) bool { return m.Name == name })
}

func (rn *realNode) memberCount() int {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return len(rn.members)
}

func startRealCluster(t testing.TB, n int, src Source, shards int) []*realNode {
	t.Helper()
	nodes := []*realNode{startRealNode(t, "real-00", src, shards, nil)}
	seed := nodes[0].gossip.Addr()
	for i := 1; i < n; i++ {
		nodes = append(nodes, startRealNode(t, fmt.Sprintf("real-%02d", i), src, shards, []string{seed}))
	}
	waitFor(t, 20*time.Second, "all members see each other", func() bool {
		for _, rn := range nodes {
			if rn.memberCount() != n {
				return false
			}
		}
		return true
	})
	return nodes
}

func realSettled(nodes []*realNode, n int, src *MemSource) bool {
	total := 0
	for _, rn := range nodes {
		total += rn.node.Records()
	}
	if total != min(DefaultReplicas, n)*src.Len() {
		return false
	}
	for _, rn := range nodes {
		if len(rn.node.Placement().Members()) != n {
			return false
		}
		if _, loading := rn.node.HeldShards(); len(loading) > 0 {
			return false
		}
	}
	return true
}

// The whole stack on loopback: memberlist membership, gRPC lookups, a
// crashed node detected by probing, its shards re-replicated from the
// source, and lookups served throughout.
func TestRealClusterFailover(t *testing.T) {
	const n, shards = 6, 256
	src := NewMemSource(shards)
	nodes := startRealCluster(t, n, src, shards)
	var hosts []Member
	for _, rn := range nodes {
		hosts = append(hosts, Member{Name: rn.name})
	}
	recs := putEndpoints(src, 300, hosts)
	waitFor(t, 10*time.Second, "placement settled", func() bool { return realSettled(nodes, n, src) })
	ctx := context.Background()
	for i, r := range recs {
		lookupEventually(t, nodes[i%n].node, r)
	}

	// Publish over gRPC: a record the holders' watch never sees is served
	// by all three at once.
	pub := src.PutUnwatched(Record{Key: testKey(7000), Node: nodes[1].name})
	if n, err := nodes[1].node.Publish(ctx, Publication{Record: pub}); err != nil || n != DefaultReplicas {
		t.Fatalf("publish over gRPC: %d applied, %v", n, err)
	}
	for _, rn := range nodes {
		if got, err := rn.node.Lookup(ctx, pub.Key); err != nil || got != pub {
			t.Fatalf("lookup of a published record from %s: %+v, %v", rn.name, got, err)
		}
	}
	recs = append(recs, pub)

	victim := nodes[2]
	survivors := slices.Delete(slices.Clone(nodes), 2, 3)
	p := survivors[0].node.Placement()
	var firstHeld []Record // keys whose first holder is the victim
	for _, r := range recs {
		if p.HolderNames(r.Shard(shards))[0] == victim.name {
			firstHeld = append(firstHeld, r)
		}
	}
	killed := time.Now()
	victim.kill()
	// Lookups are served at once by the next replica (the refused
	// connection fails fast), before membership notices.
	looker := survivors[0].node
	for _, r := range firstHeld {
		got, err := looker.Lookup(ctx, r.Key)
		if err != nil || got != r {
			t.Fatalf("lookup %s right after its first holder died: %+v, %v", r.Key, got, err)
		}
	}
	served := time.Since(killed)
	waitFor(t, 15*time.Second, "survivors drop the victim", func() bool {
		for _, rn := range survivors {
			if rn.has(victim.name) {
				return false
			}
		}
		return true
	})
	detected := time.Since(killed)
	waitFor(t, 10*time.Second, "re-replicated", func() bool { return realSettled(survivors, n-1, src) })
	rereplicated := time.Since(killed)
	copies := map[uint32]int{}
	for _, rn := range survivors {
		loaded, _ := rn.node.HeldShards()
		for _, s := range loaded {
			copies[s]++
		}
	}
	for s := range uint32(shards) {
		if copies[s] != DefaultReplicas {
			t.Fatalf("shard %d: %d copies after re-replication", s, copies[s])
		}
	}
	for _, r := range recs {
		lookupEventually(t, survivors[len(survivors)-1].node, r)
	}
	t.Logf("kill -> %d lookups of its first-held keys served: %s; detected by all survivors: %s; R copies again: %s",
		len(firstHeld), served.Round(time.Millisecond), detected.Round(time.Millisecond), rereplicated.Round(time.Millisecond))
}

// A holder that accepts connections and never answers (a hung host):
// the gRPC lookup gives up at the attempt deadline and the next replica
// answers.
func TestGRPCDeadlineFallback(t *testing.T) {
	const shards = 64
	src := NewMemSource(shards)
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never read
		}
	}()
	var servers []*grpc.Server
	defer func() {
		for _, s := range servers {
			s.Stop()
		}
	}()
	var ms []Member
	var nodes []*Node
	tr := NewGRPCTransport()
	defer tr.Close()
	for i := range 3 {
		l, err := ListenRPC("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		m := Member{Name: fmt.Sprintf("g-%d", i), RPC: netip.MustParseAddrPort(l.Addr().String())}
		nd, err := NewNode(Config{Self: m, Shards: shards, Replicas: 2, Source: src, Transport: tr, AttemptTimeout: 150 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		s := NewGRPCServer(nd)
		servers = append(servers, s)
		go s.Serve(l)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go nd.Run(ctx)
		ms, nodes = append(ms, m), append(nodes, nd)
	}
	recs := putEndpoints(src, 100, ms)
	for _, nd := range nodes {
		nd.SetMembers(ms)
	}
	waitFor(t, 5*time.Second, "loaded", func() bool {
		for _, nd := range nodes {
			if _, l := nd.HeldShards(); len(l) > 0 || len(nd.Placement().Members()) != 3 {
				return false
			}
		}
		return true
	})
	// The looker g-0 sees g-1's RPC address replaced by the black hole,
	// so every lookup whose first holder is g-1 hangs there first.
	bad := slices.Clone(ms)
	bad[1].RPC = netip.MustParseAddrPort(hole.Addr().String())
	nodes[0].SetMembers(bad)
	waitFor(t, 5*time.Second, "new addresses", func() bool { return nodes[0].Placement().Member(1).RPC == bad[1].RPC })
	p := nodes[0].Placement()
	var k Record
	for _, r := range recs {
		if hs := p.HolderNames(r.Shard(shards)); hs[0] == "g-1" && hs[1] == "g-2" {
			k = r
			break
		}
	}
	if k.Node == "" {
		t.Fatal("no key with holders g-1, g-2")
	}
	start := time.Now()
	got, err := nodes[0].Lookup(context.Background(), k.Key)
	took := time.Since(start)
	if err != nil || got != k {
		t.Fatalf("lookup: %+v, %v", got, err)
	}
	if took < 140*time.Millisecond || took > 1500*time.Millisecond {
		t.Fatalf("lookup took %s: want the 150ms deadline on the hung holder, then g-2", took)
	}
}
