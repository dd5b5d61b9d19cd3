package cli

import (
	"fmt"
	"sort"
	"strings"
)

// nextHops summarises an agent's underlay next hop metrics
// (genie_underlay_peers, genie_underlay_peer_unreachable) for the NEXT
// HOPS column of geniectl status: "2/2 reachable", or with the peers whose
// next hop does not resolve, "1/3 reachable; not: node-b, node-c". It is
// "" when the agent exports no such metric (an older agent).
func nextHops(m map[string]float64) string {
	const peers, unreach = `genie_underlay_peers{state="`, `genie_underlay_peer_unreachable{node="`
	total, ok, seen := 0, 0, false
	var bad []string
	for k, v := range m {
		switch {
		case strings.HasPrefix(k, peers):
			seen = true
			total += int(v)
			if k == peers+`reachable"}` {
				ok = int(v)
			}
		case strings.HasPrefix(k, unreach) && v != 0:
			bad = append(bad, strings.TrimSuffix(strings.TrimPrefix(k, unreach), `"}`))
		}
	}
	if !seen {
		return ""
	}
	s := fmt.Sprintf("%d/%d reachable", ok, total)
	if len(bad) > 0 {
		sort.Strings(bad)
		s += "; not: " + strings.Join(bad, ", ")
	}
	return s
}
