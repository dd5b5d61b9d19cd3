package datapath

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

func vniCount(t *testing.T, d *Datapath, vni uint32) uint32 {
	t.Helper()
	var n uint32
	if err := d.lxc.GenieVnis.Lookup(vni, &n); err != nil {
		return 0
	}
	return n
}

func TestPrivilegedEndpointLifecycle(t *testing.T) {
	needBPF(t)
	d, err := Open(testConfig(testPinDir(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	// Upserts are idempotent and count each local endpoint once per VNI.
	for range 2 {
		if err := d.UpsertLocalEndpoint(redA); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.UpsertLocalEndpoint(redB); err != nil {
		t.Fatal(err)
	}
	if n := vniCount(t, d, vniRed); n != 2 {
		t.Fatalf("vni %d refcount %d, want 2", vniRed, n)
	}
	if err := d.UpsertRemoteEndpoint(redR); err != nil {
		t.Fatal(err)
	}
	eps, err := d.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 3 {
		t.Fatalf("endpoints %v, want 3", eps)
	}
	for _, e := range eps {
		if e.IP == ip3 && (e.Local() || e.NodeIP != nodeB || e.MAC.String() != redR.MAC.String()) {
			t.Errorf("remote entry %+v", e)
		}
		if e.IP == ip1 && (!e.Local() || e.HostIfindex != redA.HostIfindex || e.MAC.String() != redA.MAC.String()) {
			t.Errorf("local entry %+v", e)
		}
	}

	// Deletes are idempotent; the VNI is forgotten with its last endpoint,
	// and the prefilter then drops its Geneve as UNKNOWN_VNI.
	for range 2 {
		if err := d.DeleteEndpoint(vniRed, ip1); err != nil {
			t.Fatal(err)
		}
	}
	if n := vniCount(t, d, vniRed); n != 1 {
		t.Fatalf("vni refcount %d after one delete, want 1", n)
	}
	frame := geneveFrame(nodeB, vniRed, innerUDP(ip3, ip2), geneveOpts{})
	if ret, _ := runXDP(t, d.uplink.UplinkPrefilter, frame); ret != xdpPass {
		t.Fatalf("prefilter verdict %d with a red endpoint left, want pass", ret)
	}
	if err := d.DeleteEndpoint(vniRed, ip2); err != nil {
		t.Fatal(err)
	}
	if n := vniCount(t, d, vniRed); n != 0 {
		t.Fatalf("vni refcount %d after last delete, want 0", n)
	}
	if ret, _ := runXDP(t, d.uplink.UplinkPrefilter, frame); ret != xdpDrop {
		t.Fatalf("prefilter verdict %d for a vni without endpoints, want drop", ret)
	}
	// The deleted pod's interface no longer forwards anything.
	if ret, _ := runSKB(t, d.lxc.FromPod, podIP(redA.MAC, ip1, ip3, ipOpts{}), redA.HostIfindex); ret != tcActShot {
		t.Fatalf("deleted endpoint still forwards (verdict %d)", ret)
	}
}

// A host ifindex reused by another pod (missed delete) must not leave the
// old pod's address pointing into the new pod, which may be in another VPC.
func TestPrivilegedIfindexRebind(t *testing.T) {
	d := newWorld(t)
	newPod := LocalEndpoint{VNI: vniBlue, IP: netip.MustParseAddr("10.0.0.5"), MAC: mustMAC("0a:00:00:00:c8:05"), HostIfindex: redA.HostIfindex}
	if err := d.UpsertLocalEndpoint(newPod); err != nil {
		t.Fatal(err)
	}
	eps, err := d.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range eps {
		if e.VNI == vniRed && e.IP == ip1 {
			t.Fatalf("stale red endpoint %+v still bound after its ifindex was reused", e)
		}
	}
	// red 10.0.0.2 can no longer reach 10.0.0.1 (it would land in blue).
	if ret, _ := runSKB(t, d.lxc.FromPod, podIP(redB.MAC, ip2, ip1, ipOpts{}), redB.HostIfindex); ret != tcActShot {
		t.Fatalf("red reached the reused interface (verdict %d)", ret)
	}
	if n := vniCount(t, d, vniRed); n != 1 {
		t.Fatalf("red refcount %d, want 1", n)
	}
	// And the endpoint moving to another node turns it remote.
	if err := d.UpsertRemoteEndpoint(RemoteEndpoint{VNI: vniBlue, IP: newPod.IP, MAC: newPod.MAC, NodeIP: nodeB}); err != nil {
		t.Fatal(err)
	}
	if ret, _ := runSKB(t, d.lxc.FromPod, podIP(newPod.MAC, newPod.IP, ip1, ipOpts{}), newPod.HostIfindex); ret != tcActShot {
		t.Fatalf("moved endpoint's old interface still forwards (verdict %d)", ret)
	}
}

func TestPrivilegedReopenKeepsState(t *testing.T) {
	needBPF(t)
	pin := testPinDir(t)
	d, err := Open(testConfig(pin))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.UpsertLocalEndpoint(redA); err != nil {
		t.Fatal(err)
	}
	if ret, _ := runSKB(t, d.lxc.FromPod, podIP(redA.MAC, ip1, ip9, ipOpts{}), redA.HostIfindex); ret != tcActShot {
		t.Fatal("expected a NO_ROUTE drop")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	// A restarted agent with a changed gateway MAC.
	cfg := testConfig(pin)
	cfg.GatewayMAC = mustMAC("02:00:00:00:00:02")
	d2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	eps, err := d2.Endpoints()
	if err != nil || len(eps) != 1 || eps[0].IP != ip1 {
		t.Fatalf("endpoints after reopen %v (%v), want red 10.0.0.1", eps, err)
	}
	drops, err := d2.Drops()
	if err != nil || drops[DropNoRoute] != 1 {
		t.Fatalf("drop counters after reopen %v (%v), want NO_ROUTE 1", drops, err)
	}
	ret, out := runSKB(t, d2.lxc.FromPod, cat(ethHdr(gwMAC, redA.MAC, etherARP), arpPkt(1, redA.MAC, ip1, make([]byte, 6), ip2)), redA.HostIfindex)
	if ret != tcActRedirect || out[6+5] != 0x02 {
		t.Fatalf("arp reply after reopen: verdict %d, src mac %x, want the new gateway mac", ret, out[6:12])
	}
}

func TestPrivilegedValidation(t *testing.T) {
	needBPF(t)
	if _, err := Open(Config{PinDir: "/tmp"}); err == nil {
		t.Fatal("open with an incomplete config succeeded")
	}
	cfg := testConfig(t.TempDir())
	if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), "not on bpffs") {
		t.Fatalf("open outside bpffs: %v", err)
	}
	d := newWorld(t)
	bad := []struct {
		name string
		err  error
		want string
	}{
		{"vni 0", d.UpsertLocalEndpoint(LocalEndpoint{IP: ip1, MAC: redA.MAC, HostIfindex: 1}), "vni 0 out of range"},
		{"vni too big", d.UpsertRemoteEndpoint(RemoteEndpoint{VNI: 1 << 24, IP: ip1, MAC: redA.MAC, NodeIP: nodeB}), "out of range"},
		{"ipv6", d.UpsertLocalEndpoint(LocalEndpoint{VNI: 1, IP: netip.MustParseAddr("fd00::1"), MAC: redA.MAC, HostIfindex: 1}), "is not ipv4"},
		{"short mac", d.UpsertLocalEndpoint(LocalEndpoint{VNI: 1, IP: ip1, MAC: redA.MAC[:4], HostIfindex: 1}), "not a 6-byte mac"},
		{"ifindex 0", d.UpsertLocalEndpoint(LocalEndpoint{VNI: 1, IP: ip1, MAC: redA.MAC}), "host ifindex 0"},
		{"node ipv6", d.UpsertNode(netip.MustParseAddr("fd00::1"), nodeBMAC), "is not ipv4"},
		{"attach ifindex 0", d.AttachEndpoint(0), "invalid ifindex"},
	}
	for _, b := range bad {
		if b.err == nil || !strings.Contains(b.err.Error(), b.want) {
			t.Errorf("%s: error %v, want %q", b.name, b.err, b.want)
		}
	}
	// Idempotent deletes of unknown things.
	if err := errors.Join(d.DeleteEndpoint(7, ip1), d.DeleteNode(nodeC), d.DetachEndpoint(31337), d.DetachUplink(31337)); err != nil {
		t.Fatalf("idempotent deletes: %v", err)
	}
}

func TestPrivilegedMapFull(t *testing.T) {
	needBPF(t)
	cfg := testConfig(testPinDir(t))
	cfg.MapSizes = MapSizes{LXC: 8}
	d, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	max := int(d.lxc.GenieLxc.MaxEntries())
	ep := func(i int) LocalEndpoint {
		return LocalEndpoint{VNI: vniRed, IP: netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)}), MAC: redA.MAC, HostIfindex: 5000 + i}
	}
	for i := range max {
		if err := d.UpsertLocalEndpoint(ep(i)); err != nil {
			t.Fatalf("endpoint %d: %v", i, err)
		}
	}
	err = d.UpsertLocalEndpoint(ep(max))
	if !errors.Is(err, ErrMapFull) || !strings.Contains(err.Error(), "genie_lxc") {
		t.Fatalf("upsert into a full map: %v, want ErrMapFull naming genie_lxc", err)
	}
}

