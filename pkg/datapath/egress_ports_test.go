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
	h := newEgressFlows(t, 41010, 41011, 41012)
	d, fromPod, fromExt := h.d, h.fromPod, h.fromExt
	const finTS = 1_000_000
	// closeFlow runs flow sport through a whole connection, the pod's FIN
	// with timestamp fin; the server closes too unless halfOpen.
	closeFlow := func(sport uint16, fin uint32, halfOpen bool) uint16 {
		t.Helper()
		tu := Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: sport, DPort: 80, Proto: TCP}
		fromPod(tcpTS(ip3, sport, extIP, 80, tcpSYN, fin-50))
		p := snatOf(t, d, tu).Port()
		fromExt(tcpTS(extIP, 80, egressA, p, tcpSYN|tcpACK, 7))
		fromPod(tcpTS(ip3, sport, extIP, 80, tcpACK, fin-40))
		fromPod(tcpTS(ip3, sport, extIP, 80, tcpFIN|tcpACK, fin))
		if !halfOpen {
			fromExt(tcpTS(extIP, 80, egressA, p, tcpFIN|tcpACK, 9))
		}
		return p
	}
	sportOnto, newFlow := h.sportOnto, h.newFlow

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

// egressFlows drives TCP flows of pod ip3 (VPC red, on node B) to
// extIP:80 through the gateway of an egress world.
type egressFlows struct {
	t    *testing.T
	d    *Datapath
	next uint16          // the next pod port sportOnto tries
	skip map[uint16]bool // pod ports the test uses by hand
}

func newEgressFlows(t *testing.T, skip ...uint16) *egressFlows {
	h := &egressFlows{t: t, d: newEgressWorld(t), next: 1024, skip: map[uint16]bool{}}
	for _, s := range skip {
		h.skip[s] = true
	}
	return h
}

// fromPod runs a packet of the pod through the gateway: it must go out.
func (h *egressFlows) fromPod(pkt []byte) {
	h.t.Helper()
	if ret, _ := runSKB(h.t, h.d.uplink.FromUplink, geneveFrame(nodeB, vniRed, pkt, geneveOpts{}), uplinkIdx); ret != tcActRedirect {
		h.t.Fatalf("from the pod: verdict %d", int32(ret))
	}
}

// fromExt runs a packet of the server through the gateway: it must go
// back to the pod.
func (h *egressFlows) fromExt(pkt []byte) {
	h.t.Helper()
	if ret, _ := runSKB(h.t, h.d.uplink.FromUplink, fromOutside(pkt), uplinkIdx); ret != tcActRedirect {
		h.t.Fatalf("from the server: verdict %d", int32(ret))
	}
}

// sportOnto finds an unused pod port whose flow's first SNAT candidate is
// port.
func (h *egressFlows) sportOnto(port uint16) uint16 {
	h.t.Helper()
	for ; h.next < 65000; h.next++ {
		if h.skip[h.next] {
			continue
		}
		tu := Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: h.next, DPort: 80, Proto: TCP}
		if egressCandidate(tu, 0) == port {
			h.next++
			return h.next - 1
		}
	}
	h.t.Fatalf("no pod port maps onto %d", port)
	return 0
}

// newFlow sends the first packet of flow sport and returns its SNAT port.
func (h *egressFlows) newFlow(sport uint16, pkt []byte) uint16 {
	h.t.Helper()
	h.fromPod(pkt)
	return snatOf(h.t, h.d, Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: sport, DPort: 80, Proto: TCP}).Port()
}

