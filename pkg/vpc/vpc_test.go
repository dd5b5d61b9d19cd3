package vpc_test

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/vpc"
)

func TestVPCValidate(t *testing.T) {
	for _, tc := range []struct {
		name, cidr string
		want       string // "" = valid
	}{
		{"blue", "10.0.0.0/16", ""},
		{"a", "0.0.0.0/0", ""},
		{"x-1", "192.168.1.0/24", ""},
		{"", "10.0.0.0/16", "name is empty"},
		{"-blue", "10.0.0.0/16", "DNS-1123"},
		{"blue-", "10.0.0.0/16", "DNS-1123"},
		{"bl.ue", "10.0.0.0/16", "DNS-1123"},
		{"Blue", "10.0.0.0/16", "DNS-1123"},
		{strings.Repeat("a", 63), "10.0.0.0/16", ""},
		{strings.Repeat("a", 64), "10.0.0.0/16", "DNS-1123"},
		{"blue", "10.0.0.1/16", "host bits set (did you mean 10.0.0.0/16?)"},
		{"blue", "fd00::/8", "not IPv4"},
		{"blue", "::ffff:10.0.0.0/104", "not IPv4"},
		{"blue", "10.0.0.0", "not a CIDR"},
		{"blue", "", "not a CIDR"},
	} {
		_, err := vpc.ParseVPC(tc.name, tc.cidr)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%q %q: %v", tc.name, tc.cidr, err)
			}
			continue
		}
		if !errors.Is(err, vpc.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q %q: err = %v, want invalid containing %q", tc.name, tc.cidr, err, tc.want)
		}
	}
}

func TestSubnetValidate(t *testing.T) {
	parent := vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}
	for _, tc := range []struct {
		cidr, gw, block string
		want            string
		wantGW          string
		wantBlock       int
	}{
		{"10.1.0.0/24", "", "", "", "10.1.0.1", 28}, // 16 blocks, not 4 nodes' worth
		{"10.1.0.0/24", "10.1.0.254", "/26", "", "10.1.0.254", 26},
		{"10.1.0.0/22", "", "", "", "10.1.0.1", 26},
		{"10.1.0.0/16", "", "", "", "10.1.0.1", 26},
		{"10.1.0.0/28", "", "", "", "10.1.0.1", 30},
		{"10.1.0.0/30", "", "", "", "10.1.0.1", 30},
		{"10.1.0.0/16", "", "24", "", "10.1.0.1", 24},
		{"10.1.0.0/31", "", "", "too small", "", 0},
		{"10.1.0.0/32", "", "", "too small", "", 0},
		{"10.2.0.0/24", "", "", `outside vpc "blue" 10.1.0.0/16`, "", 0},
		{"10.0.0.0/8", "", "", "outside vpc", "", 0},
		{"10.1.0.0/24", "10.1.1.1", "", "gateway 10.1.1.1 is outside 10.1.0.0/24", "", 0},
		{"10.1.0.0/24", "10.1.0.0", "", "network or broadcast", "", 0},
		{"10.1.0.0/24", "10.1.0.255", "", "network or broadcast", "", 0},
		{"10.1.0.0/24", "fd00::1", "", "outside", "", 0},
		{"10.1.0.0/24", "bogus", "", "not an IP address", "", 0},
		{"10.1.0.0/24", "", "/20", "block prefix length /20", "", 0},
		{"10.1.0.0/24", "", "/33", "must be between /24 and /32", "", 0},
		{"10.1.0.0/24", "", "/999", "not a prefix length", "", 0},
		{"10.1.0.0/24", "", "x", "not a prefix length", "", 0},
		{"10.1.0.0/24", "", "/0", "not a prefix length", "", 0},
		{"10.1.0.5/24", "", "", "host bits", "", 0},
	} {
		sn, err := vpc.ParseSubnet("blue", "web", tc.cidr, tc.gw, tc.block)
		if err == nil {
			err = sn.Validate(parent)
		}
		if tc.want != "" {
			if !errors.Is(err, vpc.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s gw=%q block=%q: err = %v, want invalid containing %q", tc.cidr, tc.gw, tc.block, err, tc.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s gw=%q block=%q: %v", tc.cidr, tc.gw, tc.block, err)
			continue
		}
		if sn.Gateway.String() != tc.wantGW || sn.BlockPrefixLen != tc.wantBlock {
			t.Errorf("%s: gateway %s block /%d, want %s /%d", tc.cidr, sn.Gateway, sn.BlockPrefixLen, tc.wantGW, tc.wantBlock)
		}
	}
}

