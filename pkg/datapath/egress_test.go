package datapath

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// The egress fixtures run on the fixture world (world_test.go) with egress
// state on top. Node A (this node) is a gateway of red and of blue, with
// its underlay address as the egress address of both; the outside
// (203.0.113.0/24, 198.51.100.0/24) lies behind the underlay router.
//
//	red  10.0.0.0/24 internal; 0.0.0.0/0 -> policy 1 (gateway B);
//	     198.51.100.0/24 -> route 9: red 10.0.0.1 selected for policy 1,
//	     nobody else (red 10.0.0.2: EGRESS_NOT_SELECTED);
//	     192.0.2.0/24 -> policy 3 (no active gateway, C draining)
//	blue 10.0.0.0/24 internal; 203.0.113.0/24 -> policy 2 (gateway A
//	     itself: SNAT in from_pod); nothing else (198.51.100.7: NO_ROUTE)
//
// Expected frames are built from scratch with the translated addresses and
// ports; their checksums are computed here over the whole packet, so a
// byte-equal output proves the incremental updates right.
var (
	extIP   = netip.MustParseAddr("203.0.113.10")
	extIP2  = netip.MustParseAddr("198.51.100.7")
	docIP   = netip.MustParseAddr("192.0.2.5")
	egressA = nodeA
)

func newEgressWorld(tb testing.TB) *Datapath {
	tb.Helper()
	d := newWorld(tb)
	inNS(tb, worldNS, func() error {
		for _, dst := range []string{"203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24"} {
			r := netlink.Route{LinkIndex: d.cfg.UplinkIfindex, Dst: prefixNet(dst), Gw: router.AsSlice()}
			if err := netlink.RouteAdd(&r); err != nil {
				return err
			}
		}
		return nil
	})
	pfx := netip.MustParsePrefix
	for _, r := range []VPCRoute{
		{VNI: vniRed, Prefix: pfx("10.0.0.0/24"), Kind: RouteInternal},
		{VNI: vniRed, Prefix: pfx("0.0.0.0/0"), Kind: RouteEgress, Policy: 1},
		{VNI: vniRed, Prefix: pfx("198.51.100.0/24"), Kind: RouteEgress, Route: 9},
		{VNI: vniRed, Prefix: pfx("192.0.2.0/24"), Kind: RouteEgress, Policy: 3},
		{VNI: vniBlue, Prefix: pfx("10.0.0.0/24"), Kind: RouteInternal},
		{VNI: vniBlue, Prefix: pfx("203.0.113.0/24"), Kind: RouteEgress, Policy: 2},
	} {
		if err := d.UpsertVPCRoute(r); err != nil {
			tb.Fatal(err)
		}
	}
	if err := d.UpsertEgressSelection(EgressSelection{Route: 9, Pod: ip1, Policy: 1}); err != nil {
		tb.Fatal(err)
	}
	for id, g := range map[uint32]EgressGatewaySet{
		1: {Active: []netip.Addr{nodeB}},
		2: {Active: []netip.Addr{nodeA}},
		3: {Draining: []netip.Addr{nodeC}},
	} {
		if err := d.UpsertEgressPolicy(id, g); err != nil {
			tb.Fatal(err)
		}
	}
	for _, vni := range []uint32{vniRed, vniBlue} {
		if err := d.UpsertEgressGateway(vni, egressA); err != nil {
			tb.Fatal(err)
		}
	}
	return d
}

// snatOf returns the SNAT address and port the gateway gave the flow
// whose forward tuple is t (fails the test if there is none).
func snatOf(t *testing.T, d *Datapath, tu Tuple) netip.AddrPort {
	t.Helper()
	entries, err := d.Conntrack()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Tuple == tu && e.Egress && e.SNAT {
			return e.SrcNAT
		}
	}
	t.Fatalf("no egress snat entry for %s", tu)
	return netip.AddrPort{}
}

// outFrame is what a gateway sends to the outside: to the router.
func outFrame(ip []byte) []byte { return cat(ethHdr(routerMAC, uplinkMAC, etherIPv4), ip) }

// fromOutside is a frame from the outside to the node (through the router).
func fromOutside(ip []byte) []byte { return cat(ethHdr(uplinkMAC, routerMAC, etherIPv4), ip) }

