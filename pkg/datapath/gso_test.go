package datapath

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
)

// Offsets in struct __sk_buff (linux/bpf.h) of the fields BPF_PROG_RUN
// copies into the test skb's shared info.
const (
	skbGSOSegsOff = 164
	skbGSOSizeOff = 176
)

// gsoCtx is an __sk_buff context for a GSO packet of segs segments of
// size bytes of payload, received on ingressIfindex.
func gsoCtx(ingressIfindex int, segs, size uint32) []byte {
	b := make([]byte, skbGSOSizeOff+4)
	copy(b, skbCtxBytes(ingressIfindex))
	binary.NativeEndian.PutUint32(b[skbGSOSegsOff:], segs)
	binary.NativeEndian.PutUint32(b[skbGSOSizeOff:], size)
	return b
}

// For a GSO packet the path MTU check is about one segment (inner headers
// plus gso_size), not the super-packet: a 2 KB TCP super-packet whose
// segments fit the 1200-byte route to F is encapsulated; one whose
// segments do not is answered with an ICMP fragmentation needed.
//
// BPF_PROG_RUN can set gso_size but not gso_type, and bpf_skb_adjust_room
// refuses to encapsulate a GSO skb of no known type: past the MTU check the
// "fitting" packet ends as ENCAP_FAILED here. What the case checks is that
// the MTU check let it through (no FRAG_NEEDED, no ICMP): judged by its
// total length (2 KB), it would not have. The e2e path MTU test sends real
// GSO traffic.
func TestPrivilegedLxcGSOPathMTU(t *testing.T) {
	d := newWorld(t)
	// payload(...)'s byte 12 is 0x57: a TCP data offset of 5 (20 bytes).
	pkt := cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipv4Pkt(ip1, ipF, protoTCP, payload(2000), ipOpts{fragOff: 0x4000}))
	fits := uint32(routeMTU - EncapOverhead - 20 - 20) // 1110: segment of exactly 1200 outer bytes
	for _, c := range []struct {
		name    string
		size    uint32
		grow    int
		verdict uint32
		drop    DropReason
	}{
		{"segments fit the path", fits, 0, tcActShot, DropEncapFailed},
		{"segments one byte too big", fits + 1, 70 - len(pkt), tcActRedirect, DropFragNeeded},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+256), Context: gsoCtx(redA.HostIfindex, 2, c.size)}
			var (
				ret uint32
				err error
			)
			delta := dropDelta(t, d, func() { inWorld(t, func() { ret, err = d.lxc.FromPod.Run(opts) }) })
			if err != nil {
				t.Fatalf("BPF_PROG_RUN: %v", err)
			}
			if ret != c.verdict || len(opts.DataOut) != len(pkt)+c.grow {
				t.Errorf("verdict %d, %d bytes out; want %d, %d bytes", int32(ret), len(opts.DataOut), int32(c.verdict), len(pkt)+c.grow)
			}
			if len(delta) != 1 || delta[c.drop] != 1 {
				t.Errorf("drop counters changed by %v, want %v", delta, c.drop)
			}
		})
	}
}
