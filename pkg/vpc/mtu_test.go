package vpc

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestPodMTU(t *testing.T) {
	nodes := []Node{{Name: "a", UplinkMTU: 1500}, {Name: "b", UplinkMTU: 9000}, {Name: "c"}, {Name: "d", UplinkMTU: 1400}}
	for _, c := range []struct {
		name  string
		v     VPC
		nodes []Node
		want  int
	}{
		{"smallest registered uplink minus overhead", VPC{}, nodes, 1350},
		{"the vpc's own mtu wins", VPC{MTU: 1200}, nodes, 1200},
		{"no node registered an mtu: fallback", VPC{}, []Node{{Name: "c"}}, 1450},
		{"no nodes: fallback", VPC{}, nil, 1450},
	} {
		if got := c.v.PodMTU(c.nodes, 50, 1450); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}

func TestVPCValidateMTU(t *testing.T) {
	v := VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}
	for _, mtu := range []int{0, MinMTU, 1450, MaxMTU} {
		v.MTU = mtu
		if err := v.Validate(); err != nil {
			t.Errorf("mtu %d: %v", mtu, err)
		}
	}
	for _, mtu := range []int{-1, MinMTU - 1, MaxMTU + 1} {
		v.MTU = mtu
		if err := v.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("mtu %d: %v, want ErrInvalid", mtu, err)
		}
	}
}

func TestVPCValidateQoSClass(t *testing.T) {
	v := VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}
	for _, c := range []string{"", "high", "normal", "low"} {
		v.QoSClass = c
		if err := v.Validate(); err != nil {
			t.Errorf("qos class %q: %v", c, err)
		}
	}
	for _, c := range []string{"gold", "High", " low"} {
		v.QoSClass = c
		if err := v.Validate(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `vpc "blue": qos class`) {
			t.Errorf("qos class %q: %v, want ErrInvalid naming the vpc", c, err)
		}
	}
}
