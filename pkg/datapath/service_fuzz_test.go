package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"testing"
)

// FuzzLxcService runs from_pod on random and mutated frames in the fixture
// world with services (service_test.go), conntrack state accumulating over
// the run. The oracle: nothing is ever delivered or encapsulated into
// another VPC than the sender's; a rewritten packet only ever carries the
// sender's address, a VIP of the sender's VPC or an endpoint of that VPC.
func FuzzLxcService(f *testing.F) {
	d := newServiceWorld(f)
	for _, s := range serviceSeedFrames() {
		f.Add(s.sender, s.frame)
	}
	f.Fuzz(func(t *testing.T, sel uint8, pkt []byte) {
		sender, out, ok := fuzzFromPod(t, d.lxc.FromPod, sel, pkt)
		if !ok {
			return
		}
		if len(out) >= 14 && binary.BigEndian.Uint16(out[12:14]) == etherARP {
			checkLxcOutput(t, sender, pkt, out)
			return
		}
		checkServiceOutput(t, sender.VNI, sender.IP, pkt, out)
	})
}

// FuzzUplinkService is FuzzUplink's isolation oracle in the service world:
// a decapsulated packet reaches only a local endpoint of its VNI, from an
// endpoint of that VNI on the sending node or from a VIP of that VNI.
func FuzzUplinkService(f *testing.F) {
	d := newServiceWorld(f)
	for _, in := range uplinkServiceSeeds() {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if kernelRejects(pkt) {
			t.Skip("frame refused by BPF_PROG_RUN itself")
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
		if len(pkt) < 64+20 || len(out) != len(pkt)-EncapOverhead || addr4(pkt[30:34]) != nodeA {
			t.Fatalf("delivered %d bytes from a %d byte frame", len(out), len(pkt))
		}
		vni := uint32(pkt[46])<<16 | uint32(pkt[47])<<8 | uint32(pkt[48])
		dst, ok := findEndpoint(vni, addr4(out[30:34]))
		if !ok || !dst.local || !bytes.Equal(out[0:6], dst.mac) {
			t.Fatalf("vni %d delivered to a pod outside that vpc: %x", vni, out[:34])
		}
		// The inner source passed the check before any rewrite: it is an
		// endpoint of the VNI on the outer source node, or became its VIP.
		src := addr4(out[26:30])
		if e, ok := findEndpoint(vni, src); !(ok && !e.local && e.nodeIP == addr4(pkt[26:30])) && !isVIP(vni, src) {
			t.Fatalf("vni %d delivered with source %s", vni, src)
		}
	})
}

// uplinkServiceSeeds: replies of remote backends (one matching a flow the
// lxc fuzzer may have opened) and plain decap frames.
func uplinkServiceSeeds() [][]byte {
	out := [][]byte{
		geneveFrame(nodeB, vniRed, udpIP(ip3, 5353, ip1, 33000, payload(20)), geneveOpts{}),
		geneveFrame(nodeB, vniRed, tcpIP(ip3, 5353, ip1, 40000, tcpACK, payload(10)), geneveOpts{}),
		geneveFrame(nodeB, vniBlue, udpIP(ip3, 5353, ip1, 33000, payload(20)), geneveOpts{}),
	}
	for _, fx := range uplinkFixtures()[:3] {
		out = append(out, fx.in)
	}
	return out
}

// isVIP reports whether a is a VIP of a service of vni in the fixture world.
func isVIP(vni uint32, a netip.Addr) bool {
	for _, k := range []ServiceKey{svcWeb, svcDNS, svcSelf, svcNone} {
		if k.VNI == vni && k.VIP == a {
			return true
		}
	}
	return false
}

