package service

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/vpc"
)

var (
	webSubnet = vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.0.0.0/24")}
	vip10     = netip.MustParseAddr("10.0.200.10")
	blueVPC   = vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.0.0.0/16")}
)

func web() Service {
	return Service{VPC: "blue", Name: "web", VIP: vip10, Ports: []Port{{Port: 80, Protocol: TCP, TargetPort: 8080}}, Selector: map[string]string{"app": "web"}}
}

func TestCheckRefusesNamingTheConflict(t *testing.T) {
	for _, c := range []struct {
		name   string
		mutate func(*Service)
		others []Service
		is     error
		want   string
	}{
		{"vip inside a subnet", func(s *Service) { s.VIP = netip.MustParseAddr("10.0.0.7") }, nil, ErrConflict, `subnet "blue/web"`},
		{"vip held by another service", nil, []Service{{VPC: "blue", Name: "api", VIP: vip10}}, ErrConflict, `service "blue/api"`},
		{"vip outside the vpc", func(s *Service) { s.VIP = netip.MustParseAddr("10.96.0.1") }, nil, vpc.ErrInvalid, `outside vpc "blue"`},
		{"port clash", func(s *Service) { s.Ports = append(s.Ports, Port{Port: 80, Protocol: TCP}) }, nil, vpc.ErrInvalid, "port clash"},
		{"port name clash", func(s *Service) {
			s.Ports = []Port{{Name: "h", Port: 80, Protocol: TCP}, {Name: "h", Port: 81, Protocol: TCP}}
		}, nil, vpc.ErrInvalid, "port clash"},
		{"no ports", func(s *Service) { s.Ports = nil }, nil, vpc.ErrInvalid, "no ports"},
		{"bad protocol", func(s *Service) { s.Ports[0].Protocol = "SCTP" }, nil, vpc.ErrInvalid, "SCTP"},
		{"selector and endpoints", func(s *Service) { s.Endpoints = []netip.Addr{vip10} }, nil, vpc.ErrInvalid, "both"},
		{"bad affinity", func(s *Service) { s.Affinity = "Sticky" }, nil, vpc.ErrInvalid, "Sticky"},
		{"table size not prime", func(s *Service) { s.TableSize = 1000 }, nil, vpc.ErrInvalid, "prime"},
		{"bad name", func(s *Service) { s.Name = "Web_1" }, nil, vpc.ErrInvalid, "Web_1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := web()
			if c.mutate != nil {
				c.mutate(&s)
			}
			err := Check(s.WithDefaults(), blueVPC, []vpc.Subnet{webSubnet}, c.others)
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Check = %v, want %v naming %q", err, c.is, c.want)
			}
		})
	}
	// The same VIP in another VPC, or held by the service itself, is fine.
	if err := Check(web().WithDefaults(), blueVPC, []vpc.Subnet{webSubnet}, []Service{{VPC: "red", Name: "web", VIP: vip10}, web()}); err != nil {
		t.Fatalf("same vip in another vpc: %v", err)
	}
}

func TestAllocateVIPSkipsSubnetsAndHeld(t *testing.T) {
	r := netip.MustParsePrefix("10.0.0.0/23")
	got, err := AllocateVIP(r, []vpc.Subnet{webSubnet}, []Service{{VIP: netip.MustParseAddr("10.0.1.254")}})
	if err != nil || got != netip.MustParseAddr("10.0.1.253") {
		t.Fatalf("AllocateVIP = %s, %v; want 10.0.1.253", got, err)
	}
	if _, err := AllocateVIP(netip.MustParsePrefix("10.0.0.0/30"), []vpc.Subnet{webSubnet}, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("full range: %v", err)
	}
}

func TestResolveAndTable(t *testing.T) {
	eps := []vpc.Endpoint{
		{VPC: "blue", ID: "c1/eth1", IP: netip.MustParseAddr("10.0.0.3"), Node: "n2", Labels: map[string]string{"app": "web", "tier": "x"}},
		{VPC: "blue", ID: "c2/eth1", IP: netip.MustParseAddr("10.0.0.2"), Node: "n1", Labels: map[string]string{"app": "web"}},
		{VPC: "blue", ID: "c3/eth1", IP: netip.MustParseAddr("10.0.0.4"), Node: "n1", Labels: map[string]string{"app": "db"}},
		{VPC: "red", ID: "c4/eth1", IP: netip.MustParseAddr("10.0.0.5"), Node: "n1", Labels: map[string]string{"app": "web"}},
	}
	b := Resolve(web(), eps)
	if len(b.Backends) != 2 || b.Backends[0].IP != netip.MustParseAddr("10.0.0.2") || b.Backends[1].Node != "n2" {
		t.Fatalf("resolved %+v, want blue 10.0.0.2 (n1) and 10.0.0.3 (n2)", b.Backends)
	}
	s := web()
	s.TableSize = 7
	tab, err := s.Table(b, s.Ports[0])
	if err != nil || len(tab) != 7 {
		t.Fatalf("table %v, %v", tab, err)
	}
	seen := map[netip.AddrPort]bool{}
	for _, a := range tab {
		if a.Port() != 8080 {
			t.Fatalf("slot with port %d, want the target port 8080", a.Port())
		}
		seen[a] = true
	}
	if len(seen) != 2 {
		t.Fatalf("table uses %d backends, want 2", len(seen))
	}
	// An explicit list keeps addresses without an endpoint.
	s = web()
	s.Selector, s.Endpoints = nil, []netip.Addr{netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("10.0.0.2")}
	b = Resolve(s, eps)
	if len(b.Backends) != 2 || b.Backends[0].Node != "n1" || b.Backends[1].Node != "" {
		t.Fatalf("explicit: %+v", b.Backends)
	}
}

func TestCheckSubnetRefusesCoveringAVIP(t *testing.T) {
	svcs := []Service{{VPC: "red", Name: "db", VIP: netip.MustParseAddr("10.0.9.9")}, {VPC: "blue", Name: "web", VIP: netip.MustParseAddr("10.0.9.10")}}
	wide := vpc.Subnet{VPC: "blue", Name: "wide", CIDR: netip.MustParsePrefix("10.0.8.0/23")}
	err := CheckSubnet(wide, svcs)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), `subnet "blue/wide" 10.0.8.0/23 covers vip 10.0.9.10 of service "blue/web"`) {
		t.Fatalf("err = %v", err)
	}
	// Another VPC's service at an address inside the subnet is no conflict.
	if err := CheckSubnet(vpc.Subnet{VPC: "blue", Name: "x", CIDR: netip.MustParsePrefix("10.0.9.8/30")}, svcs[:1]); err != nil {
		t.Fatal(err)
	}
}