// icmpEcho builds an ICMP echo request (typ 8) or reply (0) with a correct
// checksum.
func icmpEcho(typ uint8, id, seq uint16, data []byte) []byte {
	b := make([]byte, 8, 8+len(data))
	b[0] = typ
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	b = append(b, data...)
	binary.BigEndian.PutUint16(b[2:], csum16(b))
	return b
}

func icmpIP(src, dst netip.Addr, typ uint8, id uint16) []byte {
	return ipv4Pkt(src, dst, protoICMP, icmpEcho(typ, id, 7, payload(33)), ipOpts{id: 0x5555})
}

// checkEgressOut checks a frame a gateway sent out: every byte of want
// except the SNAT port, which must be port, and the checksums.
func checkEgressOut(want []byte) func(*testing.T, []byte) {
	return checkedOut(outFrame(want), 14)
}

func runLxc(d *Datapath) func(*testing.T, fixture) (uint32, []byte) {
	return func(t *testing.T, f fixture) (uint32, []byte) { return runSKB(t, d.lxc.FromPod, f.in, f.ifindex) }
}

func runUplink(d *Datapath) func(*testing.T, fixture) (uint32, []byte) {
	return func(t *testing.T, f fixture) (uint32, []byte) { return runSKB(t, d.uplink.FromUplink, f.in, uplinkIdx) }
}

// TestPrivilegedEgressPodFixtures: the pod's node side.
func TestPrivilegedEgressPodFixtures(t *testing.T) {
	d := newEgressWorld(t)
	syn := tcpIP(ip1, 40000, extIP, 443, tcpSYN, nil)
	toSel := udpIP(ip1, 40001, extIP2, 53, payload(20))
	toUnsel := udpIP(ip2, 40001, extIP2, 53, payload(20))
	gre := ipv4Pkt(ip1, extIP, 47, payload(24), ipOpts{})
	frag := ipv4Pkt(ip1, extIP, protoUDP, udpPkt(40002, 53, payload(16)), ipOpts{fragOff: 0x2000})
	runFixtures(t, d, []fixture{
		{
			name: "red 10.0.0.1 to the outside is encapsulated to its gateway b", ifindex: redA.HostIfindex,
			in: frame(gwMAC, redA.MAC, syn), verdict: tcActRedirect,
			check: encapCheck(vniRed, nodeBMAC, nodeB, gwMAC, syn, 0),
		},
		{
			name: "red 10.0.0.1 is selected for 198.51.100.0/24: gateway b", ifindex: redA.HostIfindex,
			in: frame(gwMAC, redA.MAC, toSel), verdict: tcActRedirect,
			check: encapCheck(vniRed, nodeBMAC, nodeB, gwMAC, toSel, 0),
		},
		{
			name: "red 10.0.0.2 is not selected for 198.51.100.0/24: counted drop", ifindex: redB.HostIfindex,
			in: frame(gwMAC, redB.MAC, toUnsel), verdict: tcActShot, drop: DropEgressNotSelected,
		},
		{
			name: "blue has no route to 198.51.100.7: no route, as without egress", ifindex: blueA.HostIfindex,
			in: frame(gwMAC, blueA.MAC, udpIP(ip1, 40001, extIP2, 53, payload(20))), verdict: tcActShot, drop: DropNoRoute,
		},
		{
			name: "an unknown address inside red's cidr stays a no-route drop", ifindex: redA.HostIfindex,
			in: frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, netip.MustParseAddr("10.0.0.77"), 80, tcpSYN, nil)), verdict: tcActShot, drop: DropNoRoute,
		},
		{
			name: "policy 3 has only a draining gateway: no new flow", ifindex: redA.HostIfindex,
			in: frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, docIP, 80, tcpSYN, nil)), verdict: tcActShot, drop: DropEgressNoGateway,
		},
		{
			name: "gre to the outside is unsupported", ifindex: redA.HostIfindex,
			in: frame(gwMAC, redA.MAC, gre), verdict: tcActShot, drop: DropEgressUnsupported,
		},
		{
			name: "a fragment to the outside is unsupported", ifindex: redA.HostIfindex,
			in: frame(gwMAC, redA.MAC, frag), verdict: tcActShot, drop: DropEgressUnsupported,
		},
	}, runLxc(d))

	// Blue's gateway is this node: SNAT right in from_pod, out to the router.
	t.Run("blue 10.0.0.1 is snated here, its gateway being this node", func(t *testing.T) {
		in := frame(gwMAC, blueA.MAC, tcpIP(ip1, 40000, extIP, 443, tcpSYN, nil))
		ret, out := runSKB(t, d.lxc.FromPod, in, blueA.HostIfindex)
		if ret != tcActRedirect {
			t.Fatalf("verdict %d", ret)
		}
		nat := snatOf(t, d, Tuple{VNI: vniBlue, Src: ip1, Dst: extIP, SPort: 40000, DPort: 443, Proto: TCP})
		checkEgressOut(tcpIP(egressA, nat.Port(), extIP, 443, tcpSYN, nil))(t, out)
		// The reply goes straight into the blue pod.
		reply := tcpIP(extIP, 443, egressA, nat.Port(), tcpSYN|tcpACK, payload(9))
		ret, out = runSKB(t, d.uplink.FromUplink, fromOutside(reply), uplinkIdx)
		if ret != tcActRedirect {
			t.Fatalf("reply verdict %d", ret)
		}
		checkedOut(frame(blueA.MAC, gwMAC, tcpIP(extIP, 443, ip1, 40000, tcpSYN|tcpACK, payload(9))), 14)(t, out)
	})

	// The reply of red's flow through gateway B arrives from B in red's
	// VNI with an outside source: accepted because red 10.0.0.1 pinned
	// that flow to B; anything else with an outside source is FORGED.
	reply := tcpIP(extIP, 443, ip1, 40000, tcpSYN|tcpACK, nil)
	runFixtures(t, d, []fixture{
		{
			name:    "reply of a pinned flow from its gateway b is delivered",
			in:      geneveFrame(nodeB, vniRed, reply, geneveOpts{}),
			verdict: tcActRedirect, out: frame(redA.MAC, gwMAC, reply),
		},
		{
			name:    "the same reply from c (not the flow's gateway) is forged",
			in:      geneveFrame(nodeC, vniRed, reply, geneveOpts{}),
			verdict: tcActShot, drop: DropForged,
		},
		{
			name:    "the same reply in blue's vni is forged (blue pinned nothing to b)",
			in:      geneveFrame(nodeB, vniBlue, reply, geneveOpts{}),
			verdict: tcActShot, drop: DropForged,
		},
		{
			name:    "another port of the same outside host is forged",
			in:      geneveFrame(nodeB, vniRed, tcpIP(extIP, 443, ip1, 40009, tcpSYN|tcpACK, nil), geneveOpts{}),
			verdict: tcActShot, drop: DropForged,
		},
	}, runUplink(d))
}

