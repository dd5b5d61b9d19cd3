package sandbox

import (
	"net/netip"
	"testing"
)

func TestRoutedUnderlayAddressing(t *testing.T) {
	s := &Sandbox{st: state{Underlay: UnderlayRouted}}
	for i, want := range map[int]string{1: "172.30.0.11", 2: "172.30.1.12", 3: "172.30.0.13", 4: "172.30.1.14"} {
		if got := nthAddr(segmentPrefix(s.nodeSegment(i)), 10+i); got != netip.MustParseAddr(want) {
			t.Errorf("routed node%d: %s, want %s", i, got, want)
		}
	}
	flat := &Sandbox{st: state{Underlay: UnderlayFlat}}
	if seg := flat.nodeSegment(2); seg != 0 {
		t.Errorf("flat node2 on segment %d, want 0", seg)
	}
	if got := nthAddr(segmentPrefix(1), routerAddr); got != netip.MustParseAddr("172.30.1.1") {
		t.Errorf("router on segment 1: %s", got)
	}
	for _, u := range []string{UnderlayFlat, UnderlayRouted} {
		if err := validateUnderlay(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	o := Options{Underlay: "vxlan", BinDir: t.TempDir()}
	if err := o.defaults(); err == nil {
		t.Error("an unknown underlay was accepted")
	}
}
