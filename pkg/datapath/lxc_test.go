package datapath

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
)

type fixture struct {
	name    string
	ifindex int    // ingress ifindex (lxc only)
	in      []byte // input frame
	verdict uint32
	out     []byte                   // expected output frame (nil: same as input)
	check   func(*testing.T, []byte) // extra checks on the output (encap)
	drop    DropReason               // expected counter (0: none may change)
}

func runFixtures(t *testing.T, d *Datapath, fixtures []fixture, run func(*testing.T, fixture) (uint32, []byte)) {
	t.Helper()
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			var (
				ret uint32
				out []byte
			)
			delta := dropDelta(t, d, func() { ret, out = run(t, f) })
			if ret != f.verdict {
				t.Errorf("verdict = %d, want %d", int32(ret), int32(f.verdict))
			}
			want := f.out
			if want == nil {
				want = f.in
			}
			if f.check != nil {
				f.check(t, out)
			} else if !bytes.Equal(out, want) {
				t.Errorf("output frame differs\n got %x\nwant %x", out, want)
			}
			wantDelta := map[DropReason]uint64{}
			if f.drop != 0 {
				wantDelta[f.drop] = 1
			}
			if fmt.Sprint(delta) != fmt.Sprint(wantDelta) {
				t.Errorf("drop counters changed by %v, want %v", delta, wantDelta)
			}
		})
	}
}

// podIP builds the frame a pod sends: to the gateway MAC.
func podIP(srcMAC net.HardwareAddr, src, dst netip.Addr, o ipOpts) []byte {
	return cat(ethHdr(gwMAC, srcMAC, etherIPv4), ipv4Pkt(src, dst, protoUDP, udpPkt(40000, 5201, payload(64)), o))
}

// encapCheck verifies every byte of an encapsulated frame: outer headers
// built from the fixture world (outer MACs: the uplink's and nextHopMAC,
// as the FIB resolved them), the UDP source port in the ephemeral range
// (it is a flow hash), and the inner frame.
func encapCheck(vni uint32, nextHopMAC net.HardwareAddr, dstNode netip.Addr, innerDstMAC net.HardwareAddr, innerIP []byte, tos uint8) func(*testing.T, []byte) {
	return encapCheckMACs(vni, nextHopMAC, uplinkMAC, dstNode, innerDstMAC, innerIP, tos)
}

// encapCheckMACs is encapCheck with the outer source MAC given too.
func encapCheckMACs(vni uint32, dstNodeMAC, srcMAC net.HardwareAddr, dstNode netip.Addr, innerDstMAC net.HardwareAddr, innerIP []byte, tos uint8) func(*testing.T, []byte) {
	return func(t *testing.T, out []byte) {
		t.Helper()
		if len(out) != EncapOverhead+14+len(innerIP) {
			t.Fatalf("encapsulated length %d, want %d", len(out), EncapOverhead+14+len(innerIP))
		}
		sport := binary.BigEndian.Uint16(out[34:36])
		if sport < 49152 {
			t.Errorf("udp source port %d not in 49152-65535", sport)
		}
		inner := cat(ethHdr(innerDstMAC, gwMAC, etherIPv4), innerIP)
		udp := udpPkt(sport, GenevePort, cat(geneveHdr(vni, 0, 0, 0, etherTEB), inner))
		want := cat(ethHdr(dstNodeMAC, srcMAC, etherIPv4),
			ipv4Pkt(nodeA, dstNode, protoUDP, udp, ipOpts{tos: tos, fragOff: 0x4000}))
		if !bytes.Equal(out, want) {
			t.Errorf("encapsulated frame differs\n got %x\nwant %x", out, want)
		}
		if got := out[14+10 : 14+12]; csum16(out[14:34]) != 0 {
			t.Errorf("outer ipv4 checksum %x does not verify", got)
		}
		if got := uint32(out[46])<<16 | uint32(out[47])<<8 | uint32(out[48]); got != vni {
			t.Errorf("vni %d, want %d", got, vni)
		}
	}
}