// TestPrivilegedEgressGatewayFixtures: node A as the gateway of red and
// blue, whose pods on node B send the same tuple.
func TestPrivilegedEgressGatewayFixtures(t *testing.T) {
	d := newEgressWorld(t)
	data := payload(37) // odd: the checksum's last byte is padded
	redSyn := tcpIP(ip3, 40000, extIP, 80, tcpSYN, nil)
	redData := tcpIP(ip3, 40000, extIP, 80, tcpACK|tcpPSH, data)
	blueSyn := tcpIP(ip3, 40000, extIP, 80, tcpSYN, nil)
	redTuple := Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: 40000, DPort: 80, Proto: TCP}
	blueTuple := Tuple{VNI: vniBlue, Src: ip3, Dst: extIP, SPort: 40000, DPort: 80, Proto: TCP}

	step := func(name string, in []byte, verdict uint32, check func(*testing.T, []byte)) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			var (
				ret uint32
				out []byte
			)
			delta := dropDelta(t, d, func() { ret, out = runSKB(t, d.uplink.FromUplink, in, uplinkIdx) })
			if ret != verdict {
				t.Fatalf("verdict %d, want %d (drops %v)", int32(ret), int32(verdict), delta)
			}
			if len(delta) != 0 {
				t.Errorf("drop counters changed: %v", delta)
			}
			check(t, out)
		})
	}
	var redNAT, blueNAT netip.AddrPort
	step("red syn from b is decapsulated and snated to the egress address", geneveFrame(nodeB, vniRed, redSyn, geneveOpts{}), tcActRedirect,
		func(t *testing.T, out []byte) {
			redNAT = snatOf(t, d, redTuple)
			if redNAT.Addr() != egressA || redNAT.Port() < EgressPortMin {
				t.Fatalf("snat to %s, want %s and a port >= %d", redNAT, egressA, EgressPortMin)
			}
			checkEgressOut(tcpIP(egressA, redNAT.Port(), extIP, 80, tcpSYN, nil))(t, out)
		})
	step("blue syn with the same tuple gets another port", geneveFrame(nodeB, vniBlue, blueSyn, geneveOpts{}), tcActRedirect,
		func(t *testing.T, out []byte) {
			blueNAT = snatOf(t, d, blueTuple)
			if blueNAT == redNAT {
				t.Fatalf("blue and red share snat %s", blueNAT)
			}
			checkEgressOut(tcpIP(egressA, blueNAT.Port(), extIP, 80, tcpSYN, nil))(t, out)
		})
	step("red data keeps its port (odd payload)", geneveFrame(nodeB, vniRed, redData, geneveOpts{}), tcActRedirect,
		func(t *testing.T, out []byte) {
			checkEgressOut(tcpIP(egressA, redNAT.Port(), extIP, 80, tcpACK|tcpPSH, data))(t, out)
		})
	replyTo := func(p netip.AddrPort, d []byte) []byte {
		return fromOutside(tcpIP(extIP, 80, egressA, p.Port(), tcpSYN|tcpACK, d))
	}
	back := tcpIP(extIP, 80, ip3, 40000, tcpSYN|tcpACK, data)
	step("the reply to red's port goes back to red 10.0.0.3 on b in red's vni", replyTo(redNAT, data), tcActRedirect,
		func(t *testing.T, out []byte) {
			encapCheck(vniRed, nodeBMAC, nodeB, redR.MAC, back, 0)(t, out)
			if len(out) > 64+20 {
				verifyChecksums(t, out[64:])
			}
		})
	step("the reply to blue's port goes back to blue 10.0.0.3 on b in blue's vni", replyTo(blueNAT, data), tcActRedirect,
		func(t *testing.T, out []byte) {
			encapCheck(vniBlue, nodeBMAC, nodeB, blueR.MAC, back, 0)(t, out)
		})

	// UDP, with and without a checksum, and ICMP echo.
	udpIn := udpIP(ip3, 5353, extIP, 53, data)
	udpTuple := Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: 5353, DPort: 53, Proto: UDP}
	step("udp is snated", geneveFrame(nodeB, vniRed, udpIn, geneveOpts{}), tcActRedirect, func(t *testing.T, out []byte) {
		n := snatOf(t, d, udpTuple)
		checkEgressOut(ipv4Pkt(egressA, extIP, protoUDP, udpSeg(egressA, extIP, n.Port(), 53, data), ipOpts{id: 0x4321}))(t, out)
	})
	udpNoCsum := ipv4Pkt(ip3, extIP, protoUDP, udpPkt(5354, 53, data), ipOpts{})
	step("udp without a checksum stays without", geneveFrame(nodeB, vniRed, udpNoCsum, geneveOpts{}), tcActRedirect, func(t *testing.T, out []byte) {
		n := snatOf(t, d, Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: 5354, DPort: 53, Proto: UDP})
		checkEgressOut(ipv4Pkt(egressA, extIP, protoUDP, udpPkt(n.Port(), 53, data), ipOpts{}))(t, out)
	})
	icmpTuple := Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: 0x1234, DPort: 0, Proto: Protocol(protoICMP)}
	var icmpNAT netip.AddrPort
	step("icmp echo is snated, its identifier as the port", geneveFrame(nodeB, vniRed, icmpIP(ip3, extIP, 8, 0x1234), geneveOpts{}), tcActRedirect,
		func(t *testing.T, out []byte) {
			icmpNAT = snatOf(t, d, icmpTuple)
			if want := outFrame(icmpIP(egressA, extIP, 8, icmpNAT.Port())); string(out) != string(want) {
				t.Errorf("output frame differs\n got %x\nwant %x", out, want)
			}
			if csum16(out[14:34]) != 0 || csum16(out[34:]) != 0 { // icmp: no pseudo header
				t.Errorf("ipv4 or icmp checksum does not verify")
			}
		})
	step("the echo reply goes back with the pod's identifier", fromOutside(icmpIP(extIP, egressA, 0, 0x1234)), tcxNext,
		func(t *testing.T, out []byte) {}) // wrong id (the pod's, not the gateway's): not ours
	t.Run("the echo reply to the gateway's identifier", func(t *testing.T) {
		ret, out := runSKB(t, d.uplink.FromUplink, fromOutside(icmpIP(extIP, egressA, 0, icmpNAT.Port())), uplinkIdx)
		if ret != tcActRedirect {
			t.Fatalf("verdict %d", ret)
		}
		encapCheck(vniRed, nodeBMAC, nodeB, redR.MAC, icmpIP(extIP, ip3, 0, 0x1234), 0)(t, out)
	})

	// What is not ours passes, what is forged or denied is a counted drop.
	runFixtures(t, d, []fixture{
		{
			name: "a reply to an snat port nobody holds passes to the stack",
			in:   replyTo(netip.AddrPortFrom(egressA, 64999), nil), verdict: tcxNext,
		},
		{
			name: "the node's own traffic (ephemeral port) passes",
			in:   fromOutside(tcpIP(extIP, 80, egressA, 45000, tcpACK, nil)), verdict: tcxNext,
		},
		{
			name: "to an snat port of another address passes",
			in:   fromOutside(tcpIP(extIP, 80, netip.MustParseAddr("192.168.100.9"), redNAT.Port(), tcpACK, nil)), verdict: tcxNext,
		},
		{
			name: "red 10.0.0.3 lives on b, not c: forged", in: geneveFrame(nodeC, vniRed, redSyn, geneveOpts{}),
			verdict: tcActShot, drop: DropForged,
		},
		{
			name: "blue has no route to 198.51.100.7 here: denied", in: geneveFrame(nodeB, vniBlue, tcpIP(ip3, 1, extIP2, 80, tcpSYN, nil), geneveOpts{}),
			verdict: tcActShot, drop: DropEgressDenied,
		},
		{
			name: "an unknown address inside red is no egress: no route", in: geneveFrame(nodeB, vniRed, tcpIP(ip3, 1, netip.MustParseAddr("10.0.0.77"), 80, tcpSYN, nil), geneveOpts{}),
			verdict: tcActShot, drop: DropNoRoute,
		},
		{
			name: "gre through the gateway is unsupported", in: geneveFrame(nodeB, vniRed, ipv4Pkt(ip3, extIP, 47, payload(24), ipOpts{}), geneveOpts{}),
			verdict: tcActShot, drop: DropEgressUnsupported,
		},
	}, runUplink(d))
}

