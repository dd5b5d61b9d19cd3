package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"testing"
	"time"
)

// FuzzEgress runs from_pod (sel < 0x80: the sender fuzzSenders picks) or
// from_uplink (sel >= 0x80) on random and mutated frames in the egress
// world, conntrack and pins accumulating over the run. The oracle:
//   - nothing is delivered or encapsulated into another VPC than the
//     sender's (from_pod) or the packet's (from_uplink, or the flow's VPC
//     for a reply from outside);
//   - nothing leaves for the outside with a pod's address: a frame sent to
//     the router carries the egress address as its source (never an
//     un-NATed leak), and only for a VPC this node is a gateway of.
func FuzzEgress(f *testing.F) {
	d := newEgressWorld(f)
	for _, s := range egressSeeds() {
		f.Add(s.sender, s.frame)
	}
	f.Fuzz(func(t *testing.T, sel uint8, pkt []byte) {
		if sel < 0x80 {
			sender, out, ok := fuzzFromPod(t, d.lxc.FromPod, sel, pkt)
			if ok {
				checkEgressPodOutput(t, sender, pkt, out)
			}
			return
		}
		if kernelRejects(pkt) {
			t.Skip("frame refused by BPF_PROG_RUN itself")
		}
		ret, out := runSKB(t, d.uplink.FromUplink, pkt, uplinkIdx)
		switch ret {
		case tcxNext:
			if !bytes.Equal(out, pkt) {
				t.Fatalf("passed frame was modified")
			}
			return
		case tcActShot:
			return // may be decapsulated already (a failed send): never leaves
		case tcActRedirect:
		default:
			t.Fatalf("unexpected verdict %d", int32(ret))
		}
		checkEgressUplinkOutput(t, pkt, out)
	})
}

// isPodAddr: an address inside the fixture VPCs' CIDR.
func isPodAddr(a netip.Addr) bool { return netip.MustParsePrefix("10.0.0.0/24").Contains(a) }

// checkSentOut: a frame to the outside (to the router) comes from the
// egress address, for a VPC this node serves.
func checkSentOut(t *testing.T, out []byte) bool {
	t.Helper()
	if len(out) < 34 || !bytes.Equal(out[0:6], routerMAC) {
		return false
	}
	if src := addr4(out[26:30]); src != egressA {
		t.Fatalf("sent to the outside from %s, not the egress address: %x", src, out[:34])
	}
	if isPodAddr(addr4(out[30:34])) {
		t.Fatalf("sent a pod address to the outside: %x", out[:34])
	}
	return true
}

func checkEgressPodOutput(t *testing.T, sender LocalEndpoint, in, out []byte) {
	t.Helper()
	if checkSentOut(t, out) {
		if sender.VNI != vniBlue { // the only VPC whose gateway is this node
			t.Fatalf("vni %d sent out here, its gateway is b", sender.VNI)
		}
		return
	}
	if len(out) == len(in)+EncapOverhead && len(out) >= 84 && binary.BigEndian.Uint16(out[36:38]) == GenevePort {
		vni := uint32(out[46])<<16 | uint32(out[47])<<8 | uint32(out[48])
		inner := out[64:]
		dst := addr4(inner[16:20])
		if vni != sender.VNI || addr4(inner[12:16]) != sender.IP {
			t.Fatalf("encapsulated with vni %d from %s for sender %d/%s", vni, addr4(inner[12:16]), sender.VNI, sender.IP)
		}
		if _, ok := findEndpoint(vni, dst); !ok {
			// To the outside: only red goes through a tunnel, to b (or
			// d, which the drain test's policy does not reach here).
			if isPodAddr(dst) || vni != vniRed || addr4(out[30:34]) != nodeB {
				t.Fatalf("egress of vni %d to %s tunnelled to %s", vni, dst, addr4(out[30:34]))
			}
			return
		}
	}
	checkLxcOutput(t, sender, in, out)
}

