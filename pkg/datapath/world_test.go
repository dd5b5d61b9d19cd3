package datapath

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
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

// The fixture world: this node (A) and a peer (B) on one underlay, two VPCs
// (red and blue) with the SAME CIDR 10.0.0.0/24 and the same pod addresses.
var (
	nodeA     = netip.MustParseAddr("192.168.100.1")
	nodeB     = netip.MustParseAddr("192.168.100.2")
	nodeC     = netip.MustParseAddr("192.168.100.3") // known endpoints, no MAC
	nodeBMAC  = mustMAC("02:aa:00:00:00:02")
	uplinkMAC = mustMAC("02:aa:00:00:00:01")
	gwMAC     = mustMAC("02:00:00:00:00:01")
	uplinkIdx = 100

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
	// Remote on C, whose MAC is unknown.
	redC = RemoteEndpoint{VNI: vniRed, IP: ip9, MAC: mustMAC("0a:00:00:00:64:09"), NodeIP: nodeC}
)

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

// newWorld opens a datapath with the fixture world's maps filled in.
func newWorld(tb testing.TB) *Datapath {
	tb.Helper()
	needBPF(tb)
	d, err := Open(testConfig(testPinDir(tb)))
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	for _, ep := range []LocalEndpoint{redA, redB, blueA} {
		if err := d.UpsertLocalEndpoint(ep); err != nil {
			tb.Fatal(err)
		}
	}
	for _, ep := range []RemoteEndpoint{redR, blueR, blueB, redC} {
		if err := d.UpsertRemoteEndpoint(ep); err != nil {
			tb.Fatal(err)
		}
	}
	if err := d.UpsertNode(nodeB, nodeBMAC); err != nil {
		tb.Fatal(err)
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
	ret, err := prog.Run(opts)
	if err != nil {
		tb.Fatalf("BPF_PROG_RUN: %v", err)
	}
	return ret, opts.DataOut
}

func runXDP(tb testing.TB, prog *ebpf.Program, pkt []byte) (uint32, []byte) {
	tb.Helper()
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+256)}
	ret, err := prog.Run(opts)
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
