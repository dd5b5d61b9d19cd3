package datapath

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// The service fixtures run on the fixture world (world_test.go). Expected
// frames are built from scratch with the post-NAT addresses: their IPv4 and
// L4 checksums are computed here over the whole packet, so a byte-equal
// output proves the data plane's incremental updates right.

var (
	vipWeb  = netip.MustParseAddr("10.96.0.10") // red TCP 80 -> red 10.0.0.2:8080 (local)
	vipDNS  = netip.MustParseAddr("10.96.0.11") // red UDP 53 -> red 10.0.0.3:5353 (remote, node B)
	vipSelf = netip.MustParseAddr("10.96.0.12") // red TCP 80 -> red 10.0.0.1:8080 (the client itself)
	vipNone = netip.MustParseAddr("10.96.0.13") // red TCP 80, no backend

	svcWeb  = ServiceKey{VNI: vniRed, VIP: vipWeb, Port: 80, Proto: TCP}
	svcDNS  = ServiceKey{VNI: vniRed, VIP: vipDNS, Port: 53, Proto: UDP}
	svcSelf = ServiceKey{VNI: vniRed, VIP: vipSelf, Port: 80, Proto: TCP}
	svcNone = ServiceKey{VNI: vniRed, VIP: vipNone, Port: 80, Proto: TCP}
)

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

// l4Csum computes the TCP/UDP checksum of seg (checksum field zero) from
// scratch, pseudo header included.
func l4Csum(src, dst netip.Addr, proto uint8, seg []byte) uint16 {
	s, d := src.As4(), dst.As4()
	ph := cat(s[:], d[:], []byte{0, proto, byte(len(seg) >> 8), byte(len(seg))}, seg)
	return csum16(ph)
}

// tcpSeg builds a TCP segment (no options) with a correct checksum.
func tcpSeg(src, dst netip.Addr, sport, dport uint16, flags uint8, data []byte) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint32(h[4:], 0x01020304)
	binary.BigEndian.PutUint32(h[8:], 0x0a0b0c0d)
	h[12] = 5 << 4
	h[13] = flags
	binary.BigEndian.PutUint16(h[14:], 65000)
	seg := append(h, data...)
	binary.BigEndian.PutUint16(seg[16:], l4Csum(src, dst, protoTCP, seg))
	return seg
}

// udpSeg builds a UDP datagram with a correct checksum (0 computed -> 0xffff).
func udpSeg(src, dst netip.Addr, sport, dport uint16, data []byte) []byte {
	seg := udpPkt(sport, dport, data)
	c := l4Csum(src, dst, protoUDP, seg)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[6:], c)
	return seg
}

func tcpIP(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, flags uint8, data []byte) []byte {
	return ipv4Pkt(src, dst, protoTCP, tcpSeg(src, dst, sport, dport, flags, data), ipOpts{id: 0x1234})
}

func udpIP(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, data []byte) []byte {
	return ipv4Pkt(src, dst, protoUDP, udpSeg(src, dst, sport, dport, data), ipOpts{id: 0x4321})
}

// verifyChecksums checks an IPv4 packet's header and L4 checksums verify.
func verifyChecksums(t *testing.T, ip []byte) {
	t.Helper()
	if csum16(ip[:20]) != 0 {
		t.Errorf("ipv4 header checksum does not verify: %x", ip[:20])
	}
	src, dst := addr4(ip[12:16]), addr4(ip[16:20])
	seg := append([]byte(nil), ip[20:]...)
	off := 16
	if ip[9] == protoUDP {
		off = 6
		if seg[6] == 0 && seg[7] == 0 {
			return // no checksum
		}
	}
	got := binary.BigEndian.Uint16(seg[off:])
	seg[off], seg[off+1] = 0, 0
	want := l4Csum(src, dst, ip[9], seg)
	if want == 0 && ip[9] == protoUDP {
		want = 0xffff
	}
	if got != want {
		t.Errorf("l4 checksum %04x, computed from scratch %04x", got, want)
	}
}

