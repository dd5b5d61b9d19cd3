package datapath

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/directory"
)

// The directory world: the fixture world (world_test.go) in directory
// mode with 4096 shards, A, B, C and D members. Besides the fixture's
// endpoints (which stay in genie_endpoints), A knows:
//
//	learned  red 10.0.0.20 on B        (genie_dir_lru)
//	learned  red 10.0.0.23 on C
//	held     red 10.0.0.21 on B        (genie_dir_held: A holds its shard)
//	held     red 10.0.0.30 on D
//	held     red 10.0.0.31 on B
//
// Shards: 10.0.0.22's is held by [A, B] (A bounces to B), 10.0.0.24's by
// [A] only, red 10.0.0.1's (a local endpoint) by [B, C], the golden keys'
// (TestShardOfGolden) by B, C and D; every other shard is empty.
var (
	ipLearned  = netip.MustParseAddr("10.0.0.20")
	ipLearnedC = netip.MustParseAddr("10.0.0.23")
	ipHeld     = netip.MustParseAddr("10.0.0.21")
	ipHeldD    = netip.MustParseAddr("10.0.0.30")
	ipHeldB    = netip.MustParseAddr("10.0.0.31")
	ipUnknown  = netip.MustParseAddr("10.0.0.22")
	ipSelfOnly = netip.MustParseAddr("10.0.0.24")
	macLearned = mustMAC("0a:00:00:00:64:14")
	macHeld    = mustMAC("0a:00:00:00:64:15")
	macHeldD   = mustMAC("0a:00:00:00:64:1e")

	// The golden keys of pkg/directory's TestShardOfGolden, each sent by
	// a local pod of its VNI to a holder chosen by its shard.
	goldens = []struct {
		vni      uint32
		src, dst netip.Addr
		shard    uint32
		holder   netip.Addr
		dmac     net.HardwareAddr // outer MACs (zero: neighbour unresolved)
		smac     net.HardwareAddr
	}{
		{1, netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("10.0.0.1"), 3135, nodeB, nodeBMAC, uplinkMAC},
		{7, netip.MustParseAddr("10.1.2.4"), netip.MustParseAddr("10.1.2.3"), 2570, nodeC, make(net.HardwareAddr, 6), make(net.HardwareAddr, 6)},
		{16777215, netip.MustParseAddr("192.168.255.253"), netip.MustParseAddr("192.168.255.254"), 787, nodeD, routerMAC, uplinkMAC},
	}
)

func shardOf(vni uint32, ip netip.Addr) uint32 {
	return directory.Key{VNI: vni, IP: ip}.Shard(4096)
}

// bounceMAC is the inner source MAC of a bounced packet.
func bounceMAC(mark byte, origin netip.Addr) net.HardwareAddr {
	a := origin.As4()
	return net.HardwareAddr{0x06, mark, a[0], a[1], a[2], a[3]}
}

func newDirectoryWorld(tb testing.TB) *Datapath {
	tb.Helper()
	d := newWorld(tb)
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(d.SetDirectoryMode(true, 4096))
	must(d.SetDirectoryNodes([]netip.Addr{nodeA, nodeB, nodeC, nodeD}))
	for _, e := range []DirectoryEntry{
		{VNI: vniRed, IP: ipLearned, NodeIP: nodeB, MAC: macLearned, Version: 5},
		{VNI: vniRed, IP: ipLearnedC, NodeIP: nodeC, MAC: macLearned, Version: 5},
	} {
		if _, err := d.LearnRemote(e); err != nil {
			tb.Fatal(err)
		}
	}
	for _, e := range []DirectoryEntry{
		{VNI: vniRed, IP: ipHeld, NodeIP: nodeB, MAC: macHeld, Version: 6},
		{VNI: vniRed, IP: ipHeldD, NodeIP: nodeD, MAC: macHeldD, Version: 6},
		{VNI: vniRed, IP: ipHeldB, NodeIP: nodeB, MAC: macHeld, Version: 6},
	} {
		must(d.UpsertHeld(e))
	}
	must(d.SetDirectoryShard(shardOf(vniRed, ipUnknown), []netip.Addr{nodeA, nodeB}))
	must(d.SetDirectoryShard(shardOf(vniRed, ipSelfOnly), []netip.Addr{nodeA}))
	must(d.SetDirectoryShard(shardOf(vniRed, ip1), []netip.Addr{nodeB, nodeC}))
	for i, g := range goldens {
		must(d.SetDirectoryShard(g.shard, []netip.Addr{g.holder}))
		must(d.UpsertLocalEndpoint(LocalEndpoint{VNI: g.vni, IP: g.src, MAC: mustMAC(fmt.Sprintf("0a:00:00:00:0%d:01", i)), HostIfindex: 3001 + i}))
	}
	return d
}