// TestPrivilegedEgressResetFreesPair: a RST from either side ends the
// flow's port pair CT_CLOSE_TIMEOUT (10 s) later, although the other
// direction, which sends nothing more, is established (it held the port
// for six hours: 4,536 aborted connections to one server exhausted a node
// address); the GC collects both entries then, and nothing earlier.
func TestPrivilegedEgressResetFreesPair(t *testing.T) {
	h := newEgressFlows(t, 41020, 41021, 41022)
	d := h.d
	ctKeys := func(sport, port uint16) (fk, rk lxcCtKey) {
		fk = lxcCtKey{Vni: vniRed, Saddr: ip4(ip3), Daddr: ip4(extIP), Sport: htons(sport), Dport: htons(80), Proto: 6}
		rk = lxcCtKey{Saddr: ip4(extIP), Daddr: ip4(egressA), Sport: htons(80), Dport: htons(port), Proto: 6}
		return fk, rk
	}
	entry := func(k lxcCtKey) (lxcCtEntry, bool) {
		var v lxcCtEntry
		return v, d.lxc.GenieCt.Lookup(&k, &v) == nil
	}
	// reset establishes flow sport, then one side resets it; returns its
	// SNAT port and the key of the entry that carried the RST.
	reset := func(sport uint16, podResets bool) (uint16, lxcCtKey) {
		t.Helper()
		h.fromPod(tcpIP(ip3, sport, extIP, 80, tcpSYN, nil))
		p := snatOf(t, d, Tuple{VNI: vniRed, Src: ip3, Dst: extIP, SPort: sport, DPort: 80, Proto: TCP}).Port()
		h.fromExt(tcpIP(extIP, 80, egressA, p, tcpSYN|tcpACK, nil))
		h.fromPod(tcpIP(ip3, sport, extIP, 80, tcpACK, payload(10)))
		h.fromExt(tcpIP(extIP, 80, egressA, p, tcpACK, payload(10)))
		fk, rk := ctKeys(sport, p)
		if podResets {
			h.fromPod(tcpIP(ip3, sport, extIP, 80, tcpRST|tcpACK, nil))
		} else {
			h.fromExt(tcpIP(extIP, 80, egressA, p, tcpRST|tcpACK, nil))
			fk, rk = rk, fk
		}
		// fk: the direction that carried the RST; rk: the other.
		v, ok := entry(fk)
		if ttl := time.Duration(v.Expires) - monotonicNow(); !ok || v.Flags&ctFlagRST == 0 ||
			ConntrackState(v.State) != ConntrackClosing || ttl > 10*time.Second || ttl < 5*time.Second {
			t.Fatalf("flow %d: the reset direction's entry %+v (present %v): want closing, reset, about 10 s left", sport, v, ok)
		}
		if v, ok := entry(rk); !ok || ConntrackState(v.State) != ConntrackEstablished {
			t.Fatalf("flow %d: the other direction's entry %+v (present %v): want it established (it sent nothing since)", sport, v, ok)
		}
		return p, fk
	}
	age := func(k lxcCtKey) {
		t.Helper()
		v, _ := entry(k)
		v.Expires = uint64(monotonicNow() - time.Second)
		if err := d.lxc.GenieCt.Update(&k, &v, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name      string
		sport     uint16
		podResets bool
	}{{"the pod resets", 41020, true}, {"the server resets", 41021, false}} {
		p, rst := reset(c.sport, c.podResets)
		s := h.sportOnto(p)
		if got := h.newFlow(s, tcpIP(ip3, s, extIP, 80, tcpSYN, nil)); got == p {
			t.Errorf("%s: a new flow took the pair %d inside the 10 s after the RST", c.name, p)
		}
		age(rst) // 10 s later
		s = h.sportOnto(p)
		if got := h.newFlow(s, tcpIP(ip3, s, extIP, 80, tcpSYN, nil)); got != p {
			t.Errorf("%s: a new flow got port %d after the RST's 10 s, want the freed pair %d", c.name, got, p)
		}
		fk, _ := ctKeys(c.sport, p)
		if v, ok := entry(fk); ok && v.SrcPort == htons(p) {
			t.Errorf("%s: the reset flow's forward entry is still there: %+v", c.name, v)
		}
	}
	// The GC: a reset pair goes once the RST's entry expired, not before.
	p, rst := reset(41022, true)
	fk, rk := ctKeys(41022, p)
	if _, err := d.GCConntrack(); err != nil {
		t.Fatal(err)
	}
	if _, ok := entry(rk); !ok {
		t.Fatal("the GC took a reset pair inside its 10 s")
	}
	age(rst)
	if _, err := d.GCConntrack(); err != nil {
		t.Fatal(err)
	}
	for name, k := range map[string]lxcCtKey{"forward": fk, "reply": rk} {
		if v, ok := entry(k); ok {
			t.Errorf("the GC left the reset pair's %s entry %+v", name, v)
		}
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
