package egress

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/vpc"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func testNodes() map[string]vpc.Node {
	return map[string]vpc.Node{
		"a":  {Name: "a", UnderlayIP: addr("192.168.0.1")},
		"gw": {Name: "gw", UnderlayIP: addr("192.168.0.2"), Labels: map[string]string{"egress": "yes"}},
		"g2": {Name: "g2", UnderlayIP: addr("192.168.0.3"), Labels: map[string]string{"egress": "yes"}},
	}
}

// TestComputeSelection: the most specific destination among the policies
// selecting a pod wins; pods not selected by any get "" (a counted drop).
func TestComputeSelection(t *testing.T) {
	blue := vpc.VPC{Name: "blue", VNI: 7, CIDR: pfx("10.1.0.0/16")}
	in := Input{
		Node:   "a",
		VPCs:   map[string]vpc.VPC{"blue": blue},
		Hosted: map[string]bool{"blue": true},
		Nodes:  testNodes(),
		Gateways: []Gateway{
			{VPC: "blue", Name: "all", Destinations: []netip.Prefix{pfx("0.0.0.0/0")}, Nodes: []string{"gw"}},
			{VPC: "blue", Name: "web", Selector: map[string]string{"app": "web"}, Destinations: []netip.Prefix{pfx("203.0.113.0/24")}, NodeSelector: map[string]string{"egress": "yes"}},
			{VPC: "blue", Name: "db", Selector: map[string]string{"app": "db"}, Destinations: []netip.Prefix{pfx("198.51.100.0/24")}, Nodes: []string{"g2"}},
		},
		Local: []Endpoint{
			{VPC: "blue", IP: addr("10.1.0.2"), Labels: map[string]string{"app": "web"}},
			{VPC: "blue", IP: addr("10.1.0.3"), Labels: map[string]string{"app": "db"}},
			{VPC: "blue", IP: addr("10.1.0.4")},
		},
	}
	p := Compute(in)
	want := []Route{
		{VPC: "blue", VNI: 7, Prefix: pfx("10.1.0.0/16"), Internal: true},
		{VPC: "blue", VNI: 7, Prefix: pfx("0.0.0.0/0"), Policy: "blue/all"},
		{VPC: "blue", VNI: 7, Prefix: pfx("198.51.100.0/24"), Policy: "blue/all", Selections: map[netip.Addr]string{addr("10.1.0.3"): "blue/db"}},
		{VPC: "blue", VNI: 7, Prefix: pfx("203.0.113.0/24"), Policy: "blue/all", Selections: map[netip.Addr]string{addr("10.1.0.2"): "blue/web"}},
	}
	if !reflect.DeepEqual(p.Routes, want) {
		t.Errorf("routes\n got %+v\nwant %+v", p.Routes, want)
	}
	if g := p.Policies["blue/web"]; !reflect.DeepEqual(g.Active, []netip.Addr{addr("192.168.0.3"), addr("192.168.0.2")}) && !reflect.DeepEqual(g.Active, []netip.Addr{addr("192.168.0.2"), addr("192.168.0.3")}) {
		t.Errorf("web's gateways by label: %+v", g)
	}
	if len(p.Serve) != 0 {
		t.Errorf("node a serves %v, it is no gateway", p.Serve)
	}
	// Without the catch-all, a pod no policy selects has no policy ("":
	// the data plane's EGRESS_NOT_SELECTED drop).
	in.Gateways = in.Gateways[1:]
	p = Compute(in)
	if r := p.Routes[2]; r.Prefix != pfx("203.0.113.0/24") || r.Policy != "" || r.Selections[addr("10.1.0.2")] != "blue/web" || len(r.Selections) != 1 {
		t.Errorf("route without a catch-all: %+v", r)
	}
}

// TestComputeHealthAndDrain: dead gateways leave both sets, draining ones
// move to Draining until the timeout, and a gateway node serves the VPC
// (with its egress address) while active or draining.
func TestComputeHealthAndDrain(t *testing.T) {
	now := time.Now()
	blue := vpc.VPC{Name: "blue", VNI: 7, CIDR: pfx("10.1.0.0/16")}
	g := Gateway{VPC: "blue", Name: "out", Destinations: []netip.Prefix{pfx("0.0.0.0/0")}, Nodes: []string{"gw", "g2", "a"},
		EgressIPs: map[string]netip.Addr{"g2": addr("192.168.0.33")}, Drains: []Drain{{Node: "g2", Since: now.Add(-time.Second)}}}
	in := Input{Node: "g2", VPCs: map[string]vpc.VPC{"blue": blue}, Nodes: testNodes(), Gateways: []Gateway{g},
		Alive: func(n string) bool { return n != "a" }, Now: now, DrainTimeout: time.Minute, Hosted: map[string]bool{"blue": true}}
	p := Compute(in)
	set := p.Policies["blue/out"]
	if !reflect.DeepEqual(set.Active, []netip.Addr{addr("192.168.0.2")}) || !reflect.DeepEqual(set.Draining, []netip.Addr{addr("192.168.0.3")}) {
		t.Errorf("sets %+v: want gw active, g2 draining, a (dead) in neither", set)
	}
	if p.Serve["blue"] != addr("192.168.0.33") {
		t.Errorf("draining g2 serves %v, want blue as 192.168.0.33", p.Serve)
	}
	in.Now = now.Add(2 * time.Minute) // the drain timed out
	p = Compute(in)
	if set := p.Policies["blue/out"]; len(set.Draining) != 0 || len(set.Active) != 1 {
		t.Errorf("after the drain timeout: %+v", set)
	}
	if _, ok := p.Serve["blue"]; ok {
		t.Errorf("g2 still serves blue after its drain timed out")
	}
	// A gateway not hosting the VPC still gets its routes (to tell
	// internal from egress destinations) but no policies.
	in.Now, in.Hosted = now, nil
	p = Compute(in)
	if len(p.Routes) != 2 || len(p.Policies) != 0 {
		t.Errorf("serving-only node: routes %+v policies %+v", p.Routes, p.Policies)
	}
}