// egressHash mirrors egress_hash (bpf/lib/egress.h) over a tuple as the
// BPF side stores it, to predict SNAT port candidates.
func egressHash(tu Tuple) uint32 {
	k := struct{ saddr, daddr, sport, dport, proto, vni uint32 }{ip4(tu.Src), ip4(tu.Dst), uint32(htons(tu.SPort)), uint32(htons(tu.DPort)), uint32(tu.Proto), tu.VNI}
	h := k.saddr * 0x9e3779b1
	h ^= k.daddr
	h = (h<<13 | h>>19) * 0x85ebca6b
	h ^= (k.sport<<16 | k.dport) ^ k.proto ^ k.vni
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

func egressMix(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// egressCandidate mirrors the i-th SNAT port candidate of egress_snat_prepare
// on the node's own address.
func egressCandidate(tu Tuple, i uint32) uint16 {
	return egressCandidateIn(tu, i, EgressPortMin)
}

// egressCandidateIn is egressCandidate for the port range min-65535.
func egressCandidateIn(tu Tuple, i uint32, min uint32) uint16 {
	return uint16(min + egressMix(egressHash(tu)+i*0x9e3779b9)%(EgressPortMax-min+1))
}

// TestPrivilegedEgressDedicatedAddress: a dedicated egress address (not
// the node's own) SNATs from 1024-65535, and its replies come back.
func TestPrivilegedEgressDedicatedAddress(t *testing.T) {
	d := newEgressWorld(t)
	dedicated := netip.MustParseAddr("192.168.100.50")
	if err := d.UpsertEgressGateway(vniRed, dedicated); err != nil {
		t.Fatal(err)
	}
	tu := Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: 42000, DPort: 80, Proto: TCP}
	ret, out := runSKB(t, d.uplink.FromUplink, geneveFrame(nodeB, vniRed, tcpIP(ip3, 42000, extIP, 80, tcpSYN, nil), geneveOpts{}), uplinkIdx)
	if ret != tcActRedirect {
		t.Fatalf("verdict %d", ret)
	}
	port := egressCandidateIn(tu, 0, EgressPortFloor)
	if got := snatOf(t, d, tu); got != netip.AddrPortFrom(dedicated, port) {
		t.Fatalf("snat to %s, want %s:%d (the wide range's first candidate)", got, dedicated, port)
	}
	checkEgressOut(tcpIP(dedicated, port, extIP, 80, tcpSYN, nil))(t, out)
	ret, out = runSKB(t, d.uplink.FromUplink, fromOutside(tcpIP(extIP, 80, dedicated, port, tcpSYN|tcpACK, nil)), uplinkIdx)
	if ret != tcActRedirect {
		t.Fatalf("reply verdict %d", ret)
	}
	encapCheck(vniRed, nodeBMAC, nodeB, redR.MAC, tcpIP(extIP, 80, ip3, 42000, tcpSYN|tcpACK, nil), 0)(t, out)
	// The node's own address keeps the narrow range.
	if ret, _ := runSKB(t, d.uplink.FromUplink, fromOutside(tcpIP(extIP, 80, nodeA, port, tcpACK, nil)), uplinkIdx); port < EgressPortMin && ret != tcxNext {
		t.Errorf("a packet to the node's own address and port %d was taken (verdict %d)", port, ret)
	}
}

// occupy inserts a reply entry holding SNAT port port of the egress
// address towards dst:dport, as another flow would.
func occupy(t *testing.T, d *Datapath, proto Protocol, dst netip.Addr, dport, port uint16) {
	t.Helper()
	occupyUntil(t, d, proto, dst, dport, port, monotonicNow()+time.Hour, 0)
}

// occupyUntil is occupy with the reply entry expiring at exp and, if fwd
// is not 0, its forward partner (blue 10.0.0.9:1) expiring at fwd.
func occupyUntil(t *testing.T, d *Datapath, proto Protocol, dst netip.Addr, dport, port uint16, exp, fwd time.Duration) {
	t.Helper()
	k := lxcCtKey{Saddr: ip4(dst), Daddr: ip4(egressA), Sport: htons(dport), Dport: htons(port), Proto: uint8(proto)}
	v := lxcCtEntry{Flags: ctFlagReply | ctFlagDNAT | ctFlagEgress, Expires: uint64(exp), Vni: vniBlue, DstAddr: ip4(ip9), DstPort: htons(1)}
	if err := d.lxc.GenieCt.Put(&k, &v); err != nil {
		t.Fatal(err)
	}
	if fwd != 0 {
		fk := partnerKey(k, v)
		fv := lxcCtEntry{Flags: ctFlagSNAT | ctFlagEgress, Expires: uint64(fwd), Vni: vniBlue, SrcAddr: ip4(egressA), SrcPort: htons(port)}
		if err := d.lxc.GenieCt.Put(&fk, &fv); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPrivilegedEgressPortCollision: a taken port is skipped, and a flow
// whose every candidate is taken is a counted drop.
func TestPrivilegedEgressPortCollision(t *testing.T) {
	d := newEgressWorld(t)
	tu := Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: 41000, DPort: 80, Proto: TCP}
	occupy(t, d, TCP, extIP, 80, egressCandidate(tu, 0))
	in := geneveFrame(nodeB, vniRed, tcpIP(ip3, 41000, extIP, 80, tcpSYN, nil), geneveOpts{})
	ret, out := runSKB(t, d.uplink.FromUplink, in, uplinkIdx)
	if ret != tcActRedirect {
		t.Fatalf("verdict %d", ret)
	}
	if got, want := snatOf(t, d, tu).Port(), egressCandidate(tu, 1); got != want {
		t.Fatalf("snat port %d, want the second candidate %d (the first is taken)", got, want)
	}
	checkEgressOut(tcpIP(egressA, egressCandidate(tu, 1), extIP, 80, tcpSYN, nil))(t, out)

	// An expired pair's port is reclaimed at once; an expired reply whose
	// forward side lives keeps its port.
	now := monotonicNow()
	tu3 := Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: 41002, DPort: 80, Proto: TCP}
	occupyUntil(t, d, TCP, extIP, 80, egressCandidate(tu3, 0), now-time.Second, now-time.Second)
	if ret, _ := runSKB(t, d.uplink.FromUplink, geneveFrame(nodeB, vniRed, tcpIP(ip3, 41002, extIP, 80, tcpSYN, nil), geneveOpts{}), uplinkIdx); ret != tcActRedirect {
		t.Fatalf("verdict %d", ret)
	}
	if got := snatOf(t, d, tu3).Port(); got != egressCandidate(tu3, 0) {
		t.Errorf("port %d: the expired pair's port %d was not reclaimed", got, egressCandidate(tu3, 0))
	}
	tu4 := Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: 41003, DPort: 80, Proto: TCP}
	occupyUntil(t, d, TCP, extIP, 80, egressCandidate(tu4, 0), now-time.Second, now+time.Hour)
	if ret, _ := runSKB(t, d.uplink.FromUplink, geneveFrame(nodeB, vniRed, tcpIP(ip3, 41003, extIP, 80, tcpSYN, nil), geneveOpts{}), uplinkIdx); ret != tcActRedirect {
		t.Fatalf("verdict %d", ret)
	}
	if got := snatOf(t, d, tu4).Port(); got == egressCandidate(tu4, 0) {
		t.Errorf("port %d of a flow whose forward side lives was taken", got)
	}

	tu2 := Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: 41001, DPort: 80, Proto: TCP}
	for i := range uint32(32) {
		occupy(t, d, TCP, extIP, 80, egressCandidate(tu2, i))
	}
	in = geneveFrame(nodeB, vniRed, tcpIP(ip3, 41001, extIP, 80, tcpSYN, nil), geneveOpts{})
	runFixtures(t, d, []fixture{{name: "every candidate taken", in: in, verdict: tcActShot, drop: DropEgressNoPort}}, runUplink(d))
}

