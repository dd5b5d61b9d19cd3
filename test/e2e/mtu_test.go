package e2e

import (
	"context"
	"net/netip"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
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

// TestPrivilegedVPCMTU: a VPC's own MTU sets its pods' interface MTU on
// every node; a VPC without one gets the cluster's (1500 - 50).
func TestPrivilegedVPCMTU(t *testing.T) {
	sb := newSandbox(t, 2)
	ctx := context.Background()
	st, err := sb.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, v := range []vpc.VPC{
		{Name: "small", CIDR: netip.MustParsePrefix("10.20.0.0/16"), MTU: 1280},
		{Name: "dflt", CIDR: netip.MustParsePrefix("10.21.0.0/16")},
	} {
		if _, err := st.CreateVPC(ctx, v); err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: v.Name, Name: "web", CIDR: netip.PrefixFrom(v.CIDR.Addr(), 24)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		pod, node, net string
		want           int
	}{
		{"s1", "node1", "small/web", 1280},
		{"s2", "node2", "small/web", 1280},
		{"d1", "node1", "dflt/web", 1450},
	} {
		p := addPod(t, sb, c.pod, c.node, c.net)
		if got := linkMTU(t, p.Netns, "eth0"); got != c.want {
			t.Errorf("pod %s in %s: eth0 mtu %d, want %d", c.pod, c.net, got, c.want)
		}
	}
	s1, s2 := sb.Pods()[1], sb.Pods()[2]
	mustReach(t, "small vpc across nodes", ep(s1, ""), ep(s2, ""), ipOf(t, s2, "eth0"), 8300)
}

func linkMTU(t *testing.T, path, name string) int {
	t.Helper()
	h, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	l, err := nl.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().MTU
}
