package agent

import (
	"fmt"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/datapath"
)

func TestNextHopState(t *testing.T) {
	for _, c := range []struct {
		neigh string
		err   error
		want  string
	}{
		{"REACHABLE", nil, peerReachable},
		{"STALE", nil, peerReachable},
		{"PROBE", nil, peerReachable},
		{"PERMANENT", nil, peerReachable},
		{"NONE", nil, peerUnresolved},
		{"INCOMPLETE", nil, peerUnresolved},
		{"FAILED", nil, peerFailed},
		{"", fmt.Errorf("lookup: %w", datapath.ErrNoNextHop), peerNoRoute},
		{"", fmt.Errorf("netlink: permission denied"), peerFailed},
	} {
		if got := nextHopState(datapath.NextHop{Neighbour: c.neigh}, c.err); got != c.want {
			t.Errorf("nextHopState(%q, %v) = %s, want %s", c.neigh, c.err, got, c.want)
		}
	}
}