func TestPrivilegedLxcFixtures(t *testing.T) {
	d := newWorld(t)
	prog := d.lxc.FromPod

	ipRedAToRedB := ipv4Pkt(ip1, ip2, protoUDP, udpPkt(40000, 5201, payload(64)), ipOpts{})
	ipRedAToR := ipv4Pkt(ip1, ip3, protoTCP, payload(100), ipOpts{tos: 0xb8})
	ipBlueAToB := ipv4Pkt(ip1, ip2, protoUDP, udpPkt(40000, 5201, payload(64)), ipOpts{})
	arpReq := func(sha net.HardwareAddr, spa, tpa netip.Addr) []byte {
		return cat(ethHdr(mustMAC("ff:ff:ff:ff:ff:ff"), sha, etherARP), arpPkt(1, sha, spa, make(net.HardwareAddr, 6), tpa))
	}
	ipRedAToC := ipv4Pkt(ip1, ip9, protoUDP, udpPkt(40000, 5201, payload(64)), ipOpts{})
	ipRedAToD := ipv4Pkt(ip1, ipD, protoUDP, udpPkt(40000, 5201, payload(64)), ipOpts{})
	// Route MTU 1200 to F: 1150 bytes of inner IPv4 fit, 1151 do not.
	ipFits := ipv4Pkt(ip1, ipF, protoTCP, payload(routeMTU-EncapOverhead-20), ipOpts{fragOff: 0x4000})
	ipTooBig := ipv4Pkt(ip1, ipF, protoTCP, payload(routeMTU-EncapOverhead-20+1), ipOpts{fragOff: 0x4000})
	ipTooBigNoDF := ipv4Pkt(ip1, ipF, protoUDP, udpPkt(40000, 5201, payload(routeMTU)), ipOpts{})
	zeroMAC := make(net.HardwareAddr, 6)
	gwFor := netip.MustParseAddr("10.0.0.254")
	anyIP := netip.MustParseAddr("198.51.100.7")

	fixtures := []fixture{
		{
			name: "local delivery red 10.0.0.1 to red 10.0.0.2", ifindex: redA.HostIfindex,
			in:      cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipRedAToRedB),
			verdict: tcActRedirect,
			out:     cat(ethHdr(redB.MAC, gwMAC, etherIPv4), ipRedAToRedB),
		},
		{
			name: "encap red 10.0.0.1 to remote red 10.0.0.3", ifindex: redA.HostIfindex,
			in:      cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipRedAToR),
			verdict: tcActRedirect,
			check:   encapCheck(vniRed, nodeBMAC, nodeB, redR.MAC, ipRedAToR, 0xb8),
		},
		{
			// Same addresses as the local red delivery, but blue's 10.0.0.2
			// is remote: the VNI of the interface decides, never the packet.
			name: "same ip in blue goes to blue's remote 10.0.0.2, not red's local", ifindex: blueA.HostIfindex,
			in:      cat(ethHdr(gwMAC, blueA.MAC, etherIPv4), ipBlueAToB),
			verdict: tcActRedirect,
			check:   encapCheck(vniBlue, nodeBMAC, nodeB, blueB.MAC, ipBlueAToB, 0),
		},
		{
			name: "arp request for the gateway is answered", ifindex: redA.HostIfindex,
			in:      arpReq(redA.MAC, ip1, gwFor),
			verdict: tcActRedirect,
			out:     cat(ethHdr(redA.MAC, gwMAC, etherARP), arpPkt(2, gwMAC, gwFor, redA.MAC, ip1)),
		},
		{
			name: "arp request for any address is answered with the gateway mac", ifindex: blueA.HostIfindex,
			in:      cat(arpReq(blueA.MAC, ip1, anyIP), make([]byte, 18)), // padded to 60 bytes
			verdict: tcActRedirect,
			out:     cat(ethHdr(blueA.MAC, gwMAC, etherARP), arpPkt(2, gwMAC, anyIP, blueA.MAC, ip1), make([]byte, 18)),
		},
		{
			name: "arp reply from pod dropped", ifindex: redA.HostIfindex,
			in:      cat(ethHdr(gwMAC, redA.MAC, etherARP), arpPkt(2, redA.MAC, ip1, gwMAC, gwFor)),
			verdict: tcActShot, drop: DropARP,
		},
		{
			name: "gratuitous arp dropped", ifindex: redA.HostIfindex,
			in: arpReq(redA.MAC, ip1, ip1), verdict: tcActShot, drop: DropARP,
		},
		{
			name: "arp probe (sender 0.0.0.0) dropped", ifindex: redA.HostIfindex,
			in: arpReq(redA.MAC, netip.IPv4Unspecified(), ip2), verdict: tcActShot, drop: DropARP,
		},
		{
			name: "arp with spoofed sender ip", ifindex: redA.HostIfindex,
			in: arpReq(redA.MAC, ip2, gwFor), verdict: tcActShot, drop: DropSpoofedIP,
		},
		{
			name: "arp with spoofed sender hardware address", ifindex: redA.HostIfindex,
			in:      cat(ethHdr(mustMAC("ff:ff:ff:ff:ff:ff"), redA.MAC, etherARP), arpPkt(1, redB.MAC, ip1, make(net.HardwareAddr, 6), gwFor)),
			verdict: tcActShot, drop: DropSpoofedMAC,
		},
		{
			name: "arp with spoofed ethernet source", ifindex: redA.HostIfindex,
			in: arpReq(redB.MAC, ip1, gwFor), verdict: tcActShot, drop: DropSpoofedMAC,
		},
		{
			name: "truncated arp", ifindex: redA.HostIfindex,
			in:      cat(ethHdr(gwMAC, redA.MAC, etherARP), arpPkt(1, redA.MAC, ip1, gwMAC, gwFor)[:20]),
			verdict: tcActShot, drop: DropTruncated,
		},
		{
			name: "spoofed source ip", ifindex: redA.HostIfindex,
			in: podIP(redA.MAC, ip2, ip3, ipOpts{}), verdict: tcActShot, drop: DropSpoofedIP,
		},
		{
			name: "spoofed source mac", ifindex: redA.HostIfindex,
			in: podIP(redB.MAC, ip1, ip2, ipOpts{}), verdict: tcActShot, drop: DropSpoofedMAC,
		},
		{
			// blue 10.0.0.1 and red 10.0.0.1 share the address: blue still
			// cannot use red's MAC.
			name: "blue pod with red pod's mac and the shared ip", ifindex: blueA.HostIfindex,
			in: podIP(redA.MAC, ip1, ip2, ipOpts{}), verdict: tcActShot, drop: DropSpoofedMAC,
		},
		{
			name: "unknown endpoint ifindex", ifindex: 4242,
			in: podIP(redA.MAC, ip1, ip2, ipOpts{}), verdict: tcActShot, drop: DropUnknownEndpoint,
		},
		{
			name: "no route in the vpc", ifindex: redA.HostIfindex,
			in: podIP(redA.MAC, ip1, netip.MustParseAddr("10.0.0.77"), ipOpts{}), verdict: tcActShot, drop: DropNoRoute,
		},
		{
			name: "no route outside the vpc", ifindex: redA.HostIfindex,
			in: podIP(redA.MAC, ip1, anyIP, ipOpts{}), verdict: tcActShot, drop: DropNoRoute,
		},
		{
			// The neighbour is not resolved: no MACs yet, redirect_neigh
			// (same verdict) lets the kernel resolve it and fill them in.
			name: "remote node with an unresolved neighbour", ifindex: redA.HostIfindex,
			in:      cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipRedAToC),
			verdict: tcActRedirect,
			check:   encapCheckMACs(vniRed, zeroMAC, zeroMAC, nodeC, redC.MAC, ipRedAToC, 0),
		},
		{
			name: "remote node behind a router: outer dst mac is the router's", ifindex: redA.HostIfindex,
			in:      cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipRedAToD),
			verdict: tcActRedirect,
			check:   encapCheck(vniRed, routerMAC, nodeD, redD.MAC, ipRedAToD, 0),
		},
		{
			name: "remote node without a route", ifindex: redA.HostIfindex,
			in: podIP(redA.MAC, ip1, ipE, ipOpts{}), verdict: tcActShot, drop: DropNoNextHop,
		},
		{
			name: "fits the small path mtu once encapsulated", ifindex: redA.HostIfindex,
			in:      cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipFits),
			verdict: tcActRedirect,
			check:   encapCheck(vniRed, routerMAC, nodeF, redF.MAC, ipFits, 0),
		},
		{
			name: "too big for the path with DF: icmp fragmentation needed back to the pod", ifindex: redA.HostIfindex,
			in:      cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipTooBig),
			verdict: tcActRedirect, drop: DropFragNeeded,
			out: cat(ethHdr(redA.MAC, gwMAC, etherIPv4), ipv4Pkt(ipF, ip1, protoICMP,
				icmpFragNeeded(uint16(routeMTU-EncapOverhead), ipTooBig[:28]), ipOpts{tos: 0xc0})),
		},
		{
			name: "too big for the path without DF: dropped, no icmp", ifindex: redA.HostIfindex,
			in: cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipTooBigNoDF), verdict: tcActShot, drop: DropFragNeeded,
		},
		// BPF_PROG_RUN refuses frames shorter than 14 bytes and IPv4
		// frames shorter than an IPv4 header before the program runs, so
		// truncation is exercised through the header length field.
		{
			name: "ipv4 header length beyond the frame", ifindex: redA.HostIfindex,
			in: func() []byte {
				p := cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipv4Pkt(ip1, ip2, protoUDP, nil, ipOpts{}))
				p[14] = 0x4f // 60-byte header, 20 present
				return p
			}(),
			verdict: tcActShot, drop: DropTruncated,
		},
		{
			name: "ipv4 ihl below 5", ifindex: redA.HostIfindex,
			in: func() []byte {
				p := podIP(redA.MAC, ip1, ip2, ipOpts{})
				p[14] = 0x44
				return p
			}(),
			verdict: tcActShot, drop: DropTruncated,
		},
		{
			name: "ipv6 is unsupported", ifindex: redA.HostIfindex,
			in:      cat(ethHdr(gwMAC, redA.MAC, etherIPv6), payload(60)),
			verdict: tcActShot, drop: DropUnsupportedL3,
		},
		{
			name: "ipv6 from unknown ifindex is unknown endpoint first", ifindex: 4242,
			in:      cat(ethHdr(gwMAC, redA.MAC, etherIPv6), payload(60)),
			verdict: tcActShot, drop: DropUnknownEndpoint,
		},
	}
	runFixtures(t, d, fixtures, func(t *testing.T, f fixture) (uint32, []byte) {
		return runSKB(t, prog, f.in, f.ifindex)
	})
}