// bounceCheck verifies a bounce request: encapsulated to holder (outer
// MACs dmac and smac), inner destination MAC zero, inner source the
// bounce mark of node A.
func bounceCheck(vni uint32, dmac, smac net.HardwareAddr, holder netip.Addr, innerIP []byte) func(*testing.T, []byte) {
	return func(t *testing.T, out []byte) {
		t.Helper()
		if len(out) != EncapOverhead+14+len(innerIP) {
			t.Fatalf("encapsulated length %d, want %d", len(out), EncapOverhead+14+len(innerIP))
		}
		sport := binary.BigEndian.Uint16(out[34:36])
		inner := cat(ethHdr(make(net.HardwareAddr, 6), bounceMAC(0x67, nodeA), etherIPv4), innerIP)
		udp := udpPkt(sport, GenevePort, cat(geneveHdr(vni, 0, 0, 0, etherTEB), inner))
		want := cat(ethHdr(dmac, smac, etherIPv4), ipv4Pkt(nodeA, holder, protoUDP, udp, ipOpts{fragOff: 0x4000}))
		if !bytes.Equal(out, want) {
			t.Errorf("bounce frame differs\n got %x\nwant %x", out, want)
		}
		if csum16(out[14:34]) != 0 {
			t.Errorf("outer ipv4 checksum does not verify")
		}
	}
}

// dirFrame is a Geneve frame from node `from` to A with the given inner
// Ethernet addresses.
func dirFrame(from netip.Addr, vni uint32, innerDst, innerSrc net.HardwareAddr, innerIP []byte) []byte {
	inner := cat(ethHdr(innerDst, innerSrc, etherIPv4), innerIP)
	udp := udpPkt(51000, GenevePort, cat(geneveHdr(vni, 0, 0, 0, etherTEB), inner))
	return cat(ethHdr(uplinkMAC, nodeBMAC, etherIPv4), ipv4Pkt(from, nodeA, protoUDP, udp, ipOpts{fragOff: 0x4000, ttl: 61, id: 7}))
}