// table fills an M-slot table with one backend.
func table(m int, b ...Backend) ServiceTable {
	t := ServiceTable{Slots: make([]Backend, m)}
	for i := range t.Slots {
		t.Slots[i] = b[i%len(b)]
	}
	return t
}

func newServiceWorld(tb testing.TB) *Datapath {
	tb.Helper()
	d := newWorld(tb)
	for k, t := range map[ServiceKey]ServiceTable{
		svcWeb:  table(7, Backend{ip2, 8080}),
		svcDNS:  table(7, Backend{ip3, 5353}),
		svcSelf: table(7, Backend{ip1, 8080}),
		svcNone: {},
	} {
		if err := d.UpsertService(k, t); err != nil {
			tb.Fatal(err)
		}
	}
	return d
}

func frame(dst, src []byte, ip []byte) []byte { return cat(ethHdr(dst, src, etherIPv4), ip) }

// checkedOut compares out with want and verifies the checksums of its IPv4
// packet (at ipOff) from scratch.
func checkedOut(want []byte, ipOff int) func(*testing.T, []byte) {
	return func(t *testing.T, out []byte) {
		t.Helper()
		if string(out) != string(want) {
			t.Errorf("output frame differs\n got %x\nwant %x", out, want)
		}
		if len(out) > ipOff+20 {
			verifyChecksums(t, out[ipOff:])
		}
	}
}