func TestCheckOverlap(t *testing.T) {
	sub := func(v, n, c string) vpc.Subnet {
		return vpc.Subnet{VPC: v, Name: n, CIDR: netip.MustParsePrefix(c)}
	}
	existing := []vpc.Subnet{sub("blue", "db", "10.1.0.128/25"), sub("blue", "app", "10.1.2.0/24"), sub("red", "web", "10.1.0.0/24")}
	for _, tc := range []struct {
		s    vpc.Subnet
		want string
	}{
		{sub("blue", "web", "10.1.0.0/24"), `subnet "blue/web" 10.1.0.0/24 overlaps subnet "blue/db" 10.1.0.128/25`},
		{sub("blue", "web", "10.1.0.0/25"), ""},
		{sub("blue", "web", "10.1.0.0/16"), "overlaps"},
		{sub("blue", "web", "10.1.2.64/26"), `overlaps subnet "blue/app"`},
		{sub("blue", "db", "10.1.0.128/25"), ""}, // itself (an update) is not a conflict
		{sub("green", "web", "10.1.0.0/24"), ""}, // other VPCs may overlap
	} {
		err := vpc.CheckOverlap(tc.s, existing)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.s, err)
			}
		} else if !errors.Is(err, vpc.ErrInvalid) || err.Error() != tc.want && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.s, err, tc.want)
		}
	}
	// The message is exactly the sentence, ready to print.
	err := vpc.CheckOverlap(sub("blue", "web", "10.1.0.0/24"), existing)
	if got := err.Error(); got != `subnet "blue/web" 10.1.0.0/24 overlaps subnet "blue/db" 10.1.0.128/25` {
		t.Errorf("message = %q", got)
	}
}

func TestAssignable(t *testing.T) {
	sn, err := vpc.ParseSubnet("blue", "web", "10.1.0.0/29", "10.1.0.3", "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for a := netip.MustParseAddr("10.0.255.255"); a.Compare(netip.MustParseAddr("10.1.0.9")) < 0; a = a.Next() {
		if sn.Assignable(a) {
			got = append(got, a.String())
		}
	}
	if want := "10.1.0.1 10.1.0.2 10.1.0.4 10.1.0.5 10.1.0.6"; strings.Join(got, " ") != want {
		t.Fatalf("assignable = %v, want %s", got, want)
	}
	if vpc.LastAddr(netip.MustParsePrefix("0.0.0.0/0")) != netip.MustParseAddr("255.255.255.255") ||
		vpc.LastAddr(netip.MustParsePrefix("10.1.0.0/24")) != netip.MustParseAddr("10.1.0.255") {
		t.Fatal("LastAddr")
	}
}