// TestPrivilegedEgressDrain: a pinned flow stays on a draining gateway,
// new flows go to the active ones, and a dead gateway's flows re-pick.
func TestPrivilegedEgressDrain(t *testing.T) {
	d := newEgressWorld(t)
	gwOf := func(sport uint16) netip.Addr {
		t.Helper()
		ret, out := runSKB(t, d.lxc.FromPod, frame(gwMAC, redA.MAC, tcpIP(ip1, sport, extIP, 443, tcpACK, nil)), redA.HostIfindex)
		if ret != tcActRedirect || len(out) < 34 {
			t.Fatalf("flow %d: verdict %d", sport, ret)
		}
		return addr4(out[30:34])
	}
	if g := gwOf(50000); g != nodeB {
		t.Fatalf("first flow through %s, want b", g)
	}
	// B drains, D takes new flows.
	if err := d.UpsertEgressPolicy(1, EgressGatewaySet{Active: []netip.Addr{nodeD}, Draining: []netip.Addr{nodeB}}); err != nil {
		t.Fatal(err)
	}
	if g := gwOf(50000); g != nodeB {
		t.Errorf("pinned flow moved to %s while b drains", g)
	}
	for sport := uint16(50001); sport < 50009; sport++ {
		if g := gwOf(sport); g != nodeD {
			t.Errorf("new flow %d through %s, want d (b drains)", sport, g)
		}
	}
	// B dies: its flows re-pick.
	if err := d.UpsertEgressPolicy(1, EgressGatewaySet{Active: []netip.Addr{nodeD}}); err != nil {
		t.Fatal(err)
	}
	if g := gwOf(50000); g != nodeD {
		t.Errorf("flow of a dead gateway still through %s", g)
	}
	flows, err := d.EgressFlows()
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != 9 {
		t.Errorf("%d pins, want 9", len(flows))
	}
	// Two active gateways: new flows spread over both.
	if err := d.UpsertEgressPolicy(1, EgressGatewaySet{Active: []netip.Addr{nodeB, nodeD}}); err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]int{}
	for sport := uint16(51000); sport < 51032; sport++ {
		seen[gwOf(sport)]++
	}
	if seen[nodeB] == 0 || seen[nodeD] == 0 {
		t.Errorf("32 new flows over two gateways: %v", seen)
	}
}
