package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

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

// tcpTS builds a TCP/IPv4 packet carrying a timestamp option (TSval ts):
// laid out as Linux lays out a SYN's options (MSS, SACK permitted, then
// the timestamp) or, for other packets, NOP NOP timestamp.
func tcpTS(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, flags uint8, ts uint32) []byte {
	opts := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	if flags&tcpSYN != 0 {
		opts = []byte{2, 4, 0x05, 0x82, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 10}
	}
	at := bytes.Index(opts, []byte{8, 10})
	binary.BigEndian.PutUint32(opts[at+2:], ts)
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint32(h[4:], 0x01020304)
	binary.BigEndian.PutUint32(h[8:], 0x0a0b0c0d)
	h[12] = byte(5+len(opts)/4) << 4
	h[13] = flags
	binary.BigEndian.PutUint16(h[14:], 65000)
	seg := append(h, opts...)
	binary.BigEndian.PutUint16(seg[16:], l4Csum(src, dst, protoTCP, seg))
	return ipv4Pkt(src, dst, protoTCP, seg, ipOpts{id: 0x1234})
}

// TestPrivilegedEgressTimeWaitReuse: a closed egress flow's port pair is
// held for the server's TIME_WAIT (60 s), and only a SYN whose timestamp
// is later than the old FIN's (by the margin) takes it over early: a
// server in TIME_WAIT accepts that SYN as a new connection and answers
// any other with the old connection's ACK (sequential connections from a
// default-network pod collapsed to 8-17/s when pairs were reused blindly).
func TestPrivilegedEgressTimeWaitReuse(t *testing.T) {
	d := newEgressWorld(t)
	fromPod := func(sport uint16, pkt []byte) {
		t.Helper()
		if ret, _ := runSKB(t, d.uplink.FromUplink, geneveFrame(nodeB, vniRed, pkt, geneveOpts{}), uplinkIdx); ret != tcActRedirect {
			t.Fatalf("pod port %d: verdict %d", sport, int32(ret))
		}
	}
	fromExt := func(pkt []byte) {
		t.Helper()
		if ret, _ := runSKB(t, d.uplink.FromUplink, fromOutside(pkt), uplinkIdx); ret != tcActRedirect {
			t.Fatalf("reply: verdict %d", int32(ret))
		}
	}
	const finTS = 1_000_000
	// closeFlow runs flow sport through a whole connection, the pod's FIN
	// with timestamp fin; the server closes too unless halfOpen.
	closeFlow := func(sport uint16, fin uint32, halfOpen bool) uint16 {
		t.Helper()
		tu := Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: sport, DPort: 80, Proto: TCP}
		fromPod(sport, tcpTS(ip3, sport, extIP, 80, tcpSYN, fin-50))
		p := snatOf(t, d, tu).Port()
		fromExt(tcpTS(extIP, 80, egressA, p, tcpSYN|tcpACK, 7))
		fromPod(sport, tcpTS(ip3, sport, extIP, 80, tcpACK, fin-40))
		fromPod(sport, tcpTS(ip3, sport, extIP, 80, tcpFIN|tcpACK, fin))
		if !halfOpen {
			fromExt(tcpTS(extIP, 80, egressA, p, tcpFIN|tcpACK, 9))
		}
		return p
	}
	// sportOnto finds a pod port whose flow's first SNAT candidate is port
	// (above those closeFlow uses).
	next := uint16(1024)
	sportOnto := func(port uint16) uint16 {
		t.Helper()
		for ; next < 65000; next++ {
			if next >= 41010 && next <= 41012 {
				continue
			}
			tu := Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: next, DPort: 80, Proto: TCP}
			if egressCandidate(tu, 0) == port {
				next++
				return next - 1
			}
		}
		t.Fatalf("no pod port maps onto %d", port)
		return 0
	}
	newFlow := func(sport uint16, pkt []byte) uint16 {
		t.Helper()
		fromPod(sport, pkt)
		return snatOf(t, d, Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: sport, DPort: 80, Proto: TCP}).Port()
	}

	held := closeFlow(41010, finTS, false)
	for _, e := range mustConntrack(t, d) {
		if e.Tuple.SPort == 41010 || e.Tuple.DPort == held {
			if ttl := e.Expires - monotonicNow(); e.State != ConntrackClosing || ttl > 60*time.Second || ttl < 55*time.Second {
				t.Fatalf("closed flow %s: state %s, expires in %v, want closing for about 60 s", e.Tuple, e.State, ttl)
			}
		}
	}
	for _, c := range []struct {
		name string
		pkt  func(sport uint16) []byte
	}{
		{"a SYN without timestamps", func(s uint16) []byte { return tcpIP(ip3, s, extIP, 80, tcpSYN, nil) }},
		{"a SYN inside the margin", func(s uint16) []byte { return tcpTS(ip3, s, extIP, 80, tcpSYN, finTS+1000) }},
		{"a SYN with an earlier timestamp", func(s uint16) []byte { return tcpTS(ip3, s, extIP, 80, tcpSYN, finTS-1_000_000) }},
		{"a non-SYN first packet", func(s uint16) []byte { return tcpTS(ip3, s, extIP, 80, tcpACK, finTS+100_000) }},
	} {
		s := sportOnto(held)
		if got := newFlow(s, c.pkt(s)); got == held {
			t.Errorf("%s took the held pair %d", c.name, held)
		}
	}
	s := sportOnto(held)
	if got := newFlow(s, tcpTS(ip3, s, extIP, 80, tcpSYN, finTS+100_000)); got != held {
		t.Errorf("a SYN with a later timestamp got port %d, want the held pair %d", got, held)
	}
	for _, e := range mustConntrack(t, d) {
		if e.Tuple.SPort == 41010 && e.Tuple.Src == ip3 {
			t.Errorf("the old flow's forward entry is still there: %+v", e)
		}
	}
	// Timestamps wrap: later is serial-number order (RFC 1982).
	held = closeFlow(41011, 0xffff_ff00, false)
	s = sportOnto(held)
	if got := newFlow(s, tcpTS(ip3, s, extIP, 80, tcpSYN, 0x1_0000)); got != held {
		t.Errorf("a SYN whose timestamp wrapped past the FIN's got port %d, want the held pair %d", got, held)
	}
	// A half-closed flow (the server has not closed) keeps its pair.
	half := closeFlow(41012, finTS, true)
	s = sportOnto(half)
	if got := newFlow(s, tcpTS(ip3, s, extIP, 80, tcpSYN, finTS+100_000)); got == half {
		t.Errorf("a half-closed flow's pair %d was taken", half)
	}
}