func TestJSON(t *testing.T) {
	e := vpc.Endpoint{VPC: "blue", Subnet: "web", VNI: 7, ID: "abc/eth1", PodNamespace: "default", PodName: "p", Interface: "eth1",
		IP: netip.MustParseAddr("10.1.0.2"), MAC: net.HardwareAddr{0x02, 0x42, 0xac, 0x11, 0, 2}, Node: "n1"}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"vpc":"blue","subnet":"web","vni":7,"id":"abc/eth1","podNamespace":"default","podName":"p","interface":"eth1","ip":"10.1.0.2","node":"n1","mac":"02:42:ac:11:00:02"}`
	if string(b) != want {
		t.Fatalf("json = %s\nwant   %s", b, want)
	}
	var back vpc.Endpoint
	if err := json.Unmarshal(b, &back); err != nil || back.MAC.String() != e.MAC.String() || back.IP != e.IP || back.ID != e.ID {
		t.Fatalf("round trip = %+v, %v", back, err)
	}
	// Published travels with nanoseconds and is left out when zero (above).
	e.Published = time.Date(2026, 11, 27, 9, 30, 0, 123456789, time.UTC)
	b, _ = json.Marshal(e)
	if err := json.Unmarshal(b, &back); err != nil || !back.Published.Equal(e.Published) {
		t.Fatalf("published round trip: %s -> %v, %v", b, back.Published, err)
	}
	if err := json.Unmarshal([]byte(`{"vpc":"blue","id":"x","mac":"zz"}`), &back); !errors.Is(err, vpc.ErrInvalid) {
		t.Fatalf("bad mac: %v", err)
	}

	n := vpc.Node{Name: "n1", UnderlayIP: netip.MustParseAddr("192.0.2.1"), UnderlayMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	b, _ = json.Marshal(n)
	if want := `{"name":"n1","underlayIP":"192.0.2.1","underlayMAC":"02:00:00:00:00:01"}`; string(b) != want {
		t.Fatalf("node json = %s", b)
	}
	var nb vpc.Node
	if err := json.Unmarshal(b, &nb); err != nil || nb.UnderlayMAC.String() != "02:00:00:00:00:01" {
		t.Fatalf("node round trip = %+v, %v", nb, err)
	}

	s, _ := vpc.ParseSubnet("blue", "web", "10.1.0.0/24", "", "")
	b, _ = json.Marshal(s)
	if want := `{"vpc":"blue","name":"web","cidr":"10.1.0.0/24","gateway":"10.1.0.1","blockPrefixLen":28}`; string(b) != want {
		t.Fatalf("subnet json = %s", b)
	}
	v, _ := vpc.ParseVPC("blue", "10.1.0.0/16")
	b, _ = json.Marshal(v)
	if want := `{"name":"blue","cidr":"10.1.0.0/16"}`; string(b) != want {
		t.Fatalf("vpc json = %s", b)
	}
}

func TestEndpointNodeValidate(t *testing.T) {
	ok := vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c/eth0", IP: netip.MustParseAddr("10.1.0.2"), Node: "n1.example"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mod  func(*vpc.Endpoint)
		want string
	}{
		{func(e *vpc.Endpoint) { e.ID = "" }, "id is empty"},
		{func(e *vpc.Endpoint) { e.ID = "a b" }, "space"},
		{func(e *vpc.Endpoint) { e.IP = netip.Addr{} }, "not an IPv4"},
		{func(e *vpc.Endpoint) { e.IP = netip.MustParseAddr("fd00::1") }, "not an IPv4"},
		{func(e *vpc.Endpoint) { e.MAC = net.HardwareAddr{1, 2, 3} }, "6-byte"},
		{func(e *vpc.Endpoint) { e.Node = "" }, "node name is empty"},
		{func(e *vpc.Endpoint) { e.Node = "N1" }, "subdomain"},
		{func(e *vpc.Endpoint) { e.Subnet = "" }, "subnet"},
	} {
		e := ok
		tc.mod(&e)
		if err := e.Validate(); !errors.Is(err, vpc.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", e, err, tc.want)
		}
	}
	if err := (vpc.Node{Name: "n1", UnderlayIP: netip.MustParseAddr("192.0.2.1")}).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (vpc.Node{Name: "n1"}).Validate(); !errors.Is(err, vpc.ErrInvalid) {
		t.Fatalf("node without ip: %v", err)
	}
}
