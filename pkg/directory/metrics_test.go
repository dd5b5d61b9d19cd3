package directory

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metricValue returns a counter's value, or a histogram's sample count,
// of the series of name whose labels include label=value ("" for none).
func metricValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				match = match || (lp.GetName() == label && lp.GetValue() == value)
			}
			if !match {
				continue
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// The looker's metrics count hits, misses, a failover and invalidations;
// the holders' count shard moves.
func TestNodeMetrics(t *testing.T) {
	regs := map[string]*prometheus.Registry{}
	c := newTestCluster(t, 5, 64, 3, func(cfg *Config) {
		reg := prometheus.NewRegistry()
		regs[cfg.Self.Name] = reg
		cfg.Registerer = reg
	})
	recs := putEndpoints(c.src, 100, c.live)
	c.waitSettled()
	looker := c.node("node-00000")
	reg := regs["node-00000"]
	p := looker.Placement()
	var k Record
	for _, r := range recs {
		if hs := p.HolderNames(r.Shard(64)); !slices.Contains(hs, "node-00000") {
			k = r
			c.net.Kill(hs[0])
			break
		}
	}
	if _, err := looker.Lookup(context.Background(), k.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := looker.Lookup(context.Background(), testKey(99999)); err == nil {
		t.Fatal("absent key found")
	}
	c.src.Put(Record{Key: k.Key, Node: "node-00003"})
	waitFor(t, 2*time.Second, "invalidation counted", func() bool {
		return metricValue(t, reg, "genie_directory_invalidations_received_total", "", "") == 1
	})
	for _, m := range []struct {
		name, label, value string
		want               float64
	}{
		{"genie_directory_lookups_total", "result", "hit", 1},
		{"genie_directory_lookups_total", "result", "miss", 1},
		{"genie_directory_lookup_attempts_total", "outcome", "error", 1},
		{"genie_directory_failover_seconds", "", "", 1},
		{"genie_directory_members", "", "", 5},
	} {
		if got := metricValue(t, reg, m.name, m.label, m.value); got != m.want {
			t.Errorf("%s{%s=%q} = %v, want %v", m.name, m.label, m.value, got, m.want)
		}
	}
	gained := 0.0
	for _, r := range regs {
		gained += metricValue(t, r, "genie_directory_shard_moves_total", "direction", "gained")
	}
	if gained != 64*3 {
		t.Errorf("shards gained over all nodes = %v, want 64*R = 192", gained)
	}
}