func TestPrivilegedServiceFixtures(t *testing.T) {
	d := newServiceWorld(t)
	data := payload(37) // odd length: the checksum's last byte is padded

	synToVIP := tcpIP(ip1, 40000, vipWeb, 80, tcpSYN, nil)
	synToBackend := tcpIP(ip1, 40000, ip2, 8080, tcpSYN, nil)
	synAck := tcpIP(ip2, 8080, ip1, 40000, tcpSYN|tcpACK, nil)
	synAckFromVIP := tcpIP(vipWeb, 80, ip1, 40000, tcpSYN|tcpACK, nil)
	dataToVIP := tcpIP(ip1, 40000, vipWeb, 80, tcpACK|tcpPSH, data)
	dataToBackend := tcpIP(ip1, 40000, ip2, 8080, tcpACK|tcpPSH, data)

	udpToVIP := udpIP(ip1, 33000, vipDNS, 53, data)
	udpToBackend := udpIP(ip1, 33000, ip3, 5353, data)
	udpReply := udpIP(ip3, 5353, ip1, 33000, payload(20))
	udpReplyFromVIP := udpIP(vipDNS, 53, ip1, 33000, payload(20))
	// A UDP datagram without checksum must stay without one.
	udpNoCsum := ipv4Pkt(ip1, vipDNS, protoUDP, udpPkt(33001, 53, data), ipOpts{})
	udpNoCsumOut := ipv4Pkt(ip1, ip3, protoUDP, udpPkt(33001, 5353, data), ipOpts{})

	hairpin := tcpIP(ip1, 40001, vipSelf, 80, tcpSYN, nil)
	hairpinOut := tcpIP(vipSelf, 40001, ip1, 8080, tcpSYN, nil)
	hairpinReply := tcpIP(ip1, 8080, vipSelf, 40001, tcpSYN|tcpACK, nil)
	hairpinReplyOut := tcpIP(vipSelf, 80, ip1, 40001, tcpSYN|tcpACK, nil)

	plain := tcpIP(ip1, 40002, ip2, 80, tcpSYN, nil)

	lxc := func(f fixture) fixture { return f }
	fixtures := []fixture{
		lxc(fixture{
			name: "tcp syn to the red vip is dnated to the local backend", ifindex: redA.HostIfindex,
			in:      frame(gwMAC, redA.MAC, synToVIP),
			verdict: tcActRedirect,
			check:   checkedOut(frame(redB.MAC, gwMAC, synToBackend), 14),
		}),
		{
			name: "the backend's syn-ack goes back to the client from the vip", ifindex: redB.HostIfindex,
			in:      frame(gwMAC, redB.MAC, synAck),
			verdict: tcActRedirect,
			check:   checkedOut(frame(redA.MAC, gwMAC, synAckFromVIP), 14),
		},
		{
			name: "data on the flow (odd payload) follows it", ifindex: redA.HostIfindex,
			in:      frame(gwMAC, redA.MAC, dataToVIP),
			verdict: tcActRedirect,
			check:   checkedOut(frame(redB.MAC, gwMAC, dataToBackend), 14),
		},
		{
			name: "udp to the red dns vip is dnated and encapsulated to node b", ifindex: redA.HostIfindex,
			in:      frame(gwMAC, redA.MAC, udpToVIP),
			verdict: tcActRedirect,
			check: func(t *testing.T, out []byte) {
				encapCheck(vniRed, nodeBMAC, nodeB, redR.MAC, udpToBackend, 0)(t, out)
				if len(out) > 64+20 {
					verifyChecksums(t, out[64:])
				}
			},
		},
		{
			name: "udp without checksum keeps none", ifindex: redA.HostIfindex,
			in:      frame(gwMAC, redA.MAC, udpNoCsum),
			verdict: tcActRedirect,
			check:   encapCheck(vniRed, nodeBMAC, nodeB, redR.MAC, udpNoCsumOut, 0),
		},
		{
			name: "same vip and port from blue: no such service in blue, counted drop", ifindex: blueA.HostIfindex,
			in:      frame(gwMAC, blueA.MAC, tcpIP(ip1, 40000, vipWeb, 80, tcpSYN, nil)),
			verdict: tcActShot, drop: DropNoRoute,
		},
		{
			name: "non-service destination is unchanged", ifindex: redA.HostIfindex,
			in:      frame(gwMAC, redA.MAC, plain),
			verdict: tcActRedirect,
			out:     frame(redB.MAC, gwMAC, plain),
		},
		{
			name: "other port of a vip is no service", ifindex: redA.HostIfindex,
			in:      frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, vipWeb, 81, tcpSYN, nil)),
			verdict: tcActShot, drop: DropNoRoute,
		},
		{
			name: "tcp to a udp service's port is no service", ifindex: redA.HostIfindex,
			in:      frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, vipDNS, 53, tcpSYN, nil)),
			verdict: tcActShot, drop: DropNoRoute,
		},
		{
			name: "service without backends is a counted drop", ifindex: redA.HostIfindex,
			in:      frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, vipNone, 80, tcpSYN, nil)),
			verdict: tcActShot, drop: DropNoBackend,
		},
		{
			name: "hairpin: the client is its own backend, source becomes the vip", ifindex: redA.HostIfindex,
			in:      frame(gwMAC, redA.MAC, hairpin),
			verdict: tcActRedirect,
			check:   checkedOut(frame(redA.MAC, gwMAC, hairpinOut), 14),
		},
		{
			name: "hairpin reply: from the vip port to the client port", ifindex: redA.HostIfindex,
			in:      frame(gwMAC, redA.MAC, hairpinReply),
			verdict: tcActRedirect,
			check:   checkedOut(frame(redA.MAC, gwMAC, hairpinReplyOut), 14),
		},
	}
	runFixtures(t, d, fixtures, func(t *testing.T, f fixture) (uint32, []byte) {
		return runSKB(t, d.lxc.FromPod, f.in, f.ifindex)
	})

	// The reply of the remote dns backend arrives encapsulated from node B.
	runFixtures(t, d, []fixture{{
		name:    "decap: the remote backend's udp reply reaches the client from the vip",
		in:      geneveFrame(nodeB, vniRed, udpReply, geneveOpts{}),
		verdict: tcActRedirect,
		check:   checkedOut(frame(redA.MAC, gwMAC, udpReplyFromVIP), 14),
	}, {
		name:    "decap: the same reply in blue is not rewritten",
		in:      geneveFrame(nodeB, vniBlue, udpIP(ip3, 5353, ip1, 33000, payload(20)), geneveOpts{}),
		verdict: tcActRedirect,
		out:     frame(blueA.MAC, gwMAC, udpIP(ip3, 5353, ip1, 33000, payload(20))),
	}}, func(t *testing.T, f fixture) (uint32, []byte) {
		return runSKB(t, d.uplink.FromUplink, f.in, uplinkIdx)
	})

	// Non-service traffic left no conntrack state.
	ct, err := d.Conntrack()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ct {
		if e.Tuple.DPort == 80 && e.Tuple.Dst == ip2 || e.Tuple.VNI != vniRed {
			t.Errorf("unexpected conntrack entry %+v", e)
		}
	}
	// web (2), dns (2), no-checksum udp (2), hairpin (2).
	if len(ct) != 8 {
		t.Errorf("%d conntrack entries, want 8: %+v", len(ct), ct)
	}
}

