package datapath

import (
	"errors"
	"net/netip"
	"testing"
)

// LookupNextHop reports the fixture underlay as the FIB sees it: on-link
// resolved, on-link unresolved, routed, narrow route, unreachable.
func TestPrivilegedLookupNextHop(t *testing.T) {
	d := newWorld(t)
	for _, c := range []struct {
		peer        string
		gw, neigh   string
		mtu         int
		unreachable bool
	}{
		{peer: nodeB.String(), neigh: "PERMANENT"},
		{peer: nodeC.String(), neigh: "NONE"},
		{peer: nodeD.String(), gw: router.String(), neigh: "PERMANENT"},
		{peer: nodeF.String(), gw: router.String(), neigh: "PERMANENT", mtu: routeMTU},
		{peer: nodeE.String(), unreachable: true},
	} {
		var (
			nh  NextHop
			err error
		)
		inWorld(t, func() { nh, err = d.LookupNextHop(mustAddr(c.peer)) })
		if c.unreachable {
			if !errors.Is(err, ErrNoNextHop) {
				t.Errorf("%s: %+v, %v, want ErrNoNextHop", c.peer, nh, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.peer, err)
			continue
		}
		gw := ""
		if nh.Gateway.IsValid() {
			gw = nh.Gateway.String()
		}
		if gw != c.gw || nh.Neighbour != c.neigh || nh.MTU != c.mtu || nh.Ifindex != d.cfg.UplinkIfindex {
			t.Errorf("%s: %+v, want gateway %q neighbour %s mtu %d on ifindex %d", c.peer, nh, c.gw, c.neigh, c.mtu, d.cfg.UplinkIfindex)
		}
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