func mustConntrack(t testing.TB, d *Datapath) []ConntrackEntry {
	t.Helper()
	ct, err := d.Conntrack()
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// BenchmarkEgressGateway: an established TCP segment (1400 bytes) of a
// pod's flow on the gateway: decapsulation, conntrack, SNAT, FIB lookup
// and redirect out (compare BenchmarkUplinkDecap, the overlay's own
// delivery, in the same run).
func BenchmarkEgressGateway(b *testing.B) {
	d := newEgressWorld(b)
	inWorld(b, func() {
		runSKB(b, d.uplink.FromUplink, geneveFrame(nodeB, vniRed, tcpIP(ip3, 41500, extIP, 80, tcpSYN, nil), geneveOpts{}), uplinkIdx)
	})
	benchProg(b, d.uplink.FromUplink, geneveFrame(nodeB, vniRed, tcpIP(ip3, 41500, extIP, 80, tcpACK, payload(1400)), geneveOpts{}),
		uplinkIdx, tcActRedirect, nil)
}

// BenchmarkEgressReply: the reply direction on the gateway: conntrack,
// reverse SNAT and encapsulation back to the pod's node.
func BenchmarkEgressReply(b *testing.B) {
	d := newEgressWorld(b)
	tu := Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: 41501, DPort: 80, Proto: TCP}
	inWorld(b, func() {
		runSKB(b, d.uplink.FromUplink, geneveFrame(nodeB, vniRed, tcpIP(ip3, 41501, extIP, 80, tcpSYN, nil), geneveOpts{}), uplinkIdx)
	})
	var port uint16
	for _, e := range mustConntrack(b, d) {
		if e.Tuple == tu {
			port = e.SrcNAT.Port()
		}
	}
	benchProg(b, d.uplink.FromUplink, fromOutside(tcpIP(extIP, 80, egressA, port, tcpACK, payload(1400))),
		uplinkIdx, tcActRedirect, nil)
}