// A map pinned by another data plane version with a different layout is
// migrated by its role (migrate.go), not refused: here a derived one,
// replaced by an empty map of the new layout, the reason reported.
func TestPrivilegedIncompatiblePin(t *testing.T) {
	needBPF(t)
	pin := testPinDir(t)
	if err := os.MkdirAll(pin, 0o700); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "genie_lxc", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(pin, "genie_lxc")); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(uint32(7), uint32(42)); err != nil {
		t.Fatal(err)
	}
	d, err := Open(testConfig(pin))
	if err != nil {
		t.Fatalf("open over an incompatible pin: %v", err)
	}
	defer d.Close()
	var mig *MapMigration
	for _, mm := range d.Migrations() {
		if mm.Map == "genie_lxc" {
			mig = &mm
		}
	}
	if mig == nil || mig.Role != MapDerived || !strings.Contains(mig.Reason, "ValueSize") || mig.Entries != 1 || mig.Kept != 0 {
		t.Fatalf("migration of the foreign genie_lxc: %+v (all: %v)", mig, d.Migrations())
	}
	if vs := d.lxc.GenieLxc.ValueSize(); vs == 4 {
		t.Errorf("genie_lxc still has the foreign layout")
	}
	if _, err := d.FinishUpgrade(); err != nil {
		t.Fatal(err)
	}
}

