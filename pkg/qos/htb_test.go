package qos

import (
	"testing"

	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
)

// TestPrivilegedTree installs the tree on a veth in a fresh netns and reads
// it back: the classes, their rates, priorities and quantum, a pod class,
// re-installation keeping the pod class, and the metrics.
func TestPrivilegedTree(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	testenv.RequireRoot(t, "creates a netns and qdiscs")
	n := testenv.NewNS(t)
	err := n.Do(func(ns.NetNS) error {
		name := "qt" + testenv.RandSuffix()
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			return err
		}
		link, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		const rate = 500_000_000
		tree, err := Install(link, rate)
		if err != nil {
			return err
		}
		// A pod with an MTU of 1600: HTB counts 64 bytes more per packet,
		// so its ceil is 20 Mbit/s * 1664/1600 = 20.8 Mbit/s.
		minor, err := tree.AddPod(Low, 20_000_000, 1600)
		if err != nil {
			return err
		}
		if minor != 0x100 {
			t.Errorf("first pod minor %#x, want 0x100", minor)
		}
		check := func(wantPod bool) {
			t.Helper()
			classes, err := netlink.ClassList(link, Handle(0))
			if err != nil {
				t.Fatal(err)
			}
			got := map[uint32]*netlink.HtbClass{}
			for _, c := range classes {
				if h, ok := c.(*netlink.HtbClass); ok {
					got[h.Handle] = h
				}
			}
			want := map[uint32][3]uint64{ // rate, ceil (bytes/s), prio
				Handle(1):    {rate / 8, rate / 8, 0},
				Handle(0x10): {rate / 8 * 80 / 100, rate / 8, 0},
				Handle(0x20): {rate / 8 * 15 / 100, rate / 8, 1},
				Handle(0x30): {rate / 8 * 5 / 100, rate / 8, 2},
			}
			if wantPod {
				want[Handle(0x100)] = [3]uint64{20_800_000 / 8, 20_800_000 / 8, 2}
			}
			if len(got) != len(want) {
				t.Errorf("%d classes, want %d: %v", len(got), len(want), got)
			}
			for h, w := range want {
				c := got[h]
				if c == nil {
					t.Errorf("class %x missing", h)
					continue
				}
				if c.Rate != w[0] || c.Ceil != w[1] || c.Prio != uint32(w[2]) {
					t.Errorf("class %x rate %d ceil %d prio %d, want %v", h, c.Rate, c.Ceil, c.Prio, w)
				}
				if h != Handle(1) && c.Quantum != Quantum {
					t.Errorf("class %x quantum %d, want %d", h, c.Quantum, Quantum)
				}
			}
		}
		check(true)
		// Re-installing (an agent restart) keeps the pod class and its minor.
		tree.Close()
		tree, err = Install(link, rate)
		if err != nil {
			return err
		}
		check(true)
		if m, err := tree.AddPod(High, 1_000_000, 1450); err != nil || m != 0x101 {
			t.Errorf("second pod minor %#x, %v; want 0x101 (0x100 still in use)", m, err)
		}
		// After a crash: 0x101 belongs to no attachment any more.
		if pruned, err := tree.Prune(map[uint16]bool{minor: true}); err != nil || len(pruned) != 1 || pruned[0] != 0x101 {
			t.Errorf("Prune = %#x, %v; want [0x101]", pruned, err)
		}
		check(true)
		if m, err := tree.AddPod(High, 1_000_000, 1450); err != nil || m != 0x101 {
			t.Errorf("pod minor after prune %#x, %v; want 0x101 (free again)", m, err)
		}
		if err := tree.DeletePod(0x101); err != nil {
			return err
		}
		if got := testutil.CollectAndCount(NewCollector(tree)); got != 4*5 {
			t.Errorf("%d metrics, want 20 (4 counters x 5 classes)", got)
		}
		if err := tree.DeletePod(minor); err != nil {
			return err
		}
		if err := tree.DeletePod(minor); err != nil {
			t.Errorf("deleting twice: %v", err)
		}
		check(false)
		qs, _ := netlink.QdiscList(link)
		for _, q := range qs {
			if q.Attrs().Parent == netlink.HANDLE_ROOT && q.Type() != "htb" {
				t.Errorf("root qdisc %s, want htb", q.Type())
			}
		}
		tree.Close()
		if err := Remove(link); err != nil {
			return err
		}
		if cs, _ := netlink.ClassList(link, Handle(0)); len(cs) != 0 {
			t.Errorf("classes left after Remove: %d", len(cs))
		}
		return Remove(link)
	})
	if err != nil {
		t.Fatal(err)
	}
}