func checkEgressUplinkOutput(t *testing.T, in, out []byte) {
	t.Helper()
	if checkSentOut(t, out) {
		// Only Geneve of red or blue from an endpoint's node leaves.
		if len(in) < 84 || binary.BigEndian.Uint16(in[36:38]) != GenevePort {
			t.Fatalf("sent out a frame that came from outside: %x", in)
		}
		vni := uint32(in[46])<<16 | uint32(in[47])<<8 | uint32(in[48])
		src, ok := findEndpoint(vni, addr4(in[64+12:64+16]))
		if (vni != vniRed && vni != vniBlue) || !ok || src.local || src.nodeIP != addr4(in[26:30]) {
			t.Fatalf("vni %d from %s sent out for inner source %s", vni, addr4(in[26:30]), addr4(in[64+12:64+16]))
		}
		return
	}
	if len(out) < 34 {
		t.Fatalf("redirected %d bytes", len(out))
	}
	if len(out) >= 84 && binary.BigEndian.Uint16(out[36:38]) == GenevePort && out[23] == protoUDP {
		// A reply from outside, encapsulated to the pod's node: the inner
		// destination is an endpoint of that VNI on that node, the inner
		// source is no pod address.
		vni := uint32(out[46])<<16 | uint32(out[47])<<8 | uint32(out[48])
		dst, ok := findEndpoint(vni, addr4(out[64+16:64+20]))
		if !ok || dst.local || dst.nodeIP != addr4(out[30:34]) || isPodAddr(addr4(out[64+12:64+16])) {
			t.Fatalf("reply tunnelled outside its vpc: %x", out[:84])
		}
		return
	}
	// Delivered to a local pod: of the Geneve packet's VNI, or for a reply
	// from outside, whose source is an outside address.
	dst, ok := findLocalByMAC(out[0:6])
	if !ok || addr4(out[30:34]) != dst.ip {
		t.Fatalf("delivered to no local pod: %x", out[:34])
	}
	if len(in) >= 84 && binary.BigEndian.Uint16(in[36:38]) == GenevePort && addr4(in[30:34]) == nodeA {
		if vni := uint32(in[46])<<16 | uint32(in[47])<<8 | uint32(in[48]); vni != dst.vni {
			t.Fatalf("vni %d delivered to a pod of vni %d", vni, dst.vni)
		}
		return
	}
	if isPodAddr(addr4(out[26:30])) {
		t.Fatalf("a frame from outside delivered with a pod source: %x", out[:34])
	}
}

func findLocalByMAC(mac []byte) (worldEndpoint, bool) {
	for _, e := range worldEndpoints() {
		if e.local && bytes.Equal(e.mac, mac) {
			return e, true
		}
	}
	return worldEndpoint{}, false
}

// egressSeeds: pod egress (tunnelled, local SNAT, unselected, unsupported),
// gateway traffic of both VPCs, replies from outside.
func egressSeeds() []lxcSeed {
	return []lxcSeed{
		{0, frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, extIP, 443, tcpSYN, nil))},
		{2, frame(gwMAC, blueA.MAC, tcpIP(ip1, 40000, extIP, 443, tcpSYN, nil))},
		{2, frame(gwMAC, blueA.MAC, icmpIP(ip1, extIP, 8, 77))},
		{1, frame(gwMAC, redB.MAC, udpIP(ip2, 40001, extIP2, 53, payload(20)))},
		{0, frame(gwMAC, redA.MAC, ipv4Pkt(ip1, extIP, 47, payload(24), ipOpts{}))},
		{0x80, geneveFrame(nodeB, vniRed, tcpIP(ip3, 40000, extIP, 80, tcpSYN, nil), geneveOpts{})},
		{0x80, geneveFrame(nodeB, vniBlue, tcpIP(ip3, 40000, extIP, 80, tcpSYN, nil), geneveOpts{})},
		{0x80, geneveFrame(nodeB, vniRed, icmpIP(ip3, extIP, 8, 0x1234), geneveOpts{})},
		{0x80, geneveFrame(nodeB, vniRed, tcpIP(extIP, 443, ip1, 40000, tcpSYN|tcpACK, nil), geneveOpts{})},
		{0x80, fromOutside(tcpIP(extIP, 80, egressA, 62000, tcpSYN|tcpACK, nil))},
		{0x80, fromOutside(icmpIP(extIP, egressA, 0, 63000))},
	}
}

