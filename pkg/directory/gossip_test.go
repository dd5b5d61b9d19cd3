package directory

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// gossipMember is a bare memberlist member that records when each other
// member vanished from its live set.
type gossipMember struct {
	name string
	g    *Gossip
	mu   sync.Mutex
	seen map[string]bool
	gone map[string]time.Time
}

func startGossipMembers(t testing.TB, n int, base func() *memberlist.Config) []*gossipMember {
	t.Helper()
	var out []*gossipMember
	var seed []string
	for i := range n {
		gm := &gossipMember{name: fmt.Sprintf("gm-%03d", i), seen: map[string]bool{}, gone: map[string]time.Time{}}
		g, err := JoinGossip(GossipConfig{Name: gm.name, BindAddr: "127.0.0.1",
			RPC: netip.MustParseAddrPort("127.0.0.1:1"), Seeds: seed, OnChange: gm.observe, Memberlist: base()})
		if err != nil {
			t.Fatal(err)
		}
		gm.g = g
		t.Cleanup(g.Shutdown)
		// Join through the first member and the latest three, as a
		// rolling deploy would, so the joins spread.
		seed = append(seed, g.Addr())
		if len(seed) > 4 {
			seed = append(seed[:1], seed[len(seed)-3:]...)
		}
		out = append(out, gm)
	}
	deadline := time.Now().Add(120 * time.Second)
	for {
		var counts []int
		full := true
		for _, gm := range out {
			c := len(gm.g.Members())
			counts = append(counts, c)
			full = full && c == n
		}
		if full {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no full membership of %d after 120s: members seen per node %v", n, counts)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return out
}

func (gm *gossipMember) observe(ms []Member) {
	now := time.Now()
	gm.mu.Lock()
	defer gm.mu.Unlock()
	live := map[string]bool{}
	for _, m := range ms {
		live[m.Name] = true
		gm.seen[m.Name] = true
	}
	for name := range gm.seen {
		if !live[name] {
			if _, ok := gm.gone[name]; !ok {
				gm.gone[name] = now
			}
		} else {
			delete(gm.gone, name)
		}
	}
}

func (gm *gossipMember) goneAt(name string) (time.Time, bool) {
	gm.mu.Lock()
	defer gm.mu.Unlock()
	t, ok := gm.gone[name]
	return t, ok
}

// BenchmarkGossipDetection crashes one member per iteration (memberlist
// shut down without leaving) in a cluster of real memberlist instances
// on 127.0.0.1 with FastLANConfig, and reports how long the first
// survivor (detect) and the last (converge) took to drop it, and how
// many live members any survivor wrongly dropped (false-deaths).
// config=fast is FastLANConfig, config=default memberlist's
// DefaultLANConfig, the baseline. GENIE_GOSSIP_MEMBERS sets the cluster
// size (default 50).
func BenchmarkGossipDetection(b *testing.B) {
	n := 50
	if v, err := strconv.Atoi(os.Getenv("GENIE_GOSSIP_MEMBERS")); err == nil && v > 2 {
		n = v
	}
	for _, cfg := range []struct {
		name string
		base func() *memberlist.Config
	}{{"fast", FastLANConfig}, {"default", memberlist.DefaultLANConfig}} {
		b.Run(fmt.Sprintf("members=%d/config=%s", n, cfg.name), func(b *testing.B) { benchDetection(b, n, cfg.base) })
	}
}

func benchDetection(b *testing.B, n int, base func() *memberlist.Config) {
	{
		ms := startGossipMembers(b, n, base)
		var detect, converge []time.Duration
		dead := map[string]bool{}
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if len(dead) >= n/2 {
				b.Fatal("more iterations than half the cluster; use -benchtime Nx with N < members/2")
			}
			victim := ms[1+i*7%(n-1)]
			for dead[victim.name] {
				victim = ms[1+(slices.Index(ms, victim))%(n-1)]
			}
			dead[victim.name] = true
			killed := time.Now()
			victim.g.Shutdown()
			var first, last time.Duration
			waitFor(b, 30*time.Second, "all survivors drop "+victim.name, func() bool {
				first, last = time.Duration(1<<62), 0
				for _, gm := range ms {
					if dead[gm.name] {
						continue
					}
					at, ok := gm.goneAt(victim.name)
					if !ok {
						return false
					}
					first, last = min(first, at.Sub(killed)), max(last, at.Sub(killed))
				}
				return true
			})
			detect, converge = append(detect, first), append(converge, last)
			time.Sleep(300 * time.Millisecond) // let the dead gossip settle
		}
		b.StopTimer()
		falseDeaths := 0
		for _, gm := range ms {
			if dead[gm.name] {
				continue
			}
			for _, o := range ms {
				if _, ok := gm.goneAt(o.name); ok && !dead[o.name] {
					falseDeaths++
				}
			}
		}
		med := func(d []time.Duration) float64 {
			s := slices.Clone(d)
			sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
			return float64(s[len(s)/2].Milliseconds())
		}
		b.ReportMetric(med(detect), "detect-p50-ms")
		b.ReportMetric(float64(slices.Max(detect).Milliseconds()), "detect-max-ms")
		b.ReportMetric(med(converge), "converge-p50-ms")
		b.ReportMetric(float64(slices.Max(converge).Milliseconds()), "converge-max-ms")
		b.ReportMetric(float64(falseDeaths), "false-deaths")
		b.ReportMetric(0, "ns/op")
	}
}

// Gossip.Alive, the liveness other features use: a crashed member stops
// being alive within seconds, a member that started alone and then Joins
// becomes alive for the others.
func TestGossipAliveAndJoin(t *testing.T) {
	ms := startGossipMembers(t, 3, FastLANConfig)
	for _, gm := range ms {
		for _, other := range ms {
			if !gm.g.Alive(other.name) {
				t.Fatalf("%s does not see %s alive", gm.name, other.name)
			}
		}
	}
	if ms[0].g.Alive("nobody") {
		t.Fatal("an unknown node is alive")
	}
	// A fourth member starts alone, then joins.
	lone, err := JoinGossip(GossipConfig{Name: "gm-lone", BindAddr: "127.0.0.1", RPC: netip.MustParseAddrPort("127.0.0.1:1")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lone.Shutdown)
	if ms[0].g.Alive("gm-lone") {
		t.Fatal("a member that has not joined is alive")
	}
	if n, err := lone.Join([]string{ms[1].g.Addr()}); err != nil || n != 1 {
		t.Fatalf("join: %d, %v", n, err)
	}
	if _, err := lone.Join([]string{"127.0.0.1:1"}); err == nil {
		t.Error("joining a dead address succeeded")
	}
	waitFor(t, 10*time.Second, "gm-lone alive everywhere", func() bool {
		for _, gm := range ms {
			if !gm.g.Alive("gm-lone") {
				return false
			}
		}
		return lone.Alive("gm-000")
	})
	ms[2].g.Shutdown() // a crash: no leave
	waitFor(t, 15*time.Second, "gm-002 not alive", func() bool {
		return !ms[0].g.Alive("gm-002") && !lone.Alive("gm-002")
	})
}
