package datapath

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
)

// The directory's fuzz targets run the programs in the directory world
// (directory_test.go) and assert isolation: whatever the frame, a pod's
// packet leaves only encapsulated with the sender's VNI, to the node its
// destination lives on or to a holder of the destination's shard; a frame
// from the underlay is delivered only to a pod of its VNI, from a source
// that lives on the claimed node (or a source nobody here knows, from a
// member), and forwarded only to the node a held record names, unchanged
// inside.

// dirKnown is what the directory world knows of {vni, ip}, beyond the
// fixture endpoints: learned and held records.
func dirKnown(vni uint32, ip netip.Addr) (node netip.Addr, mac net.HardwareAddr, held, ok bool) {
	if vni != vniRed {
		return netip.Addr{}, nil, false, false
	}
	switch ip {
	case ipLearned:
		return nodeB, macLearned, false, true
	case ipLearnedC:
		return nodeC, macLearned, false, true
	case ipHeld, ipHeldB:
		return nodeB, macHeld, true, true
	case ipHeldD:
		return nodeD, macHeldD, true, true
	}
	return netip.Addr{}, nil, false, false
}

// dirHolders is the directory world's shard table.
func dirHolders(vni uint32, ip netip.Addr) []netip.Addr {
	s := shardOf(vni, ip)
	for _, g := range goldens {
		if s == g.shard {
			return []netip.Addr{g.holder}
		}
	}
	switch s {
	case shardOf(vniRed, ipUnknown):
		return []netip.Addr{nodeA, nodeB}
	case shardOf(vniRed, ipSelfOnly):
		return []netip.Addr{nodeA}
	case shardOf(vniRed, ip1):
		return []netip.Addr{nodeB, nodeC}
	}
	return nil
}

func isMember(ip netip.Addr) bool {
	return ip == nodeA || ip == nodeB || ip == nodeC || ip == nodeD
}

func FuzzDirectoryLxc(f *testing.F) {
	d := newDirectoryWorld(f)
	for _, s := range lxcSeedFrames() {
		f.Add(s.sender, s.frame)
	}
	for _, ip := range []netip.Addr{ipLearned, ipHeld, ipUnknown, ipSelfOnly} {
		f.Add(uint8(0), podIP(redA.MAC, ip1, ip, ipOpts{}))
	}
	f.Fuzz(func(t *testing.T, sel uint8, pkt []byte) {
		sender, out, ok := fuzzFromPod(t, d.lxc.FromPod, sel, pkt)
		if !ok {
			return
		}
		if len(out) != len(pkt)+EncapOverhead || len(out) < 64+20 {
			checkLxcOutput(t, sender, pkt, out) // local delivery, ARP, ICMP
			return
		}
		vni := uint32(out[46])<<16 | uint32(out[47])<<8 | uint32(out[48])
		if vni != sender.VNI || out[23] != protoUDP || binary.BigEndian.Uint16(out[36:38]) != GenevePort {
			t.Fatalf("encapsulated with vni %d for a sender in vni %d: %x", vni, sender.VNI, out[:64])
		}
		inner := out[64:]
		if addr4(inner[12:16]) != sender.IP {
			t.Fatalf("inner source %s, sender is %s", addr4(inner[12:16]), sender.IP)
		}
		to, dst := addr4(out[30:34]), addr4(inner[16:20])
		if bytes.Equal(out[56:62], bounceMAC(0x67, nodeA)) {
			for _, h := range dirHolders(vni, dst) {
				if h == to && h != nodeA {
					return
				}
			}
			t.Fatalf("bounced %s of vni %d to %s, not a holder of its shard", dst, vni, to)
		}
		if e, ok := findEndpoint(vni, dst); ok && !e.local && e.nodeIP == to && bytes.Equal(out[50:56], e.mac) {
			return
		}
		if node, mac, _, ok := dirKnown(vni, dst); ok && node == to && bytes.Equal(out[50:56], mac) {
			return
		}
		t.Fatalf("encapsulated %s of vni %d to %s (mac %x): not where it lives", dst, vni, to, out[50:56])
	})
}

