package datapath

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

// The fuzz targets run both programs against random and mutated frames with
// the fixture world loaded: two VPCs (red, blue) with the same CIDR and the
// same pod addresses. Besides "Run never fails", they assert isolation: a
// frame the program delivers or encapsulates must be for an endpoint of the
// sender's VPC. Seeds live in testdata/fuzz/<Name>/ and run as plain tests.

// worldEndpoint is the Go-side view of the fixture world for the oracles.
type worldEndpoint struct {
	vni    uint32
	ip     netip.Addr
	mac    net.HardwareAddr
	local  bool
	nodeIP netip.Addr
}

func worldEndpoints() []worldEndpoint {
	var out []worldEndpoint
	for _, e := range []LocalEndpoint{redA, redB, blueA} {
		out = append(out, worldEndpoint{vni: e.VNI, ip: e.IP, mac: e.MAC, local: true})
	}
	for _, e := range []RemoteEndpoint{redR, blueR, blueB, redC, redD, redE, redF} {
		out = append(out, worldEndpoint{vni: e.VNI, ip: e.IP, mac: e.MAC, nodeIP: e.NodeIP})
	}
	return out
}

func findEndpoint(vni uint32, ip netip.Addr) (worldEndpoint, bool) {
	for _, e := range worldEndpoints() {
		if e.vni == vni && e.ip == ip {
			return e, true
		}
	}
	return worldEndpoint{}, false
}

// fuzzSenders maps the fuzzer's sender selector to an ingress ifindex.
var fuzzSenders = []LocalEndpoint{redA, redB, blueA, {HostIfindex: 4242}}

// kernelRejects reports frames BPF_PROG_RUN refuses before running the
// program: shorter than Ethernet, IPv4/IPv6 shorter than their header, or larger
// than the single page the test skb is built in (about 3.7 KB on x86-64; we
// stay well below so the oracle never depends on the exact limit).
func kernelRejects(pkt []byte) bool {
	if len(pkt) < 14 || len(pkt) > 3000 {
		return true
	}
	switch binary.BigEndian.Uint16(pkt[12:14]) {
	case etherIPv4:
		return len(pkt) < 14+20
	case etherIPv6:
		return len(pkt) < 14+40
	}
	return false
}

func addr4(b []byte) netip.Addr { return netip.AddrFrom4([4]byte(b[:4])) }

// fuzzFromPod runs the from_pod program prog on pkt as sent by the fuzz
// sender sel picks, and checks what every from_pod fuzz target requires:
// a verdict of drop (frame unmodified) or redirect, and nothing forwarded
// for an unknown interface. ok is false for a drop: nothing left to check.
func fuzzFromPod(t *testing.T, prog *ebpf.Program, sel uint8, pkt []byte) (sender LocalEndpoint, out []byte, ok bool) {
	t.Helper()
	if kernelRejects(pkt) {
		t.Skip("frame refused by BPF_PROG_RUN itself")
	}
	sender = fuzzSenders[int(sel)%len(fuzzSenders)]
	ret, out := runSKB(t, prog, pkt, sender.HostIfindex)
	switch ret {
	case tcActShot:
		if !bytes.Equal(out, pkt) {
			t.Fatalf("dropped frame was modified")
		}
		return sender, out, false
	case tcActRedirect:
	default:
		t.Fatalf("unexpected verdict %d", int32(ret))
	}
	if sender.VNI == 0 {
		t.Fatalf("frame from an unknown interface was forwarded")
	}
	return sender, out, true
}

func FuzzLxc(f *testing.F) {
	d := newWorld(f)
	for _, fx := range lxcSeedFrames() {
		f.Add(fx.sender, fx.frame)
	}
	f.Fuzz(func(t *testing.T, sel uint8, pkt []byte) {
		sender, out, ok := fuzzFromPod(t, d.lxc.FromPod, sel, pkt)
		if !ok {
			return
		}
		checkLxcOutput(t, sender, pkt, out)
	})
}

