package datapath

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"fmt"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Return codes seen in BPF_PROG_RUN.
const (
	tcActOK       = 0
	tcActShot     = 2
	tcActRedirect = 7
	tcxNext       = 0xffffffff // TCX_NEXT / TC_ACT_UNSPEC (-1)
	xdpDrop       = 1
	xdpPass       = 2
)

// skbCtx is the prefix of struct __sk_buff up to ifindex; the kernel accepts
// a shorter context and zero-fills the rest.
type skbCtx struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority uint32
	IngressIfindex, Ifindex                                                               uint32
}

// The fixture world: this node (A) and peers on its underlay, two VPCs (red
// and blue) with the SAME CIDR 10.0.0.0/24 and the same pod addresses. The
// underlay is real (newWorld builds it in a network namespace, where the
// programs run), so the FIB gives deterministic next hops:
//
//	B 192.168.100.2   on the uplink's /24, neighbour nodeBMAC (permanent)
//	C 192.168.100.3   on the /24, neighbour unresolved: redirect_neigh
//	D 192.168.200.4   behind router 192.168.100.254 (routerMAC)
//	F 192.168.201.6   behind the router, route MTU routeMTU (locked: the
//	                  FIB's MTU check honours a route MTU only when locked,
//	                  and PMTU exceptions, which a test cannot create)
//	E 10.255.0.5      unreachable (no route)
var (
	nodeA     = netip.MustParseAddr("192.168.100.1")
	nodeB     = netip.MustParseAddr("192.168.100.2")
	nodeC     = netip.MustParseAddr("192.168.100.3")
	nodeD     = netip.MustParseAddr("192.168.200.4")
	nodeE     = netip.MustParseAddr("10.255.0.5")
	nodeF     = netip.MustParseAddr("192.168.201.6")
	router    = netip.MustParseAddr("192.168.100.254")
	nodeBMAC  = mustMAC("02:aa:00:00:00:02")
	routerMAC = mustMAC("02:aa:00:00:00:fe")
	uplinkMAC = mustMAC("02:aa:00:00:00:01")
	gwMAC     = mustMAC("02:00:00:00:00:01")
	// uplinkIdx is the fixture uplink's ifindex: newWorld's device, or a
	// made-up one for tests that run no program.
	uplinkIdx = 100
	routeMTU  = 1200

	vniRed  uint32 = 100
	vniBlue uint32 = 200
	vniNone uint32 = 300 // no endpoints here

	ip1 = netip.MustParseAddr("10.0.0.1")
	ip2 = netip.MustParseAddr("10.0.0.2")
	ip3 = netip.MustParseAddr("10.0.0.3")
	ip9 = netip.MustParseAddr("10.0.0.9")

	// Local: red 10.0.0.1 (1001), red 10.0.0.2 (1002), blue 10.0.0.1 (2001).
	redA  = LocalEndpoint{VNI: vniRed, IP: ip1, MAC: mustMAC("0a:00:00:00:64:01"), HostIfindex: 1001}
	redB  = LocalEndpoint{VNI: vniRed, IP: ip2, MAC: mustMAC("0a:00:00:00:64:02"), HostIfindex: 1002}
	blueA = LocalEndpoint{VNI: vniBlue, IP: ip1, MAC: mustMAC("0a:00:00:00:c8:01"), HostIfindex: 2001}
	// Remote on B: red 10.0.0.3, blue 10.0.0.3, blue 10.0.0.2 (local in red!).
	redR  = RemoteEndpoint{VNI: vniRed, IP: ip3, MAC: mustMAC("0a:00:00:00:64:03"), NodeIP: nodeB}
	blueR = RemoteEndpoint{VNI: vniBlue, IP: ip3, MAC: mustMAC("0a:00:00:00:c8:03"), NodeIP: nodeB}
	blueB = RemoteEndpoint{VNI: vniBlue, IP: ip2, MAC: mustMAC("0a:00:00:00:c8:02"), NodeIP: nodeB}
	// Remote on C (neighbour unresolved), D (routed), E (unreachable) and
	// F (small path MTU).
	redC = RemoteEndpoint{VNI: vniRed, IP: ip9, MAC: mustMAC("0a:00:00:00:64:09"), NodeIP: nodeC}
	redD = RemoteEndpoint{VNI: vniRed, IP: ipD, MAC: mustMAC("0a:00:00:00:64:0d"), NodeIP: nodeD}
	redE = RemoteEndpoint{VNI: vniRed, IP: ipE, MAC: mustMAC("0a:00:00:00:64:0e"), NodeIP: nodeE}
	redF = RemoteEndpoint{VNI: vniRed, IP: ipF, MAC: mustMAC("0a:00:00:00:64:0f"), NodeIP: nodeF}
	ipD  = netip.MustParseAddr("10.0.0.13")
	ipE  = netip.MustParseAddr("10.0.0.14")
	ipF  = netip.MustParseAddr("10.0.0.15")
)

// worldNS is the namespace of the current fixture world (nil: none); the
// programs run there (BPF_PROG_RUN uses the caller's netns for the FIB).
var worldNS ns.NetNS

// inWorld runs f on a thread in the fixture world's namespace, if any.
func inWorld(tb testing.TB, f func()) {
	tb.Helper()
	if worldNS == nil {
		f()
		return
	}
	if err := worldNS.Do(func(ns.NetNS) error { f(); return nil }); err != nil {
		tb.Fatal(err)
	}
}