// checkServiceOutput: the frame a sender of VPC vni (address ip) sent came
// out encapsulated with its VNI to a remote endpoint of that VPC, or
// delivered locally to a local endpoint of that VPC.
func checkServiceOutput(t *testing.T, vni uint32, ip netip.Addr, in, out []byte) {
	t.Helper()
	if len(out) < 34 || binary.BigEndian.Uint16(out[12:14]) != etherIPv4 {
		t.Fatalf("redirected a non-ipv4 frame: %x", out)
	}
	srcOK := func(a netip.Addr) bool { return a == ip || isVIP(vni, a) }
	if len(out) == len(in)+EncapOverhead {
		if out[23] != protoUDP || binary.BigEndian.Uint16(out[36:38]) != GenevePort {
			t.Fatalf("grown frame is not geneve: %x", out[:64])
		}
		if v := uint32(out[46])<<16 | uint32(out[47])<<8 | uint32(out[48]); v != vni {
			t.Fatalf("encapsulated with vni %d for a sender in vni %d", v, vni)
		}
		inner := out[64:]
		dst, ok := findEndpoint(vni, addr4(inner[16:20]))
		if !ok || dst.local || dst.nodeIP != addr4(out[30:34]) || !srcOK(addr4(inner[12:16])) {
			t.Fatalf("encapsulated outside the sender's vpc: %x", out[:84])
		}
		return
	}
	if len(out) != len(in) {
		t.Fatalf("local delivery changed the length from %d to %d", len(in), len(out))
	}
	dst, ok := findEndpoint(vni, addr4(out[30:34]))
	if !ok || !dst.local || !bytes.Equal(out[0:6], dst.mac) || !srcOK(addr4(out[26:30])) {
		t.Fatalf("delivered outside the sender's vpc: %x", out[:34])
	}
}

// serviceSeedFrames are service hits, replies and hairpins for the fuzzer.
func serviceSeedFrames() []lxcSeed {
	return []lxcSeed{
		{0, frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, vipWeb, 80, tcpSYN, nil))},
		{1, frame(gwMAC, redB.MAC, tcpIP(ip2, 8080, ip1, 40000, tcpSYN|tcpACK, nil))},
		{0, frame(gwMAC, redA.MAC, udpIP(ip1, 33000, vipDNS, 53, payload(20)))},
		{0, frame(gwMAC, redA.MAC, tcpIP(ip1, 40001, vipSelf, 80, tcpSYN, nil))},
		{0, frame(gwMAC, redA.MAC, tcpIP(ip1, 8080, vipSelf, 40001, tcpSYN|tcpACK, nil))},
		{2, frame(gwMAC, blueA.MAC, tcpIP(ip1, 40000, vipWeb, 80, tcpSYN, nil))},
		{0, frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, vipNone, 80, tcpSYN, nil))},
		// First and later fragments to a frontend (SVC_FRAGMENT, NO_ROUTE).
		{0, frame(gwMAC, redA.MAC, ipv4Pkt(ip1, vipDNS, protoUDP, udpPkt(33002, 53, payload(64)), ipOpts{fragOff: 0x2000, id: 9}))},
		{0, frame(gwMAC, redA.MAC, ipv4Pkt(ip1, vipDNS, protoUDP, payload(64), ipOpts{fragOff: 8, id: 9}))},
	}
}

// TestWriteServiceFuzzSeeds regenerates testdata/fuzz/FuzzLxcService when
// GENIE_WRITE_FUZZ_SEEDS=1.
func TestWriteServiceFuzzSeeds(t *testing.T) {
	if os.Getenv("GENIE_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set GENIE_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	dir := "testdata/fuzz/FuzzLxcService"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range serviceSeedFrames() {
		body := "go test fuzz v1\nbyte('\\x0" + string(rune('0'+s.sender)) + "')\n[]byte(" + goQuote(s.frame) + ")\n"
		if err := os.WriteFile(dir+"/seed"+string(rune('a'+i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir = "testdata/fuzz/FuzzUplinkService"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, in := range uplinkServiceSeeds() {
		body := "go test fuzz v1\n[]byte(" + goQuote(in) + ")\n"
		if err := os.WriteFile(dir+"/seed"+string(rune('a'+i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