// checkLxcOutput is the isolation oracle for a frame the lxc program
// redirected on behalf of sender.
func checkLxcOutput(t *testing.T, sender LocalEndpoint, in, out []byte) {
	t.Helper()
	if len(out) < 14 {
		t.Fatalf("redirected frame of %d bytes", len(out))
	}
	switch binary.BigEndian.Uint16(out[12:14]) {
	case etherARP:
		// ARP reply to the sender itself, for the sender's address.
		if len(out) < 42 || !bytes.Equal(out[0:6], sender.MAC) || !bytes.Equal(out[32:38], sender.MAC) || addr4(out[38:42]) != sender.IP {
			t.Fatalf("arp reply not addressed to the asking pod: %x", out)
		}
		return
	case etherIPv4:
	default:
		t.Fatalf("redirected frame with ethertype %#x", binary.BigEndian.Uint16(out[12:14]))
	}
	if len(out) == 70 && len(in) > 70 && out[23] == protoICMP {
		// ICMP fragmentation needed: back to the sender, about its packet.
		if out[34] != 3 || out[35] != 4 || !bytes.Equal(out[0:6], sender.MAC) || addr4(out[30:34]) != sender.IP ||
			!bytes.Equal(out[42:70], in[14:42]) {
			t.Fatalf("icmp is not a frag-needed to the sender about its packet: %x", out)
		}
		return
	}
	if len(out) == len(in)+EncapOverhead {
		// Encapsulated: the VNI must be the sender's, the inner frame for
		// a remote endpoint of that VPC on the outer destination node.
		if out[23] != protoUDP || binary.BigEndian.Uint16(out[36:38]) != GenevePort {
			t.Fatalf("grown frame is not geneve: %x", out[:64])
		}
		vni := uint32(out[46])<<16 | uint32(out[47])<<8 | uint32(out[48])
		if vni != sender.VNI {
			t.Fatalf("encapsulated with vni %d for a sender in vni %d", vni, sender.VNI)
		}
		inner := out[64:]
		if addr4(inner[12:16]) != sender.IP {
			t.Fatalf("encapsulated inner source %s, sender is %s", addr4(inner[12:16]), sender.IP)
		}
		dst, ok := findEndpoint(vni, addr4(inner[16:20]))
		if !ok || dst.local || dst.nodeIP != addr4(out[30:34]) || !bytes.Equal(out[50:56], dst.mac) {
			t.Fatalf("encapsulated to a destination outside the sender's vpc: %x", out[:64])
		}
		return
	}
	// Local delivery: same length, for a local endpoint of the sender's VPC.
	if len(out) != len(in) {
		t.Fatalf("local delivery changed the length from %d to %d", len(in), len(out))
	}
	if addr4(out[26:30]) != sender.IP {
		t.Fatalf("delivered source %s, sender is %s", addr4(out[26:30]), sender.IP)
	}
	dst, ok := findEndpoint(sender.VNI, addr4(out[30:34]))
	if !ok || !dst.local || !bytes.Equal(out[0:6], dst.mac) || !bytes.Equal(out[6:12], gwMAC) {
		t.Fatalf("delivered to a destination outside the sender's vpc: %x", out[:34])
	}
	if !bytes.Equal(out[14:], in[14:]) {
		t.Fatalf("local delivery modified the IP packet")
	}
}

func FuzzUplink(f *testing.F) {
	d := newWorld(f)
	for _, fx := range uplinkFixtures() {
		f.Add(fx.in)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) < 14 || len(pkt) > 3000 {
			t.Skip("frame refused by BPF_PROG_RUN itself")
		}
		// The XDP prefilter never modifies and never delivers.
		xret, xout := runXDP(t, d.uplink.UplinkPrefilter, pkt)
		if xret != xdpPass && xret != xdpDrop {
			t.Fatalf("prefilter verdict %d", xret)
		}
		if !bytes.Equal(xout, pkt) {
			t.Fatalf("prefilter modified the frame")
		}

		if kernelRejects(pkt) {
			return // the skb test runner refuses it; XDP was checked
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
		if xret == xdpDrop {
			t.Fatalf("prefilter drops a frame the tc program delivers")
		}
		checkUplinkOutput(t, pkt, out)
	})
}

