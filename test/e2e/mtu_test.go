package e2e

import (
	"context"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
)

// TestPrivilegedPathMTU: on a routed underlay whose router forwards into
// each segment with a smaller MTU (1300) than the nodes' uplinks (1500),
// a TCP transfer much bigger than that MTU crosses nodes both ways. The
// pods' MTU (1450) lets them send 1450-byte packets, which the router
// refuses with ICMP "fragmentation needed" about the outer packet; the
// node learns the path MTU from it, the data plane drops the next
// oversized packet (FRAG_NEEDED, counted) and answers the pod with its own
// ICMP, and the pod's TCP lowers its MSS instead of blackholing.
func TestPrivilegedPathMTU(t *testing.T) {
	sb := newSandboxOn(t, 2, sandbox.UnderlayRouted)
	const routerMTU = 1300
	for seg := range sandbox.RoutedSegments {
		if err := sb.SetRouterMTU(seg, routerMTU); err != nil {
			t.Fatal(err)
		}
	}
	mkVPC(t, sb, "blue", "10.10.0.0/16", "10.10.1.0/24")
	// Two pairs, one per direction: a pod that has learnt the path MTU
	// advertises the lower MSS, so its peer's replies would fit anyway.
	a := addPod(t, sb, "a", "node1", "blue/web")
	b := addPod(t, sb, "b", "node2", "blue/web")
	c := addPod(t, sb, "c", "node2", "blue/web")
	d := addPod(t, sb, "d", "node1", "blue/web")
	ctx := context.Background()
	before := map[string]float64{}
	for _, n := range []string{"node1", "node2"} {
		v, err := sb.Drops(ctx, n, "FRAG_NEEDED")
		if err != nil {
			t.Fatal(err)
		}
		before[n] = v
	}
	transfer(t, ep(a, ""), ep(b, ""), ipOf(t, b, "eth0"), 4<<20)
	transfer(t, ep(c, ""), ep(d, ""), ipOf(t, d, "eth0"), 4<<20)
	for _, n := range []string{"node1", "node2"} {
		v, err := sb.Drops(ctx, n, "FRAG_NEEDED")
		if err != nil {
			t.Fatal(err)
		}
		if v <= before[n] {
			t.Errorf("%s: FRAG_NEEDED drops %v -> %v: the oversized packets were not caught by the data plane", n, before[n], v)
		}
	}
	// Small packets were never affected, and still flow.
	mustReach(t, "a->b after the transfer", ep(a, ""), ep(b, ""), ipOf(t, b, "eth0"), 8200)
}
