package e2e

import (
	"context"
	"os"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"golang.org/x/sys/unix"
)

// TestPrivilegedPodVanishesBeforeDel: a pod whose namespace disappears
// before the runtime's DEL (a crashed runtime, a reboot) leaks nothing:
// DEL still succeeds, its endpoint leaves the store, and its address is
// handed out again.
func TestPrivilegedPodVanishesBeforeDel(t *testing.T) {
	sb := newSandbox(t, 2)
	mkVPC(t, sb, "blue", "10.10.0.0/16", "10.10.1.0/24")
	a := addPod(t, sb, "a", "node1", "blue/web")
	b := addPod(t, sb, "b", "node2", "blue/web")
	ipA := ipOf(t, a, "eth0")
	mustReach(t, "a->b", ep(a, ""), ep(b, ""), ipOf(t, b, "eth0"), 8000)

	// The namespace vanishes under the runtime's feet.
	if err := unix.Unmount(a.Netns, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(a.Netns); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := sb.PodDel(ctx, "a"); err != nil {
		t.Fatalf("DEL after the netns vanished: %v", err)
	}
	st, err := sb.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eps, _, err := st.ListEndpoints(ctx, "blue")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range eps {
		if e.IP == ipA {
			t.Errorf("endpoint %s (%s) still in the store after DEL", e.ID, e.IP)
		}
	}
	// The address is free again: the next pod on node1 gets it.
	c := addPod(t, sb, "c", "node1", "blue/web")
	if got := ipOf(t, c, "eth0"); got != ipA {
		t.Errorf("next pod on node1 got %s, want the freed %s", got, ipA)
	}
	mustReach(t, "b->c", ep(b, ""), ep(c, ""), ipOf(t, c, "eth0"), 8002)
}

// TestPrivilegedMixedOverlayAndDelegate: one pod gets an overlay interface
// and a delegated one (the reference bridge plugin, through genie) at
// once; each reaches its own peers, and DEL removes both.
func TestPrivilegedMixedOverlayAndDelegate(t *testing.T) {
	sb := newSandbox(t, 2)
	if _, ok := sandbox.TestCNIBinDir(); !ok {
		t.Skip("needs the CNI reference plugins (hack/build-test-bins.sh)")
	}
	mkVPC(t, sb, "blue", "10.10.0.0/16", "10.10.1.0/24")
	m := addPod(t, sb, "m", "node1", "blue/web", sandbox.DelegateNetwork+"@net9")
	peer := addPod(t, sb, "peer", "node1", sandbox.DelegateNetwork)
	remote := addPod(t, sb, "remote", "node2", "blue/web")
	if len(m.Interfaces) != 2 {
		t.Fatalf("pod m: want 2 interfaces, got %+v", m.Interfaces)
	}
	mustReach(t, "m/eth0 -> remote (overlay)", ep(m, "eth0"), ep(remote, ""), ipOf(t, remote, "eth0"), 8000)
	mustReach(t, "m/net9 -> peer (bridge plugin)", ep(m, "net9"), ep(peer, ""), ipOf(t, peer, "eth0"), 8002)
	mustNotReach(t, "remote -> peer (bridge network is not in the VPC)", ep(remote, ""), ep(peer, ""), ipOf(t, peer, "eth0"), 8004)
	ctx := context.Background()
	netns := m.Netns
	if err := sb.PodDel(ctx, "m"); err != nil {
		t.Fatalf("DEL of the mixed pod: %v", err)
	}
	if _, err := os.Stat(netns); err == nil {
		t.Error("pod netns still there after DEL")
	}
}

// TestPrivilegedAgentDownAndPartition: with a node's agent stopped its
// pods keep their connectivity (the pinned data plane forwards alone); a
// partitioned node is unreachable and comes back when healed.
func TestPrivilegedAgentDownAndPartition(t *testing.T) {
	sb := newSandbox(t, 3)
	mkVPC(t, sb, "blue", "10.10.0.0/16", "10.10.1.0/24")
	a := addPod(t, sb, "a", "node1", "blue/web")
	b := addPod(t, sb, "b", "node2", "blue/web")
	ctx := context.Background()
	if err := sb.StopAgent("node1", true); err != nil {
		t.Fatal(err)
	}
	mustReach(t, "a->b with node1's agent down", ep(a, ""), ep(b, ""), ipOf(t, b, "eth0"), 8000)
	mustReach(t, "b->a with node1's agent down", ep(b, ""), ep(a, ""), ipOf(t, a, "eth0"), 8002)
	if _, err := sb.PodAdd(ctx, "c", "node1", []string{"blue/web"}); err == nil {
		t.Error("ADD succeeded on a node without agent")
	}
	if err := sb.StartAgent(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	c := addPod(t, sb, "c", "node1", "blue/web")
	mustReach(t, "b->c after the agent is back", ep(b, ""), ep(c, ""), ipOf(t, c, "eth0"), 8004)

	if err := sb.SetUplink("node2", false); err != nil {
		t.Fatal(err)
	}
	mustNotReach(t, "a->b with node2 partitioned", ep(a, ""), ep(b, ""), ipOf(t, b, "eth0"), 8006)
	if err := sb.SetUplink("node2", true); err != nil {
		t.Fatal(err)
	}
	mustReach(t, "a->b healed", ep(a, ""), ep(b, ""), ipOf(t, b, "eth0"), 8008)
}
