package datapath

import (
	"net/netip"
	"testing"
)

type geneveOpts struct {
	ver, optLen, flags uint8
	proto              uint16 // 0: Ethernet (0x6558)
	fragOff            uint16
	dport              uint16 // 0: 6081
	outerDst           netip.Addr
}

// geneveFrame builds what node `from` sends to node A for a packet between
// two pods of VPC vni: outer eth/IPv4/UDP/Geneve, inner eth + innerIP.
func geneveFrame(from netip.Addr, vni uint32, innerIP []byte, o geneveOpts) []byte {
	if o.proto == 0 {
		o.proto = etherTEB
	}
	if o.dport == 0 {
		o.dport = GenevePort
	}
	if !o.outerDst.IsValid() {
		o.outerDst = nodeA
	}
	inner := cat(ethHdr(mustMAC("0a:00:00:00:00:99"), mustMAC("02:00:00:00:00:01"), etherIPv4), innerIP)
	udp := udpPkt(51000, o.dport, cat(geneveHdr(vni, o.ver, o.optLen, o.flags, o.proto), inner))
	return cat(ethHdr(uplinkMAC, nodeBMAC, etherIPv4), ipv4Pkt(from, o.outerDst, protoUDP, udp, ipOpts{fragOff: 0x4000 | o.fragOff}))
}

func innerUDP(src, dst netip.Addr) []byte {
	return ipv4Pkt(src, dst, protoUDP, udpPkt(40000, 5201, payload(48)), ipOpts{})
}

// uplinkFixtures are shared by the tc and the XDP program; xdpVerdict is what
// the prefilter must do with the same frame (it only drops Geneve that is
// malformed or for a VNI not hosted here; it never delivers).
type uplinkFixture struct {
	fixture
	xdpVerdict uint32
	xdpDrop    DropReason
}

