package e2e

import (
	"context"
	"os"
	"testing"

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
