package datapath

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

func TestDefaultMapSizes(t *testing.T) {
	s := DefaultMapSizes()
	if s.Endpoints == 0 || s.LXC == 0 || s.VNIs == 0 || s.Nodes != 0 {
		t.Fatalf("default sizes %+v: want every map sized, nodes (no map) 0", s)
	}
	cfg := Config{PinDir: "/sys/fs/bpf/x", UnderlayIP: nodeA, UplinkIfindex: 1,
		UplinkMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, GatewayMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		MapSizes: MapSizes{Endpoints: 1<<24 + 1}}
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "endpoints") {
		t.Fatalf("validate of an absurd map size: %v", err)
	}
}

// Configured sizes reach the kernel maps (all programs share them), a full
// endpoints map gives ErrMapFull naming it, and a pinned map of another
// size is refused with a hint instead of being replaced.
func TestPrivilegedMapSizes(t *testing.T) {
	needBPF(t)
	pin := testPinDir(t)
	cfg := testConfig(pin)
	cfg.MapSizes = MapSizes{Endpoints: 8, LXC: 5}
	d, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := d.MapSizes()
	def := DefaultMapSizes()
	if got.Endpoints != 8 || got.LXC != 5 || got.VNIs != def.VNIs {
		t.Fatalf("map sizes %+v, want endpoints 8, lxc 5, others %+v", got, def)
	}
	if n := d.uplink.GenieEndpoints.MaxEntries(); n != 8 {
		t.Errorf("uplink program's endpoints map has %d entries, want the shared map of 8", n)
	}
	for i := range 8 {
		ep := redR
		ep.IP = netip.AddrFrom4([4]byte{10, 1, 9, byte(i + 1)})
		if err := d.UpsertRemoteEndpoint(ep); err != nil {
			t.Fatalf("endpoint %d: %v", i, err)
		}
	}
	ep := redR
	ep.IP = netip.MustParseAddr("10.1.9.200")
	err = d.UpsertRemoteEndpoint(ep)
	if !errors.Is(err, ErrMapFull) || !strings.Contains(err.Error(), "genie_endpoints") {
		t.Fatalf("upsert into a full endpoints map: %v, want ErrMapFull naming genie_endpoints", err)
	}
	d.Close()

	cfg.MapSizes.Endpoints = 16
	d2, err := Open(cfg)
	if err == nil {
		d2.Close()
		t.Fatal("open with a bigger endpoints map over the pinned one succeeded")
	}
	if !errors.Is(err, ebpf.ErrMapIncompatible) || !strings.Contains(err.Error(), "map sizes") {
		t.Fatalf("open with other sizes over pinned maps: %v", err)
	}
	// The pinned sizes still work.
	cfg.MapSizes.Endpoints = 8
	d3, err := Open(cfg)
	if err != nil {
		t.Fatalf("reopen with the pinned sizes: %v", err)
	}
	d3.Close()
}

func TestPrivilegedLookupEndpoint(t *testing.T) {
	needBPF(t)
	d, err := Open(testConfig(testPinDir(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.LookupEndpoint(redR.VNI, redR.IP); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("lookup of a missing endpoint: %v", err)
	}
	if err := d.UpsertRemoteEndpoint(redR); err != nil {
		t.Fatal(err)
	}
	if err := d.UpsertLocalEndpoint(redA); err != nil {
		t.Fatal(err)
	}
	e, err := d.LookupEndpoint(redR.VNI, redR.IP)
	if err != nil || e.Local() || e.NodeIP != redR.NodeIP || e.MAC.String() != redR.MAC.String() {
		t.Fatalf("remote entry %+v, %v", e, err)
	}
	e, err = d.LookupEndpoint(redA.VNI, redA.IP)
	if err != nil || !e.Local() || e.HostIfindex != redA.HostIfindex || e.MAC.String() != redA.MAC.String() {
		t.Fatalf("local entry %+v, %v", e, err)
	}
	if _, err := d.LookupEndpoint(0, redA.IP); err == nil {
		t.Fatal("lookup with vni 0 succeeded")
	}
}