func TestPrivilegedDirectoryLxcFixtures(t *testing.T) {
	d := newDirectoryWorld(t)
	ipTo := func(dst netip.Addr) []byte {
		return ipv4Pkt(ip1, dst, protoUDP, udpPkt(40000, 5201, payload(64)), ipOpts{})
	}
	fixtures := []fixture{
		{
			name: "learned entry: direct to its node", ifindex: redA.HostIfindex,
			in: cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipTo(ipLearned)), verdict: tcActRedirect,
			check: encapCheck(vniRed, nodeBMAC, nodeB, macLearned, ipTo(ipLearned), 0),
		},
		{
			name: "held record: direct to its node", ifindex: redA.HostIfindex,
			in: cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipTo(ipHeld)), verdict: tcActRedirect,
			check: encapCheck(vniRed, nodeBMAC, nodeB, macHeld, ipTo(ipHeld), 0),
		},
		{
			name: "unknown: bounced to the shard's first holder that is not this node", ifindex: redA.HostIfindex,
			in: cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipTo(ipUnknown)), verdict: tcActRedirect,
			check: bounceCheck(vniRed, nodeBMAC, uplinkMAC, nodeB, ipTo(ipUnknown)),
		},
		{
			name: "unknown, this node the only holder: no holder", ifindex: redA.HostIfindex,
			in: cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipTo(ipSelfOnly)), verdict: tcActShot, drop: DropDirNoHolder,
		},
		{
			name: "unknown, shard without holders", ifindex: redA.HostIfindex,
			in: cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipTo(netip.MustParseAddr("10.0.0.77"))), verdict: tcActShot, drop: DropDirNoHolder,
		},
		{
			// Same address as a learned red entry, in blue: nothing known.
			name: "learned red entry is not blue's", ifindex: blueA.HostIfindex,
			in:      cat(ethHdr(gwMAC, blueA.MAC, etherIPv4), ipv4Pkt(ip1, ipLearned, protoUDP, udpPkt(40000, 5201, payload(64)), ipOpts{})),
			verdict: tcActShot, drop: DropDirNoHolder,
		},
	}
	// The golden shards: each key reaches only its own shard's holder.
	for i, g := range goldens {
		ip := ipv4Pkt(g.src, g.dst, protoUDP, udpPkt(40000, 5201, payload(64)), ipOpts{})
		f := fixture{
			name: fmt.Sprintf("golden shard %d of vni %d %s", g.shard, g.vni, g.dst), ifindex: 3001 + i,
			in: cat(ethHdr(gwMAC, mustMAC(fmt.Sprintf("0a:00:00:00:0%d:01", i)), etherIPv4), ip), verdict: tcActRedirect,
			check: func(t *testing.T, out []byte) {
				if got := netip.AddrFrom4([4]byte(out[30:34])); got != g.holder {
					t.Errorf("bounced to %s, want %s (shard %d)", got, g.holder, g.shard)
				}
				bounceCheck(g.vni, g.dmac, g.smac, g.holder, ip)(t, out)
			},
		}
		fixtures = append(fixtures, f)
	}
	before, _ := d.DirectoryStats()
	runFixtures(t, d, fixtures, func(t *testing.T, f fixture) (uint32, []byte) {
		return runSKB(t, d.lxc.FromPod, f.in, f.ifindex)
	})
	after, _ := d.DirectoryStats()
	for s, want := range map[DirectoryStat]uint64{DirStatLRUHit: 1, DirStatHeldHit: 1, DirStatBounced: 1 + uint64(len(goldens))} {
		if got := after[s] - before[s]; got != want {
			t.Errorf("counter %s +%d, want +%d", s, got, want)
		}
	}
}