// TestPrivilegedServiceStickiness: a flow keeps its backend when the table
// changes; a new flow takes the new table.
func TestPrivilegedServiceStickiness(t *testing.T) {
	d := newServiceWorld(t)
	run := func(ifindex int, ip []byte) (uint32, []byte) {
		t.Helper()
		return runSKB(t, d.lxc.FromPod, frame(gwMAC, redA.MAC, ip), ifindex)
	}
	dstOf := func(out []byte) netip.Addr { return addr4(out[30:34]) }

	if ret, out := run(redA.HostIfindex, tcpIP(ip1, 41000, vipWeb, 80, tcpSYN, nil)); ret != tcActRedirect || dstOf(out) != ip2 {
		t.Fatalf("first syn: verdict %d to %s, want redirect to %s", ret, dstOf(out), ip2)
	}
	// All slots now point at the remote backend.
	if err := d.UpsertService(svcWeb, table(7, Backend{ip3, 8080})); err != nil {
		t.Fatal(err)
	}
	ret, out := run(redA.HostIfindex, tcpIP(ip1, 41000, vipWeb, 80, tcpACK, payload(10)))
	if ret != tcActRedirect || len(out) != 14+40+10 || dstOf(out) != ip2 {
		t.Fatalf("established flow after the table change: verdict %d, %d bytes to %s; want local delivery to %s", ret, len(out), dstOf(out), ip2)
	}
	ret, out = run(redA.HostIfindex, tcpIP(ip1, 41001, vipWeb, 80, tcpSYN, nil))
	if ret != tcActRedirect || len(out) != EncapOverhead+14+40 || addr4(out[64+16:64+20]) != ip3 {
		t.Fatalf("new flow after the table change: verdict %d, %d bytes; want encap to %s", ret, len(out), ip3)
	}
	// A closed flow whose port is reused by a new SYN takes the new table.
	run(redA.HostIfindex, tcpIP(ip1, 41000, vipWeb, 80, tcpFIN|tcpACK, nil))
	ret, out = run(redA.HostIfindex, tcpIP(ip1, 41000, vipWeb, 80, tcpSYN, nil))
	if ret != tcActRedirect || len(out) != EncapOverhead+14+40 {
		t.Fatalf("syn reusing a closed flow's port: verdict %d, %d bytes; want encap to the new backend", ret, len(out))
	}
}

