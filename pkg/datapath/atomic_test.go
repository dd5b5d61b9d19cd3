package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// mapDump is every entry of the endpoint, lxc and vni maps, as text.
func mapDump(t *testing.T, d *Datapath) string {
	t.Helper()
	var lines []string
	for name, m := range map[string]*ebpf.Map{"endpoints": d.lxc.GenieEndpoints, "lxc": d.lxc.GenieLxc, "vnis": d.lxc.GenieVnis} {
		k := make([]byte, m.KeySize())
		v := make([]byte, m.ValueSize())
		it := m.Iterate()
		for it.Next(&k, &v) {
			lines = append(lines, fmt.Sprintf("%s %x=%x", name, k, v))
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// An upsert that fails halfway leaves the maps and the VNI reference
// counts exactly as they were. The failures are real ones: a full map
// at the last step (genie_vnis) or the middle one (genie_lxc), after the
// earlier steps have written, including the unbinding of the endpoint the
// interface was bound to before.
func TestPrivilegedUpsertLocalAllOrNothing(t *testing.T) {
	needBPF(t)
	cfg := testConfig(testPinDir(t))
	cfg.MapSizes = MapSizes{VNIs: 2, LXC: 4}
	d, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const vniGreen = 400
	red1 := LocalEndpoint{VNI: vniRed, IP: ip1, MAC: redA.MAC, HostIfindex: 11}
	red2 := LocalEndpoint{VNI: vniRed, IP: ip2, MAC: redB.MAC, HostIfindex: 12}
	green := LocalEndpoint{VNI: vniGreen, IP: ip1, MAC: blueA.MAC, HostIfindex: 13}
	extra := LocalEndpoint{VNI: vniRed, IP: ip3, MAC: redA.MAC, HostIfindex: 14}
	for _, ep := range []LocalEndpoint{red1, red2, green} {
		if err := d.UpsertLocalEndpoint(ep); err != nil {
			t.Fatal(err)
		}
	}

	for _, c := range []struct {
		name  string
		setup func(t *testing.T)
		ep    LocalEndpoint
		full  string
	}{
		{
			// New VNI, genie_vnis full: fails after genie_endpoints and
			// genie_lxc were written.
			name: "new vni, vni map full", ep: LocalEndpoint{VNI: vniBlue, IP: ip3, MAC: blueA.MAC, HostIfindex: 21}, full: "genie_vnis",
		},
		{
			// Ifindex 11 is red1's: the upsert first deletes red1 (and
			// drops red's count from 2 to 1), then fails on the vni map.
			name: "rebinding an ifindex to a new vni, vni map full", ep: LocalEndpoint{VNI: vniBlue, IP: ip2, MAC: blueA.MAC, HostIfindex: 11}, full: "genie_vnis",
		},
		{
			// genie_lxc full (4 entries): fails after genie_endpoints
			// was written.
			name: "new interface, lxc map full", ep: LocalEndpoint{VNI: vniRed, IP: netip.MustParseAddr("10.0.0.50"), MAC: redA.MAC, HostIfindex: 22}, full: "genie_lxc",
			setup: func(t *testing.T) {
				if err := d.UpsertLocalEndpoint(extra); err != nil {
					t.Fatal(err)
				}
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.setup != nil {
				c.setup(t)
			}
			before := mapDump(t, d)
			redBefore := vniCount(t, d, vniRed)
			err := d.UpsertLocalEndpoint(c.ep)
			if !errors.Is(err, ErrMapFull) || !strings.Contains(err.Error(), c.full) {
				t.Fatalf("upsert: %v, want ErrMapFull naming %s", err, c.full)
			}
			if after := mapDump(t, d); after != before {
				t.Errorf("maps changed by a failed upsert\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if n := vniCount(t, d, vniRed); n != redBefore {
				t.Errorf("red reference count %d, want %d", n, redBefore)
			}
		})
	}
	// Nothing drifted: deleting every endpoint brings every count to zero.
	for _, ep := range []LocalEndpoint{red1, red2, green, extra} {
		if err := d.DeleteEndpoint(ep.VNI, ep.IP); err != nil {
			t.Fatal(err)
		}
	}
	if left := mapDump(t, d); left != "" {
		t.Errorf("maps not empty after deleting every endpoint:\n%s", left)
	}
}
