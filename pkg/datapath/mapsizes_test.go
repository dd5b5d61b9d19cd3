package datapath

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
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
// size is migrated to the new size.
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

	// Other sizes over the pinned maps migrate them (derived maps are
	// rebuilt empty for the agent to refill); a shrink below the entries
	// is refused (TestPrivilegedUpgradeShrinkRefused).
	cfg.MapSizes.Endpoints = 16
	d2, err := Open(cfg)
	if err != nil {
		t.Fatalf("open with a bigger endpoints map over the pinned one: %v", err)
	}
	if got := d2.MapSizes().Endpoints; got != 16 || !slices.ContainsFunc(d2.Migrations(), func(m MapMigration) bool {
		return m.Map == "genie_endpoints" && m.Old.MaxEntries == 8 && m.New.MaxEntries == 16
	}) {
		t.Fatalf("endpoints size %d after a resize, migrations %v", got, d2.Migrations())
	}
	if _, err := d2.FinishUpgrade(); err != nil {
		t.Fatal(err)
	}
	d2.Close()
	// The pinned sizes are re-adopted without a migration.
	d3, err := Open(cfg)
	if err != nil {
		t.Fatalf("reopen with the pinned sizes: %v", err)
	}
	if d3.Migrations() != nil || d3.UpgradePending() {
		t.Errorf("reopen with the pinned sizes migrated %v", d3.Migrations())
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