// TestPrivilegedServiceDeleteEndsFlows: conntrack is looked up before the
// service map, so DeleteService must take its flows with it: afterwards a
// packet of an established flow to the VIP is an unknown address (counted
// NO_ROUTE drop), and another service's flow is untouched.
func TestPrivilegedServiceDeleteEndsFlows(t *testing.T) {
	d := newServiceWorld(t)
	run := func(ip []byte) (uint32, []byte) {
		t.Helper()
		return runSKB(t, d.lxc.FromPod, frame(gwMAC, redA.MAC, ip), redA.HostIfindex)
	}
	for _, p := range [][]byte{tcpIP(ip1, 43000, vipWeb, 80, tcpSYN, nil), udpIP(ip1, 43000, vipDNS, 53, payload(8))} {
		if ret, _ := run(p); ret != tcActRedirect {
			t.Fatalf("first packet: verdict %d", ret)
		}
	}
	if err := d.DeleteService(svcWeb); err != nil {
		t.Fatal(err)
	}
	var ret uint32
	delta := dropDelta(t, d, func() { ret, _ = run(tcpIP(ip1, 43000, vipWeb, 80, tcpACK, payload(10))) })
	if ret != tcActShot || fmt.Sprint(delta) != fmt.Sprint(map[DropReason]uint64{DropNoRoute: 1}) {
		t.Errorf("established flow of the deleted service: verdict %d, drops %v; want a NO_ROUTE drop", ret, delta)
	}
	ct, err := d.Conntrack()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ct {
		if e.Tuple.SPort == 8080 || e.Tuple.DPort == 80 {
			t.Errorf("entry of the deleted service's flow left: %+v", e)
		}
	}
	if len(ct) != 2 {
		t.Errorf("%d conntrack entries, want the dns flow's 2: %+v", len(ct), ct)
	}
	if ret, out := run(udpIP(ip1, 43000, vipDNS, 53, payload(8))); ret != tcActRedirect || len(out) != EncapOverhead+14+28+8 {
		t.Errorf("the other service's flow: verdict %d, %d bytes", ret, len(out))
	}
}

// TestPrivilegedServiceIgnoresOtherEntries: conntrack is shared with
// other NAT features (egress SNAT); an entry without a service table for
// a packet to a frontend port is not the service hook's to apply.
func TestPrivilegedServiceIgnoresOtherEntries(t *testing.T) {
	d := newServiceWorld(t)
	k := lxcCtKey{Vni: vniRed, Saddr: ip4(ip1), Daddr: ip4(ip2), Sport: htons(40005), Dport: htons(80), Proto: 6}
	v := lxcCtEntry{Expires: uint64(monotonicNow() + time.Hour), Flags: ctFlagSNAT, SrcAddr: ip4(ip3), SrcPort: htons(1), Vni: vniRed}
	if err := d.lxc.GenieCt.Put(&k, &v); err != nil {
		t.Fatal(err)
	}
	plain := tcpIP(ip1, 40005, ip2, 80, tcpACK, payload(10))
	runFixtures(t, d, []fixture{{
		name: "another feature's entry at a frontend port: unchanged", ifindex: redA.HostIfindex,
		in:      frame(gwMAC, redA.MAC, plain),
		verdict: tcActRedirect,
		out:     frame(redB.MAC, gwMAC, plain),
	}}, func(t *testing.T, f fixture) (uint32, []byte) {
		return runSKB(t, d.lxc.FromPod, f.in, f.ifindex)
	})
}

