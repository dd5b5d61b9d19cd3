package agent

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// TestEgressAddrLabel: the label fits Linux's 15 bytes and starts with the
// device's name, or there is none.
func TestEgressAddrLabel(t *testing.T) {
	for in, want := range map[string]string{
		"eth0":            "eth0:genie",
		"enp0s31f6":       "enp0s31f6:genie",
		"enp0s20f0u1":     "enp0s20f0u1:g",
		"enp0s20f0u1u2":   "enp0s20f0u1u2:g",
		"enp0s20f0u1u2i3": "",
	} {
		if got := egressAddrLabel(in); got != want {
			t.Errorf("egressAddrLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPrivilegedEgressAddrAdopted: a dedicated egress address the agent
// added to the uplink is found again from the uplink alone (an upgrade may
// have rebuilt the gateway map that used to say so), the operator's own
// /32 is not, and removal takes the agent's away.
func TestPrivilegedEgressAddrAdopted(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode (make test-unit)")
	}
	testenv.RequireRoot(t, "creates a network namespace")
	node, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = node.Close(); _ = testutils.UnmountNS(node) }()
	name := "upl" + testenv.RandSuffix()
	a := &Agent{cfg: Config{Uplink: name}}
	mine, theirs := netip.MustParseAddr("192.0.2.50"), netip.MustParseAddr("192.0.2.51")
	err = node.Do(func(ns.NetNS) error {
		// A veth: this kernel has no dummy module.
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			return err
		}
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: theirs.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		if err := a.uplinkAddr(mine, true); err != nil {
			return err
		}
		if err := a.uplinkAddr(mine, true); err != nil {
			t.Errorf("adding again: %v", err)
		}
		got, err := a.ownedUplinkAddrs()
		if err != nil {
			return err
		}
		if !slices.Equal(got, []netip.Addr{mine}) {
			t.Errorf("adopted %v, want [%s] (not the operator's %s)", got, mine, theirs)
		}
		if err := a.uplinkAddr(mine, false); err != nil {
			return err
		}
		if got, err = a.ownedUplinkAddrs(); err != nil || len(got) != 0 {
			t.Errorf("after removal: %v, %v", got, err)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || !addrs[0].IP.Equal(theirs.AsSlice()) {
			t.Errorf("left on the uplink: %v, want the operator's %s only", addrs, theirs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
