package datapath

import "testing"

// TestPrivilegedEgressManyFlows: 3000 flows of one pod to one outside
// address and port all get a port (a fill of two thirds of the range;
// with a fixed probe stride, flow 1981 found its 16 candidates taken).
func TestPrivilegedEgressManyFlows(t *testing.T) {
	d := newEgressWorld(t)
	delta := dropDelta(t, d, func() {
		for sport := uint16(20000); sport < 23000; sport++ {
			in := geneveFrame(nodeB, vniRed, tcpIP(ip3, sport, extIP, 80, tcpSYN, nil), geneveOpts{})
			if ret, _ := runSKB(t, d.uplink.FromUplink, in, uplinkIdx); ret != tcActRedirect {
				t.Fatalf("flow %d: verdict %d", sport, ret)
			}
		}
	})
	if len(delta) != 0 {
		t.Fatalf("drops %v", delta)
	}
}
