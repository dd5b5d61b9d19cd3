package directory

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func members(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{Name: fmt.Sprintf("node-%05d", i), RPC: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(10000+i))}
	}
	return ms
}

func mustPlacement(t testing.TB, ms []Member, shards, r int) *Placement {
	t.Helper()
	p, err := NewPlacement(ms, shards, r)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlacementRDistinctHolders(t *testing.T) {
	for _, tc := range []struct{ n, r int }{{1, 3}, {2, 3}, {3, 3}, {10, 3}, {100, 3}, {50, 5}, {20, 1}} {
		p := mustPlacement(t, members(tc.n), 1024, tc.r)
		want := min(tc.n, tc.r)
		if p.Replicas() != want {
			t.Fatalf("n=%d r=%d: Replicas() = %d, want %d", tc.n, tc.r, p.Replicas(), want)
		}
		for s := range uint32(1024) {
			hs := p.Holders(s)
			if len(hs) != want {
				t.Fatalf("n=%d r=%d shard %d: %d holders, want %d", tc.n, tc.r, s, len(hs), want)
			}
			seen := map[int32]bool{}
			for _, h := range hs {
				if h < 0 || int(h) >= tc.n || seen[h] {
					t.Fatalf("n=%d r=%d shard %d: holders %v not distinct members", tc.n, tc.r, s, hs)
				}
				seen[h] = true
			}
		}
	}
}

// The holders are the top-R weights: checked against a brute force
// (sort all members by weight) so the insertion window cannot drift.
func TestPlacementIsRendezvous(t *testing.T) {
	ms := members(37)
	p := mustPlacement(t, ms, 256, 4)
	for s := range uint32(256) {
		seed := Mix64(uint64(s) + 0x9e3779b97f4a7c15)
		idx := make([]int32, len(ms))
		for i := range idx {
			idx[i] = int32(i)
		}
		w := func(i int32) uint64 { return Mix64(nameHash(p.Member(i).Name) ^ seed) }
		slices.SortFunc(idx, func(a, b int32) int {
			if wa, wb := w(a), w(b); wa != wb {
				if wa > wb {
					return -1
				}
				return 1
			}
			return int(a - b)
		})
		if got := p.Holders(s); !slices.Equal(got, idx[:4]) {
			t.Fatalf("shard %d: holders %v, brute force %v", s, got, idx[:4])
		}
	}
}

func TestPlacementStableUnderPermutation(t *testing.T) {
	ms := members(200)
	p := mustPlacement(t, ms, 4096, 3)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 3 {
		rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
		q := mustPlacement(t, ms, 4096, 3)
		for s := range uint32(4096) {
			if a, b := p.HolderNames(s), q.HolderNames(s); !slices.Equal(a, b) {
				t.Fatalf("shard %d: %v vs %v after shuffling the members", s, a, b)
			}
		}
	}
}

func TestPlacementJoinLeaveMovesRoverN(t *testing.T) {
	const shards, r = 4096, 3
	for _, n := range []int{10, 100, 500} {
		ms := members(n + 1)
		before := mustPlacement(t, ms[:n], shards, r)
		after := mustPlacement(t, ms, shards, r)
		joiner := ms[n].Name

		// Join: every moved copy goes to the joiner (HRW moves nothing
		// between old members), and there are about shards*R/(N+1).
		moved := before.Moved(after)
		got := len(after.ShardsOf(joiner))
		if moved != got {
			t.Fatalf("n=%d join: %d copies moved but the joiner holds %d: copies moved between old members", n, moved, got)
		}
		want := float64(shards*r) / float64(n+1)
		if ratio := float64(moved) / want; ratio < 0.75 || ratio > 1.25 {
			t.Fatalf("n=%d join: moved %d copies, want about %.0f (R/N of %d), ratio %.2f", n, moved, want, shards*r, ratio)
		}
		// Leave (the reverse): exactly the leaver's copies move, each to
		// the next-ranked member.
		if back := after.Moved(before); back != got {
			t.Fatalf("n=%d leave: moved %d copies, the leaver held %d", n, back, got)
		}
		for s := range uint32(shards) {
			a, b := before.HolderNames(s), after.HolderNames(s)
			if !slices.Contains(b, joiner) && !slices.Equal(a, b) {
				t.Fatalf("n=%d shard %d: holders changed from %v to %v without the joiner", n, s, a, b)
			}
		}
		// Each moved copy is a distinct shard (the joiner enters a
		// shard's top R at most once): the shards whose holder set
		// changed, and so the keys, are R/(N+1) of all.
		t.Logf("n=%d: join changed the holders of %d of %d shards (%.2f%%; R/(N+1) = %.2f%%)", n, moved, shards, 100*float64(moved)/float64(shards), 100*float64(r)/float64(n+1))
	}
}

func TestPlacementBalance(t *testing.T) {
	p := mustPlacement(t, members(100), 4096, 3)
	counts := p.ShardCounts()
	mean := float64(4096*3) / 100
	lo, hi := slices.Min(counts), slices.Max(counts)
	if float64(hi) > 1.4*mean || float64(lo) < 0.6*mean {
		t.Fatalf("shards per node in [%d, %d], mean %.1f: unbalanced", lo, hi, mean)
	}
}

func TestPlacementErrors(t *testing.T) {
	for _, tc := range []struct {
		ms        []Member
		shards, r int
	}{
		{members(3), 1000, 3},
		{members(3), 0, 3},
		{members(3), 4096, 0},
		{append(members(3), Member{Name: "node-00001"}), 64, 3},
		{[]Member{{Name: ""}}, 64, 3},
	} {
		if _, err := NewPlacement(tc.ms, tc.shards, tc.r); err == nil {
			t.Errorf("NewPlacement(%d members, %d shards, r=%d): no error", len(tc.ms), tc.shards, tc.r)
		}
	}
	p := mustPlacement(t, nil, 64, 3)
	if p.Replicas() != 0 || len(p.Holders(5)) != 0 {
		t.Fatal("an empty placement has holders")
	}
}

// ShardOf is mirrored by the BPF data plane: these golden values pin the
// function so a change on either side fails a test.
func TestShardOfGolden(t *testing.T) {
	for _, tc := range []struct {
		vni  uint32
		ip   string
		want uint32
	}{
		{1, "10.0.0.1", 3135},
		{1, "10.0.0.2", 3924},
		{7, "10.1.2.3", 2570},
		{16777215, "192.168.255.254", 787},
	} {
		k := Key{VNI: tc.vni, IP: netip.MustParseAddr(tc.ip)}
		if got := k.Shard(4096); got != tc.want {
			t.Errorf("shard of %s = %d, want %d", k, got, tc.want)
		}
	}
	// Spread: 1M consecutive keys over 4096 shards look binomial (mean
	// 256, sd 16): all within ±30%.
	counts := make([]int, 4096)
	for i := range uint32(1 << 20) {
		counts[ShardOf(5, 0x0a000000|i, 4096)]++
	}
	if lo, hi := slices.Min(counts), slices.Max(counts); lo < 256*70/100 || hi > 256*130/100 {
		t.Fatalf("keys per shard in [%d, %d], mean 256", lo, hi)
	}
}

func BenchmarkPlacement(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		ms := members(n)
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := NewPlacement(ms, DefaultShards, DefaultReplicas); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkShardOf(b *testing.B) {
	var s uint32
	for i := 0; b.Loop(); i++ {
		s += ShardOf(7, uint32(i), DefaultShards)
	}
	_ = s
}

// Next (incremental on one join or leave) gives exactly NewPlacement's
// result along a random walk of joins, leaves and bigger changes.
func TestPlacementNextEqualsFull(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pool := members(60)
	live := slices.Clone(pool[:10])
	p := mustPlacement(t, live, 512, 3)
	for step := range 200 {
		switch k := rng.IntN(10); {
		case k < 4 && len(live) < len(pool): // join
			for {
				m := pool[rng.IntN(len(pool))]
				if !slices.ContainsFunc(live, func(l Member) bool { return l.Name == m.Name }) {
					live = append(live, m)
					break
				}
			}
		case k < 8 && len(live) > 1: // leave
			i := rng.IntN(len(live))
			live = slices.Delete(live, i, i+1)
		default: // several at once, or an address change
			live[rng.IntN(len(live))].RPC = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 2}), uint16(step))
		}
		rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
		q, err := p.Next(live)
		if err != nil {
			t.Fatal(err)
		}
		want := mustPlacement(t, live, 512, 3)
		if !slices.Equal(q.holders, want.holders) || !slices.Equal(q.Members(), want.Members()) || q.Replicas() != want.Replicas() {
			t.Fatalf("step %d (%d members): incremental placement differs from a full one", step, len(live))
		}
		for _, m := range want.Members() {
			if !slices.Equal(q.ShardsOf(m.Name), want.ShardsOf(m.Name)) {
				t.Fatalf("step %d: ShardsOf(%s) differs", step, m.Name)
			}
		}
		p = q
	}
}

func BenchmarkPlacementNext(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		ms := members(n + 1)
		p := mustPlacement(b, ms[:n], 1<<16, 3)
		b.Run(fmt.Sprintf("nodes=%d/shards=65536/join", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := p.Next(ms); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("nodes=%d/shards=65536/leave", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := p.Next(ms[1:n]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
