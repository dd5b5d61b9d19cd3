package genie

import (
	"net"
	"slices"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func ipc(s string, iface int) *current.IPConfig {
	ip, n, _ := net.ParseCIDR(s)
	n.IP = ip
	return &current.IPConfig{Address: *n, Interface: &iface}
}

// TestMergeResults checks IP interface indexes are re-based onto the merged
// interface list, routes are kept and DNS entries merged without duplicates.
func TestMergeResults(t *testing.T) {
	a := &current.Result{
		Interfaces: []*current.Interface{{Name: "br0"}, {Name: "veth1"}, {Name: "eth0", Sandbox: "/ns", Mac: "02:00:00:00:00:01"}},
		IPs:        []*current.IPConfig{ipc("10.0.0.2/24", 2)},
		Routes:     []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: net.ParseIP("10.0.0.1")}},
		DNS:        types.DNS{Nameservers: []string{"10.0.0.53"}, Search: []string{"a.local"}},
	}
	b := &current.Result{
		Interfaces: []*current.Interface{{Name: "net1", Sandbox: "/ns", Mac: "02:00:00:00:00:02"}},
		IPs:        []*current.IPConfig{ipc("10.1.0.2/24", 0), ipc("fd00::2/64", 0)},
		DNS:        types.DNS{Domain: "b.local", Nameservers: []string{"10.0.0.53", "10.1.0.53"}, Search: []string{"a.local", "b.local"}},
	}
	m := mergeResults([]*current.Result{a, b})
	if len(m.Interfaces) != 4 || len(m.IPs) != 3 || len(m.Routes) != 1 {
		t.Fatalf("merged %+v", m)
	}
	for _, tc := range []struct {
		ip, iface string
	}{{"10.0.0.2", "eth0"}, {"10.1.0.2", "net1"}, {"fd00::2", "net1"}} {
		found := false
		for _, ip := range m.IPs {
			if ip.Address.IP.String() == tc.ip {
				found = true
				if got := m.Interfaces[*ip.Interface].Name; got != tc.iface {
					t.Errorf("%s points at %s, want %s", tc.ip, got, tc.iface)
				}
			}
		}
		if !found {
			t.Errorf("%s missing", tc.ip)
		}
	}
	if !slices.Equal(m.DNS.Nameservers, []string{"10.0.0.53", "10.1.0.53"}) || m.DNS.Domain != "b.local" ||
		!slices.Equal(m.DNS.Search, []string{"a.local", "b.local"}) {
		t.Errorf("dns %+v", m.DNS)
	}
	// The inputs are not modified (they feed network-status too).
	if *b.IPs[0].Interface != 0 {
		t.Errorf("input result modified")
	}
	st := networkStatus("ns/b", "net1", b, false)
	if st.Interface != "net1" || st.Mac != "02:00:00:00:00:02" || !slices.Equal(st.IPs, []string{"10.1.0.2", "fd00::2"}) || st.Default {
		t.Errorf("status %+v", st)
	}
	st = networkStatus("a", "eth0", a, true)
	if !st.Default || !slices.Equal(st.IPs, []string{"10.0.0.2"}) || st.Mac != "02:00:00:00:00:01" {
		t.Errorf("status %+v", st)
	}
	// Converting the merged result down keeps it valid in every version.
	for _, v := range specVersions {
		if _, err := m.GetAsVersion(v); err != nil {
			t.Errorf("convert to %s: %v", v, err)
		}
	}
}
