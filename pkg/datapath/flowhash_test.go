package datapath

import (
	"encoding/binary"
	"testing"
)

// TestPrivilegedLxcEncapSourcePort checks the outer UDP source port of
// hashless packets (BPF_PROG_RUN skbs carry no skb->hash, like unconnected
// UDP or forwarded traffic in a pod): stable for one flow, spread over
// flows, and depending on the ports (not only on the addresses), so that
// ECMP/RSS on the underlay can tell a pod's flows apart.
func TestPrivilegedLxcEncapSourcePort(t *testing.T) {
	d := newWorld(t)
	sportOf := func(srcPort uint16, proto uint8) uint16 {
		t.Helper()
		// TCP starts with the same two ports, which is all the hash reads.
		l4 := udpPkt(srcPort, 5201, payload(32))
		in := cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipv4Pkt(ip1, ip3, proto, l4, ipOpts{}))
		ret, out := runSKB(t, d.lxc.FromPod, in, redA.HostIfindex)
		if ret != tcActRedirect || len(out) < 36 {
			t.Fatalf("flow from port %d: verdict %d, %d bytes: not encapsulated", srcPort, int32(ret), len(out))
		}
		return binary.BigEndian.Uint16(out[34:36])
	}

	if a, b := sportOf(40000, protoUDP), sportOf(40000, protoUDP); a != b {
		t.Errorf("one flow got two source ports: %d and %d", a, b)
	}
	seen := map[uint16]bool{}
	const flows = 64
	for i := range flows {
		p := sportOf(uint16(30000+i), protoUDP)
		if p < 49152 {
			t.Errorf("source port %d not in 49152-65535", p)
		}
		seen[p] = true
	}
	// 64 flows over 16384 ports: a collision or two is fine, a constant is not.
	if len(seen) < flows-4 {
		t.Errorf("64 flows that differ only in their source port got %d distinct outer ports, want >= %d", len(seen), flows-4)
	}
	if sportOf(40000, protoUDP) == sportOf(40000, protoTCP) && sportOf(40001, protoUDP) == sportOf(40001, protoTCP) {
		t.Errorf("the protocol does not reach the hash")
	}
}