func uplinkFixtures() []uplinkFixture {
	red3to1 := innerUDP(ip3, ip1)
	blue3to1 := innerUDP(ip3, ip1)
	blue2to1 := innerUDP(ip2, ip1)
	withProto := func(p []byte, ethertype uint16) []byte {
		p = append([]byte(nil), p...)
		p[50+12], p[50+13] = byte(ethertype>>8), byte(ethertype)
		return p
	}
	pass := func(name string, in []byte) uplinkFixture {
		return uplinkFixture{fixture: fixture{name: name, in: in, verdict: tcxNext}, xdpVerdict: xdpPass}
	}
	drop := func(name string, in []byte, tcReason, xdpReason DropReason) uplinkFixture {
		f := uplinkFixture{fixture: fixture{name: name, in: in, verdict: tcActShot, drop: tcReason}, xdpVerdict: xdpPass}
		if xdpReason != 0 {
			f.xdpVerdict, f.xdpDrop = xdpDrop, xdpReason
		}
		return f
	}
	return []uplinkFixture{
		{
			fixture: fixture{
				name:    "decap red 10.0.0.3 on B to red 10.0.0.1",
				in:      geneveFrame(nodeB, vniRed, red3to1, geneveOpts{}),
				verdict: tcActRedirect,
				out:     cat(ethHdr(redA.MAC, gwMAC, etherIPv4), red3to1),
			},
			xdpVerdict: xdpPass,
		},
		{
			// Same inner addresses, other VNI: must reach blue's 10.0.0.1.
			fixture: fixture{
				name:    "decap blue 10.0.0.3 on B to blue 10.0.0.1",
				in:      geneveFrame(nodeB, vniBlue, blue3to1, geneveOpts{}),
				verdict: tcActRedirect,
				out:     cat(ethHdr(blueA.MAC, gwMAC, etherIPv4), blue3to1),
			},
			xdpVerdict: xdpPass,
		},
		{
			fixture: fixture{
				name:    "decap blue 10.0.0.2 on B (an address local in red) to blue 10.0.0.1",
				in:      geneveFrame(nodeB, vniBlue, blue2to1, geneveOpts{}),
				verdict: tcActRedirect,
				out:     cat(ethHdr(blueA.MAC, gwMAC, etherIPv4), blue2to1),
			},
			xdpVerdict: xdpPass,
		},
		// Isolation / anti-forgery.
		drop("forged vni: red 10.0.0.2 is local here, not on B", geneveFrame(nodeB, vniRed, innerUDP(ip2, ip1), geneveOpts{}), DropForged, 0),
		drop("forged source node: red 10.0.0.3 lives on B, not C", geneveFrame(nodeC, vniRed, red3to1, geneveOpts{}), DropForged, 0),
		drop("unknown inner source", geneveFrame(nodeB, vniRed, innerUDP(netip.MustParseAddr("10.0.0.50"), ip1), geneveOpts{}), DropForged, 0),
		drop("unknown vni", geneveFrame(nodeB, vniNone, red3to1, geneveOpts{}), DropUnknownVNI, DropUnknownVNI),
		drop("destination not on this node", geneveFrame(nodeB, vniRed, innerUDP(ip9, ip3), geneveOpts{}), DropNotLocal, 0),
		drop("no such destination in the vpc", geneveFrame(nodeB, vniRed, innerUDP(ip3, netip.MustParseAddr("10.0.0.77")), geneveOpts{}), DropNoRoute, 0),
		// Malformed Geneve.
		drop("geneve version 1", geneveFrame(nodeB, vniRed, red3to1, geneveOpts{ver: 1}), DropGeneveMalformed, DropGeneveMalformed),
		drop("geneve with options", geneveFrame(nodeB, vniRed, red3to1, geneveOpts{optLen: 2}), DropGeneveMalformed, DropGeneveMalformed),
		drop("geneve oam", geneveFrame(nodeB, vniRed, red3to1, geneveOpts{flags: 0x80}), DropGeneveMalformed, DropGeneveMalformed),
		drop("geneve carrying ipv4 instead of ethernet", geneveFrame(nodeB, vniRed, red3to1, geneveOpts{proto: etherIPv4}), DropGeneveMalformed, DropGeneveMalformed),
		drop("first fragment of geneve", geneveFrame(nodeB, vniRed, red3to1, geneveOpts{fragOff: 0x2000}), DropGeneveMalformed, DropGeneveMalformed),
		drop("truncated geneve header", geneveFrame(nodeB, vniRed, nil, geneveOpts{})[:14+20+8+4], DropTruncated, DropTruncated),
		drop("truncated inner ipv4", geneveFrame(nodeB, vniRed, red3to1, geneveOpts{})[:14+50+10], DropTruncated, 0),
		drop("inner ipv6", withProto(geneveFrame(nodeB, vniRed, red3to1, geneveOpts{}), etherIPv6), DropUnsupportedL3, 0),
		// Not our overlay: continues untouched.
		pass("arp to the node", cat(ethHdr(mustMAC("ff:ff:ff:ff:ff:ff"), nodeBMAC, etherARP), arpPkt(1, nodeBMAC, nodeB, make([]byte, 6), nodeA))),
		pass("icmp to the node", cat(ethHdr(uplinkMAC, nodeBMAC, etherIPv4), ipv4Pkt(nodeB, nodeA, protoICMP, payload(56), ipOpts{}))),
		pass("udp 53 to the node", cat(ethHdr(uplinkMAC, nodeBMAC, etherIPv4), ipv4Pkt(nodeB, nodeA, protoUDP, udpPkt(5353, 53, payload(30)), ipOpts{}))),
		pass("tcp to the node", cat(ethHdr(uplinkMAC, nodeBMAC, etherIPv4), ipv4Pkt(nodeB, nodeA, protoTCP, payload(40), ipOpts{}))),
		pass("geneve to another address", geneveFrame(nodeB, vniRed, red3to1, geneveOpts{outerDst: nodeC})),
		pass("later fragment to our address", geneveFrame(nodeB, vniRed, red3to1, geneveOpts{fragOff: 0x0010})),
		pass("ipv6 on the underlay", cat(ethHdr(uplinkMAC, nodeBMAC, etherIPv6), payload(60))),
		pass("bare ethernet header", ethHdr(uplinkMAC, nodeBMAC, 0x88cc)),
	}
}

func TestPrivilegedUplinkFixtures(t *testing.T) {
	d := newWorld(t)
	var fixtures []fixture
	for _, f := range uplinkFixtures() {
		fixtures = append(fixtures, f.fixture)
	}
	runFixtures(t, d, fixtures, func(t *testing.T, f fixture) (uint32, []byte) {
		return runSKB(t, d.uplink.FromUplink, f.in, uplinkIdx)
	})
}

func TestPrivilegedUplinkPrefilterFixtures(t *testing.T) {
	d := newWorld(t)
	var fixtures []fixture
	for _, f := range uplinkFixtures() {
		fixtures = append(fixtures, fixture{name: f.name, in: f.in, verdict: f.xdpVerdict, drop: f.xdpDrop})
	}
	runFixtures(t, d, fixtures, func(t *testing.T, f fixture) (uint32, []byte) {
		return runXDP(t, d.uplink.UplinkPrefilter, f.in)
	})
}