// TestPrivilegedServiceFragments: fragments are not load-balanced (see
// bpf/lib/lb.h); the first fragment of a service datagram, either way, is
// a counted SVC_FRAGMENT drop, and other fragments are left alone.
func TestPrivilegedServiceFragments(t *testing.T) {
	d := newServiceWorld(t)
	// A UDP flow to the remote dns backend and a TCP flow to the local web one.
	for _, ip := range [][]byte{udpIP(ip1, 33000, vipDNS, 53, payload(8)), tcpIP(ip1, 40000, vipWeb, 80, tcpSYN, nil)} {
		if ret, _ := runSKB(t, d.lxc.FromPod, frame(gwMAC, redA.MAC, ip), redA.HostIfindex); ret != tcActRedirect {
			t.Fatalf("flow setup: verdict %d", ret)
		}
	}
	const mf = 0x2000
	first := func(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, proto uint8) []byte {
		return ipv4Pkt(src, dst, proto, udpPkt(sport, dport, payload(1472)), ipOpts{fragOff: mf, id: 77})
	}
	later := ipv4Pkt(ip1, vipDNS, protoUDP, payload(64), ipOpts{fragOff: 185, id: 77})
	plainFirst := first(ip1, 33000, ip2, 8080, protoUDP)
	runFixtures(t, d, []fixture{
		{
			name: "first fragment to a udp frontend", ifindex: redA.HostIfindex,
			in:      frame(gwMAC, redA.MAC, first(ip1, 33001, vipDNS, 53, protoUDP)),
			verdict: tcActShot, drop: DropSvcFragment,
		},
		{
			name: "later fragment to the vip: no endpoint there", ifindex: redA.HostIfindex,
			in:      frame(gwMAC, redA.MAC, later),
			verdict: tcActShot, drop: DropNoRoute,
		},
		{
			name: "first fragment of the local backend's tcp reply", ifindex: redB.HostIfindex,
			in:      frame(gwMAC, redB.MAC, first(ip2, 8080, ip1, 40000, protoTCP)),
			verdict: tcActShot, drop: DropSvcFragment,
		},
		{
			name: "first fragment to a backend's own address is plain traffic", ifindex: redA.HostIfindex,
			in:      frame(gwMAC, redA.MAC, plainFirst),
			verdict: tcActRedirect,
			out:     frame(redB.MAC, gwMAC, plainFirst),
		},
	}, func(t *testing.T, f fixture) (uint32, []byte) {
		return runSKB(t, d.lxc.FromPod, f.in, f.ifindex)
	})
	reply := first(ip3, 5353, ip1, 33000, protoUDP)
	runFixtures(t, d, []fixture{{
		name:    "decap: first fragment of the remote backend's udp reply",
		in:      geneveFrame(nodeB, vniRed, reply, geneveOpts{}),
		verdict: tcActShot, drop: DropSvcFragment,
		out: cat(ethHdr(uplinkMAC, nodeBMAC, etherIPv4), reply), // decapsulated when checked
	}, {
		name:    "decap: the same fragment in blue (no such flow) is delivered",
		in:      geneveFrame(nodeB, vniBlue, reply, geneveOpts{}),
		verdict: tcActRedirect,
		out:     frame(blueA.MAC, gwMAC, reply),
	}}, func(t *testing.T, f fixture) (uint32, []byte) {
		return runSKB(t, d.uplink.FromUplink, f.in, uplinkIdx)
	})
}