// checkUplinkOutput is the isolation oracle for a decapsulated frame.
func checkUplinkOutput(t *testing.T, in, out []byte) {
	t.Helper()
	if len(in) < 64+20 || len(out) != len(in)-EncapOverhead {
		t.Fatalf("delivered %d bytes from a %d byte frame", len(out), len(in))
	}
	if addr4(in[30:34]) != nodeA || binary.BigEndian.Uint16(in[36:38]) != GenevePort {
		t.Fatalf("delivered a frame that was not geneve to this node: %x", in[:64])
	}
	vni := uint32(in[46])<<16 | uint32(in[47])<<8 | uint32(in[48])
	outerSrc := addr4(in[26:30])
	dst, ok := findEndpoint(vni, addr4(out[30:34]))
	if !ok || !dst.local || !bytes.Equal(out[0:6], dst.mac) || !bytes.Equal(out[6:12], gwMAC) {
		t.Fatalf("vni %d delivered to a pod outside that vpc: %x", vni, out[:34])
	}
	src, ok := findEndpoint(vni, addr4(out[26:30]))
	if !ok || src.local || src.nodeIP != outerSrc {
		t.Fatalf("vni %d accepted inner source %s from node %s", vni, addr4(out[26:30]), outerSrc)
	}
	if !bytes.Equal(out[14:], in[64:]) {
		t.Fatalf("decapsulation modified the inner packet")
	}
}

type lxcSeed struct {
	sender uint8
	frame  []byte
}

// lxcSeedFrames are well-formed starting points for the lxc fuzzer.
func lxcSeedFrames() []lxcSeed {
	return []lxcSeed{
		{0, podIP(redA.MAC, ip1, ip2, ipOpts{})},
		{0, podIP(redA.MAC, ip1, ip3, ipOpts{})},
		{2, podIP(blueA.MAC, ip1, ip2, ipOpts{})},
		{2, podIP(blueA.MAC, ip1, ip3, ipOpts{})},
		{1, podIP(redB.MAC, ip2, ip1, ipOpts{})},
		{0, cat(ethHdr(mustMAC("ff:ff:ff:ff:ff:ff"), redA.MAC, etherARP), arpPkt(1, redA.MAC, ip1, make([]byte, 6), ip2))},
		{2, podIP(redA.MAC, ip1, ip2, ipOpts{})},
		{3, podIP(redA.MAC, ip1, ip2, ipOpts{})},
		// Underlay next hops: routed, unresolved, unreachable, too big
		// for the path (DF: ICMP back), too big without DF.
		{0, podIP(redA.MAC, ip1, ipD, ipOpts{})},
		{0, podIP(redA.MAC, ip1, ip9, ipOpts{})},
		{0, podIP(redA.MAC, ip1, ipE, ipOpts{})},
		{0, cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipv4Pkt(ip1, ipF, protoTCP, payload(1300), ipOpts{fragOff: 0x4000}))},
		{0, cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipv4Pkt(ip1, ipF, protoUDP, udpPkt(40000, 5201, payload(1300)), ipOpts{}))},
	}
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/* from the seed frames when
// GENIE_WRITE_FUZZ_SEEDS=1 (kept so seeds follow fixture changes).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("GENIE_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set GENIE_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	write := func(name string, i int, body string) {
		dir := "testdata/fuzz/" + name
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir+"/seed"+string(rune('a'+i)), []byte("go test fuzz v1\n"+body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range lxcSeedFrames() {
		write("FuzzLxc", i, "byte('\\x0"+string(rune('0'+s.sender))+"')\n[]byte("+goQuote(s.frame)+")\n")
	}
	for i, fx := range uplinkFixtures()[:8] {
		write("FuzzUplink", i, "[]byte("+goQuote(fx.in)+")\n")
	}
}

func goQuote(b []byte) string {
	var s bytes.Buffer
	s.WriteByte('"')
	for _, c := range b {
		s.WriteString(`\x`)
		s.WriteString("0123456789abcdef"[c>>4 : c>>4+1])
		s.WriteString("0123456789abcdef"[c&15 : c&15+1])
	}
	s.WriteByte('"')
	return s.String()
}