func TestPrivilegedMissReports(t *testing.T) {
	d := newWorld(t)
	mr, err := d.Misses()
	if err != nil {
		t.Fatal(err)
	}
	defer mr.Close()
	unknown := netip.MustParseAddr("10.0.0.77")
	// Red and blue miss the same address: two reports, one per VPC.
	for _, s := range []LocalEndpoint{redA, blueA, redA} {
		if ret, _ := runSKB(t, d.lxc.FromPod, podIP(s.MAC, s.IP, unknown, ipOpts{}), s.HostIfindex); ret != tcActShot {
			t.Fatalf("verdict %d, want a NO_ROUTE drop", ret)
		}
	}
	for _, want := range []Miss{{VNI: vniRed, IP: unknown}, {VNI: vniBlue, IP: unknown}} {
		mr.SetDeadline(time.Now().Add(2 * time.Second))
		got, err := mr.Read()
		if err != nil || got != want {
			t.Fatalf("miss report %+v (%v), want %+v", got, err, want)
		}
	}
	// The repeated red miss within a second was not reported again.
	mr.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if got, err := mr.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("extra miss report %+v (%v), want none within the rate limit", got, err)
	}
	// Known destinations and spoofed packets never report.
	runSKB(t, d.lxc.FromPod, podIP(redA.MAC, ip1, ip2, ipOpts{}), redA.HostIfindex)
	runSKB(t, d.lxc.FromPod, podIP(redA.MAC, ip2, netip.MustParseAddr("10.0.0.78"), ipOpts{}), redA.HostIfindex)
	mr.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if got, err := mr.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("unexpected miss report %+v (%v)", got, err)
	}
	// An unknown inner source from the underlay is reported too (the agent
	// may not have learnt it yet); a known one on the wrong node is not.
	stranger := netip.MustParseAddr("10.0.0.50")
	if ret, _ := runSKB(t, d.uplink.FromUplink, geneveFrame(nodeB, vniRed, innerUDP(stranger, ip1), geneveOpts{}), uplinkIdx); ret != tcActShot {
		t.Fatalf("verdict %d, want a FORGED drop", ret)
	}
	runSKB(t, d.uplink.FromUplink, geneveFrame(nodeC, vniRed, innerUDP(ip3, ip1), geneveOpts{}), uplinkIdx)
	mr.SetDeadline(time.Now().Add(2 * time.Second))
	if got, err := mr.Read(); err != nil || got != (Miss{VNI: vniRed, IP: stranger}) {
		t.Fatalf("inner source miss report %+v (%v)", got, err)
	}
	mr.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if got, err := mr.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("unexpected miss report %+v (%v)", got, err)
	}

	if err := mr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := mr.Read(); !errors.Is(err, ErrMissesClosed) {
		t.Fatalf("read after close: %v", err)
	}
}