func TestPrivilegedDirectoryUplinkFixtures(t *testing.T) {
	d := newDirectoryWorld(t)
	red3to1 := innerUDP(ip3, ip1) // red 10.0.0.3 lives on B
	red9to1 := innerUDP(ip9, ip1) // red 10.0.0.9 lives on C
	toHeldD := innerUDP(ip3, ipHeldD)
	anyMAC := mustMAC("0a:00:00:00:00:99")
	decap := func(inner []byte) []byte { return cat(ethHdr(redA.MAC, gwMAC, etherIPv4), inner) }
	unknownSrc := innerUDP(netip.MustParseAddr("10.0.0.50"), ip1)
	fixtures := []fixture{
		{
			// A holds 10.0.0.30 (on D): the outer header goes to D (via
			// the router), TTL 64, checksum recomputed; the inner
			// destination MAC from the record; the mark says "bounced"
			// and keeps B as the origin.
			name: "bounce request forwarded to the hosting node",
			in:   dirFrame(nodeB, vniRed, make(net.HardwareAddr, 6), bounceMAC(0x67, nodeB), toHeldD), verdict: tcActRedirect,
			out: cat(ethHdr(routerMAC, uplinkMAC, etherIPv4), ipv4Pkt(nodeA, nodeD, protoUDP,
				udpPkt(51000, GenevePort, cat(geneveHdr(vniRed, 0, 0, 0, etherTEB), ethHdr(macHeldD, bounceMAC(0x68, nodeB), etherIPv4), toHeldD)),
				ipOpts{fragOff: 0x4000, id: 7})),
		},
		{
			name: "bounce request whose origin is not its sender",
			in:   dirFrame(nodeB, vniRed, anyMAC, bounceMAC(0x67, nodeC), toHeldD), verdict: tcActShot, drop: DropDirUntrusted,
		},
		{
			name: "bounce request from a node that is not a member",
			in:   dirFrame(nodeE, vniRed, anyMAC, bounceMAC(0x67, nodeE), toHeldD), verdict: tcActShot, drop: DropDirUntrusted,
		},
		{
			name: "bounce request for a record not held here",
			in:   dirFrame(nodeB, vniRed, anyMAC, bounceMAC(0x67, nodeB), innerUDP(ip3, ipUnknown)), verdict: tcActShot, drop: DropDirNotHeld,
		},
		{
			name: "bounce request back to the node that hosts the destination",
			in:   dirFrame(nodeB, vniRed, anyMAC, bounceMAC(0x67, nodeB), innerUDP(ip3, ipHeldB)), verdict: tcActShot, drop: DropDirNotHeld,
		},
		{
			name: "bounce request for an endpoint hosted on this holder: delivered",
			in:   dirFrame(nodeB, vniRed, anyMAC, bounceMAC(0x67, nodeB), red3to1), verdict: tcActRedirect, out: decap(red3to1),
		},
		{
			// B holds red 10.0.0.1's shard and forwards for C, where
			// red 10.0.0.9 lives.
			name: "bounced by a holder on behalf of the source's node: delivered",
			in:   dirFrame(nodeB, vniRed, redA.MAC, bounceMAC(0x68, nodeC), red9to1), verdict: tcActRedirect, out: decap(red9to1),
		},
		{
			name: "bounced by a node that is not a holder of the shard",
			in:   dirFrame(nodeD, vniRed, redA.MAC, bounceMAC(0x68, nodeC), red9to1), verdict: tcActShot, drop: DropDirUntrusted,
		},
		{
			name: "bounced on behalf of a non-member",
			in:   dirFrame(nodeB, vniRed, redA.MAC, bounceMAC(0x68, nodeE), red9to1), verdict: tcActShot, drop: DropDirUntrusted,
		},
		{
			// red 10.0.0.3 lives on B, not on the claimed origin C.
			name: "bounced with a source that does not live on the origin",
			in:   dirFrame(nodeB, vniRed, redA.MAC, bounceMAC(0x68, nodeC), red3to1), verdict: tcActShot, drop: DropForged,
		},
		{
			name: "bounced to a node that does not host the destination",
			in:   dirFrame(nodeB, vniRed, redA.MAC, bounceMAC(0x68, nodeC), innerUDP(ip9, ipUnknown)), verdict: tcActShot, drop: DropDirNotLocal,
		},
		{
			name: "direct from a member, source not known yet: accepted",
			in:   dirFrame(nodeB, vniRed, redA.MAC, anyMAC, unknownSrc), verdict: tcActRedirect, out: decap(unknownSrc),
		},
		{
			name: "direct from a non-member, source not known: forged",
			in:   dirFrame(nodeE, vniRed, redA.MAC, anyMAC, unknownSrc), verdict: tcActShot, drop: DropForged,
		},
		{
			name: "direct, source learned on the sending node",
			in:   dirFrame(nodeB, vniRed, redA.MAC, anyMAC, innerUDP(ipLearned, ip1)), verdict: tcActRedirect, out: decap(innerUDP(ipLearned, ip1)),
		},
		{
			name: "direct, source learned on another node: forged",
			in:   dirFrame(nodeB, vniRed, redA.MAC, anyMAC, innerUDP(ipLearnedC, ip1)), verdict: tcActShot, drop: DropForged,
		},
		{
			name: "direct, source held on another node: forged",
			in:   dirFrame(nodeC, vniRed, redA.MAC, anyMAC, innerUDP(ipHeld, ip1)), verdict: tcActShot, drop: DropForged,
		},
		{
			// The forged-VNI case of the vpc-sync fixtures holds in
			// directory mode: red 10.0.0.2 is local here.
			name: "forged vni: a local endpoint's address from a member",
			in:   dirFrame(nodeB, vniRed, redA.MAC, anyMAC, innerUDP(ip2, ip1)), verdict: tcActShot, drop: DropForged,
		},
	}
	before, _ := d.DirectoryStats()
	runFixtures(t, d, fixtures, func(t *testing.T, f fixture) (uint32, []byte) {
		return runSKB(t, d.uplink.FromUplink, f.in, uplinkIdx)
	})
	after, _ := d.DirectoryStats()
	for s, want := range map[DirectoryStat]uint64{DirStatForwarded: 1, DirStatDelivered: 3, DirStatUnverified: 1} {
		if got := after[s] - before[s]; got != want {
			t.Errorf("counter %s +%d, want +%d", s, got, want)
		}
	}
	// The XDP prefilter lets a bounce request of a VNI not hosted here
	// through to the holder, and drops other Geneve of that VNI.
	req := dirFrame(nodeB, vniNone, anyMAC, bounceMAC(0x67, nodeB), toHeldD)
	if ret, _ := runXDP(t, d.uplink.UplinkPrefilter, req); ret != xdpPass {
		t.Errorf("prefilter: bounce request of an unhosted vni: verdict %d, want pass", ret)
	}
	if ret, _ := runXDP(t, d.uplink.UplinkPrefilter, dirFrame(nodeB, vniNone, anyMAC, anyMAC, toHeldD)); ret != xdpDrop {
		t.Errorf("prefilter: geneve of an unhosted vni: verdict %d, want drop", ret)
	}
}