// newUnderlay builds the fixture underlay in a new namespace: the uplink
// (one end of a veth pair, MAC uplinkMAC, 192.168.100.1/24), permanent
// neighbours for B and the router, and the routes of the table above.
// It returns the namespace and the uplink's ifindex.
func newUnderlay(tb testing.TB) (ns.NetNS, int) {
	tb.Helper()
	n := newNetNS(tb)
	var ifindex int
	inNS(tb, n, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0", HardwareAddr: uplinkMAC}, PeerName: "up1"}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add uplink veth: %w", err)
		}
		if _, err := setUp("up1", "", 0); err != nil {
			return err
		}
		l, err := setUp("up0", netip.PrefixFrom(nodeA, 24).String(), 0)
		if err != nil {
			return err
		}
		ifindex = l.Attrs().Index
		// As AttachUplink does: the FIB lookup needs forwarding on the uplink.
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/up0/forwarding", []byte("1"), 0o644); err != nil {
			return err
		}
		for _, nb := range []struct {
			ip  netip.Addr
			mac net.HardwareAddr
		}{{nodeB, nodeBMAC}, {router, routerMAC}} {
			if err := netlink.NeighAdd(&netlink.Neigh{LinkIndex: ifindex, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
				IP: nb.ip.AsSlice(), HardwareAddr: nb.mac}); err != nil {
				return fmt.Errorf("add neighbour %s: %w", nb.ip, err)
			}
		}
		for _, r := range []netlink.Route{
			{LinkIndex: ifindex, Dst: prefixNet("192.168.200.0/24"), Gw: router.AsSlice()},
			{LinkIndex: ifindex, Dst: prefixNet("192.168.201.0/24"), Gw: router.AsSlice(), MTU: routeMTU, MTULock: true},
		} {
			if err := netlink.RouteAdd(&r); err != nil {
				return fmt.Errorf("add route %s: %w", r.Dst, err)
			}
		}
		return nil
	})
	return n, ifindex
}

func prefixNet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

func needBPF(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("privileged BPF test: skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		tb.Skip("needs root: loads BPF programs and pins maps on bpffs")
	}
}

func randSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testPinDir returns a fresh pin dir on a private bpffs instance mounted in
// a temp dir (so tests never touch /sys/fs/bpf); Remove runs and the mount
// goes away after the test.
func testPinDir(tb testing.TB) string {
	tb.Helper()
	mnt := tb.TempDir()
	if err := unix.Mount("bpffs", mnt, "bpf", 0, "mode=0700"); err != nil {
		tb.Skipf("needs a bpffs mount: %v", err)
	}
	dir := filepath.Join(mnt, "genie-"+randSuffix())
	tb.Cleanup(func() {
		if err := Remove(dir); err != nil {
			tb.Errorf("remove pin dir: %v", err)
		}
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmount test bpffs: %v", err)
		}
	})
	return dir
}

func testConfig(pinDir string) Config {
	return Config{PinDir: pinDir, UnderlayIP: nodeA, UplinkIfindex: uplinkIdx, UplinkMAC: uplinkMAC, GatewayMAC: gwMAC}
}

// newWorld opens a datapath with the fixture world's maps filled in, on
// the fixture underlay (newUnderlay); runSKB and runXDP run programs there.
func newWorld(tb testing.TB) *Datapath {
	tb.Helper()
	needBPF(tb)
	n, ifindex := newUnderlay(tb)
	cfg := testConfig(testPinDir(tb))
	cfg.UplinkIfindex = ifindex
	d, err := Open(cfg)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	worldNS = n
	tb.Cleanup(func() {
		worldNS = nil
		d.Close()
	})
	for _, ep := range []LocalEndpoint{redA, redB, blueA} {
		if err := d.UpsertLocalEndpoint(ep); err != nil {
			tb.Fatal(err)
		}
	}
	for _, ep := range []RemoteEndpoint{redR, blueR, blueB, redC, redD, redE, redF} {
		if err := d.UpsertRemoteEndpoint(ep); err != nil {
			tb.Fatal(err)
		}
	}
	return d
}

// runSKB runs a tc program on pkt as if received on ingressIfindex.
func runSKB(tb testing.TB, prog *ebpf.Program, pkt []byte, ingressIfindex int) (uint32, []byte) {
	tb.Helper()
	opts := &ebpf.RunOptions{
		Data:    pkt,
		DataOut: make([]byte, len(pkt)+256),
		Context: skbCtx{IngressIfindex: uint32(ingressIfindex)},
	}
	var (
		ret uint32
		err error
	)
	inWorld(tb, func() { ret, err = prog.Run(opts) })
	if err != nil {
		tb.Fatalf("BPF_PROG_RUN: %v", err)
	}
	return ret, opts.DataOut
}

func runXDP(tb testing.TB, prog *ebpf.Program, pkt []byte) (uint32, []byte) {
	tb.Helper()
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+256)}
	var (
		ret uint32
		err error
	)
	inWorld(tb, func() { ret, err = prog.Run(opts) })
	if err != nil {
		tb.Fatalf("BPF_PROG_RUN: %v", err)
	}
	return ret, opts.DataOut
}

// dropDelta runs f and returns which drop counters changed, by how much.
func dropDelta(tb testing.TB, d *Datapath, f func()) map[DropReason]uint64 {
	tb.Helper()
	before, err := d.Drops()
	if err != nil {
		tb.Fatal(err)
	}
	f()
	after, err := d.Drops()
	if err != nil {
		tb.Fatal(err)
	}
	out := map[DropReason]uint64{}
	for r, n := range after {
		if n != before[r] {
			out[r] = n - before[r]
		}
	}
	return out
}

func macOf(b []byte) net.HardwareAddr { return net.HardwareAddr(append([]byte(nil), b...)) }