// TestWriteEgressFuzzSeeds regenerates testdata/fuzz/FuzzEgress when
// GENIE_WRITE_FUZZ_SEEDS=1.
func TestWriteEgressFuzzSeeds(t *testing.T) {
	if os.Getenv("GENIE_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set GENIE_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	dir := "testdata/fuzz/FuzzEgress"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range egressSeeds() {
		body := "go test fuzz v1\nbyte('\\x" + string("0123456789abcdef"[s.sender>>4]) + string("0123456789abcdef"[s.sender&15]) + "')\n[]byte(" + goQuote(s.frame) + ")\n"
		if err := os.WriteFile(dir+"/seed"+string(rune('a'+i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPrivilegedEgressGC: an egress SNAT pair (reply key without VNI) goes
// when both sides expired and stays while one lives; expired pod-side pins
// go.
func TestPrivilegedEgressGC(t *testing.T) {
	d := newEgressWorld(t)
	if ret, _ := runSKB(t, d.uplink.FromUplink, geneveFrame(nodeB, vniRed, tcpIP(ip3, 40000, extIP, 80, tcpSYN, nil), geneveOpts{}), uplinkIdx); ret != tcActRedirect {
		t.Fatalf("verdict %d", ret)
	}
	if ret, _ := runSKB(t, d.lxc.FromPod, frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, extIP, 443, tcpSYN, nil)), redA.HostIfindex); ret != tcActRedirect {
		t.Fatalf("verdict %d", ret)
	}
	var (
		k      lxcCtKey
		v      lxcCtEntry
		fk, rk lxcCtKey
		fv, rv lxcCtEntry
	)
	it := d.lxc.GenieCt.Iterate()
	for it.Next(&k, &v) {
		if v.Flags&ctFlagEgress != 0 && v.Flags&ctFlagReply == 0 {
			fk, fv = k, v
		} else if v.Flags&ctFlagEgress != 0 {
			rk, rv = k, v
		}
	}
	if rk.Vni != 0 || fk.Vni != vniRed || partnerKey(fk, fv) != rk || partnerKey(rk, rv) != fk {
		t.Fatalf("egress pair %+v / %+v: partners do not match", fk, rk)
	}
	past := uint64(monotonicNow() - time.Second)
	fv.Expires = past
	if err := d.lxc.GenieCt.Put(&fk, &fv); err != nil {
		t.Fatal(err)
	}
	st, err := d.GCConntrack()
	if err != nil || st.Deleted != 0 || st.EgressFlows != 1 {
		t.Fatalf("gc with a live reply side: %+v %v, want nothing deleted and 1 pin", st, err)
	}
	rv.Expires = past
	if err := d.lxc.GenieCt.Put(&rk, &rv); err != nil {
		t.Fatal(err)
	}
	var pk lxcCtKey
	var pv lxcCtEntry
	it = d.lxc.GenieEgressFlows.Iterate()
	for it.Next(&pk, &pv) {
		pv.Expires = past
		if err := d.lxc.GenieEgressFlows.Put(&pk, &pv); err != nil {
			t.Fatal(err)
		}
	}
	st, err = d.GCConntrack()
	if err != nil || st.Deleted != 2 || st.Entries != 0 || st.EgressFlowsDeleted != 1 || st.EgressFlows != 0 {
		t.Fatalf("gc of an expired pair and pin: %+v %v", st, err)
	}
}