// Versions: a learned entry is replaced only by a newer record, and an
// invalidation applies only to an older entry.
func TestPrivilegedDirectoryLearnVersions(t *testing.T) {
	d := newDirectoryWorld(t)
	e := DirectoryEntry{VNI: vniRed, IP: ipLearned, NodeIP: nodeC, MAC: macHeld, Version: 5}
	if ok, err := d.LearnRemote(e); err != nil || ok {
		t.Fatalf("learn at the same version: %v, %v; want no write", ok, err)
	}
	e.Version = 9
	if ok, err := d.LearnRemote(e); err != nil || !ok {
		t.Fatalf("learn newer: %v, %v", ok, err)
	}
	if ok, _ := d.InvalidateRemote(DirectoryEntry{VNI: vniRed, IP: ipLearned, Version: 8}, true); ok {
		t.Fatal("an older deletion removed a newer entry")
	}
	moved := DirectoryEntry{VNI: vniRed, IP: ipLearned, NodeIP: nodeD, MAC: macHeldD, Version: 10}
	if ok, err := d.InvalidateRemote(moved, false); err != nil || !ok {
		t.Fatalf("invalidate (moved): %v, %v", ok, err)
	}
	if got, ok, _ := d.RemoteEntry(vniRed, ipLearned); !ok || got.NodeIP != nodeD || got.Version != 10 {
		t.Fatalf("entry after the move: %+v, %v", got, ok)
	}
	if ok, err := d.InvalidateRemote(DirectoryEntry{VNI: vniRed, IP: ipLearned, Version: 11}, true); err != nil || !ok {
		t.Fatalf("invalidate (deleted): %v, %v", ok, err)
	}
	if _, ok, _ := d.RemoteEntry(vniRed, ipLearned); ok {
		t.Fatal("entry still there after its deletion")
	}
	if ok, _ := d.InvalidateRemote(moved, false); ok {
		t.Fatal("an invalidation created an entry the node never learned")
	}
}

func TestPrivilegedDirectoryClear(t *testing.T) {
	d := newDirectoryWorld(t)
	n, err := d.ClearDirectoryEntries()
	if err != nil || n != 5 { // 2 learned + 3 held
		t.Fatalf("cleared %d, %v; want 5", n, err)
	}
	if l, _ := d.RemoteEntries(); len(l) != 0 {
		t.Errorf("learned left: %+v", l)
	}
	if h, _ := d.HeldEntries(); len(h) != 0 {
		t.Errorf("held left: %+v", h)
	}
	if e, _ := d.Endpoints(); len(e) == 0 {
		t.Error("the endpoints map was cleared too")
	}
}