func FuzzDirectoryUplink(f *testing.F) {
	d := newDirectoryWorld(f)
	anyMAC := mustMAC("0a:00:00:00:00:99")
	for _, fx := range uplinkFixtures() {
		f.Add(fx.in)
	}
	for _, in := range [][]byte{
		dirFrame(nodeB, vniRed, make(net.HardwareAddr, 6), bounceMAC(0x67, nodeB), innerUDP(ip3, ipHeldD)),
		dirFrame(nodeB, vniRed, anyMAC, bounceMAC(0x67, nodeB), innerUDP(ip3, ip1)),
		dirFrame(nodeB, vniRed, redA.MAC, bounceMAC(0x68, nodeC), innerUDP(ip9, ip1)),
		dirFrame(nodeB, vniBlue, redA.MAC, bounceMAC(0x68, nodeC), innerUDP(ip9, ip1)),
		dirFrame(nodeB, vniRed, redA.MAC, anyMAC, innerUDP(netip.MustParseAddr("10.0.0.50"), ip1)),
		dirFrame(nodeB, vniRed, redA.MAC, anyMAC, innerUDP(ipLearned, ip1)),
	} {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if kernelRejects(pkt) {
			return
		}
		ret, out := runSKB(t, d.uplink.FromUplink, pkt, uplinkIdx)
		switch ret {
		case tcxNext, tcActShot:
			if !bytes.Equal(out, pkt) {
				t.Fatalf("passed or dropped frame was modified")
			}
			return
		case tcActRedirect:
		default:
			t.Fatalf("unexpected verdict %d", int32(ret))
		}
		if len(pkt) < 64+20 || addr4(pkt[30:34]) != nodeA {
			t.Fatalf("redirected a frame that is not geneve to this node: %x", pkt)
		}
		vni := uint32(pkt[46])<<16 | uint32(pkt[47])<<8 | uint32(pkt[48])
		outerSrc := addr4(pkt[26:30])
		if len(out) == len(pkt) {
			// Forwarded by this holder: to the held record's node,
			// same VNI, inner IP packet untouched, marked bounced.
			node, mac, held, ok := dirKnown(vni, addr4(pkt[64+16:64+20]))
			if !ok || !held || addr4(out[30:34]) != node || !bytes.Equal(out[50:56], mac) ||
				!bytes.Equal(out[46:49], pkt[46:49]) || !bytes.Equal(out[64:], pkt[64:]) ||
				!bytes.Equal(out[56:62], bounceMAC(0x68, outerSrc)) {
				t.Fatalf("forwarded wrongly\n in %x\nout %x", pkt[:64], out[:64])
			}
			return
		}
		if len(out) != len(pkt)-EncapOverhead {
			t.Fatalf("delivered %d bytes from a %d byte frame", len(out), len(pkt))
		}
		dst, ok := findEndpoint(vni, addr4(out[30:34]))
		if !ok || !dst.local || !bytes.Equal(out[0:6], dst.mac) {
			t.Fatalf("vni %d delivered to a pod outside that vpc: %x", vni, out[:34])
		}
		claimed := outerSrc
		if pkt[56] == 0x06 && pkt[57] == 0x68 {
			claimed = addr4(pkt[58:62])
			ok := false
			for _, h := range dirHolders(vni, addr4(out[30:34])) {
				ok = ok || h == outerSrc
			}
			if !ok {
				t.Fatalf("accepted a bounced packet from %s, not a holder", outerSrc)
			}
		}
		src := addr4(out[26:30])
		if e, ok := findEndpoint(vni, src); ok {
			if e.local || e.nodeIP != claimed {
				t.Fatalf("vni %d accepted source %s from node %s", vni, src, claimed)
			}
		} else if node, _, _, ok := dirKnown(vni, src); ok {
			if node != claimed {
				t.Fatalf("vni %d accepted source %s (on %s) from node %s", vni, src, node, claimed)
			}
		} else if !isMember(claimed) {
			t.Fatalf("vni %d accepted unknown source %s from non-member %s", vni, src, claimed)
		}
		if !bytes.Equal(out[14:], pkt[64:]) {
			t.Fatalf("decapsulation modified the inner packet")
		}
	})
}