// TestPrivilegedConntrackStates: TCP state and deadlines per direction.
func TestPrivilegedConntrackStates(t *testing.T) {
	d := newServiceWorld(t)
	run := func(ifindex int, mac []byte, ip []byte) {
		t.Helper()
		if ret, _ := runSKB(t, d.lxc.FromPod, frame(gwMAC, mac, ip), ifindex); ret != tcActRedirect {
			t.Fatalf("verdict %d", ret)
		}
	}
	fwd := Tuple{VNI: vniRed, Src: ip1, Dst: vipWeb, SPort: 42000, DPort: 80, Proto: TCP}
	rev := Tuple{VNI: vniRed, Src: ip2, Dst: ip1, SPort: 8080, DPort: 42000, Proto: TCP}
	state := func(tu Tuple) (ConntrackState, time.Duration) {
		t.Helper()
		ct, err := d.Conntrack()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ct {
			if e.Tuple == tu {
				return e.State, e.Expires - monotonicNow()
			}
		}
		t.Fatalf("no conntrack entry for %s", tu)
		return 0, 0
	}
	within := func(what string, got, want time.Duration) {
		t.Helper()
		if got > want || got < want-5*time.Second {
			t.Errorf("%s: expires in %v, want about %v", what, got, want)
		}
	}
	run(redA.HostIfindex, redA.MAC, tcpIP(ip1, 42000, vipWeb, 80, tcpSYN, nil))
	s, ttl := state(fwd)
	if s != ConntrackNew {
		t.Errorf("after syn: forward state %s", s)
	}
	within("syn", ttl, 60*time.Second)
	run(redB.HostIfindex, redB.MAC, tcpIP(ip2, 8080, ip1, 42000, tcpSYN|tcpACK, nil))
	if s, _ := state(rev); s != ConntrackNew {
		t.Errorf("after syn-ack: reply state %s", s)
	}
	run(redA.HostIfindex, redA.MAC, tcpIP(ip1, 42000, vipWeb, 80, tcpACK, nil))
	s, ttl = state(fwd)
	if s != ConntrackEstablished {
		t.Errorf("after ack: forward state %s", s)
	}
	within("established", ttl, 6*time.Hour)
	run(redB.HostIfindex, redB.MAC, tcpIP(ip2, 8080, ip1, 42000, tcpFIN|tcpACK, nil))
	s, ttl = state(rev)
	if s != ConntrackClosing {
		t.Errorf("after fin: reply state %s", s)
	}
	within("closing", ttl, 10*time.Second)

	// UDP: one deadline from the last packet.
	run(redA.HostIfindex, redA.MAC, udpIP(ip1, 34000, vipDNS, 53, nil))
	_, ttl = state(Tuple{VNI: vniRed, Src: ip1, Dst: vipDNS, SPort: 34000, DPort: 53, Proto: UDP})
	within("udp", ttl, 60*time.Second)
}

// TestPrivilegedServiceAffinity: with ClientIP affinity every flow of a
// client takes one backend; without it, flows of one client spread.
func TestPrivilegedServiceAffinity(t *testing.T) {
	d := newWorld(t)
	// Two local backends, alternating over 101 slots.
	tab := table(101, Backend{ip2, 8080}, Backend{ip1, 8080})
	backendsSeen := func() map[netip.Addr]int {
		seen := map[netip.Addr]int{}
		for sport := uint16(42000); sport < 42040; sport++ {
			ret, out := runSKB(t, d.lxc.FromPod, frame(gwMAC, redB.MAC, tcpIP(ip2, sport, vipWeb, 80, tcpSYN, nil)), redB.HostIfindex)
			if ret != tcActRedirect {
				t.Fatalf("verdict %d", ret)
			}
			seen[addr4(out[30:34])]++
		}
		return seen
	}
	if err := d.UpsertService(svcWeb, tab); err != nil {
		t.Fatal(err)
	}
	if seen := backendsSeen(); len(seen) != 2 {
		t.Errorf("without affinity 40 flows of one client reached %v, want both backends", seen)
	}
	tab.AffinityClientIP = true
	if err := d.UpsertService(svcWeb, tab); err != nil {
		t.Fatal(err)
	}
	// Conntrack pins the earlier flows: use new source ports.
	seen := map[netip.Addr]int{}
	for sport := uint16(43000); sport < 43040; sport++ {
		ret, out := runSKB(t, d.lxc.FromPod, frame(gwMAC, redB.MAC, tcpIP(ip2, sport, vipWeb, 80, tcpSYN, nil)), redB.HostIfindex)
		if ret != tcActRedirect {
			t.Fatalf("verdict %d", ret)
		}
		seen[addr4(out[30:34])]++
	}
	if len(seen) != 1 {
		t.Errorf("with ClientIP affinity 40 flows of one client reached %v, want one backend", seen)
	}
	if got, err := d.Services(); err != nil || len(got) != 1 || !got[0].AffinityClientIP || got[0].Slots != 101 || got[0].Backends != 2 {
		t.Errorf("Services() = %+v, %v", got, err)
	}
}
