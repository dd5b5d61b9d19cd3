package cli

import "testing"

func TestNextHops(t *testing.T) {
	for _, c := range []struct {
		m    map[string]float64
		want string
	}{
		{map[string]float64{"genie_endpoints": 1}, ""},
		{map[string]float64{`genie_underlay_peers{state="reachable"}`: 0, `genie_underlay_peers{state="failed"}`: 0}, "0/0 reachable"},
		{map[string]float64{
			`genie_underlay_peers{state="reachable"}`: 1, `genie_underlay_peers{state="failed"}`: 1, `genie_underlay_peers{state="no_route"}`: 1,
			`genie_underlay_peer_unreachable{node="node3"}`: 1, `genie_underlay_peer_unreachable{node="node2"}`: 1,
			`genie_underlay_peer_unreachable{node="node4"}`: 0,
		}, "1/3 reachable; not: node2, node3"},
	} {
		if got := nextHops(c.m); got != c.want {
			t.Errorf("nextHops(%v) = %q, want %q", c.m, got, c.want)
		}
	}
}
