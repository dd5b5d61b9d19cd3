package agent_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// TestPrivilegedDefaultNetworkAttach: a pod's default-network attachment
// in a DefaultNetwork VPC gets the default route, the node's host route
// and permanent neighbour; a second one of an overlapping VPC on the node
// gets another address, and a requested clashing address is refused,
// naming the holder; a secondary attachment overlaps freely, without a
// host route.
func TestPrivilegedDefaultNetworkAttach(t *testing.T) {
	c := newCluster(t, 1)
	n := c.nodes[0]
	ctx := context.Background()
	for _, name := range []string{"blue", "red"} {
		if _, err := c.st.CreateVPC(ctx, vpc.VPC{Name: name, CIDR: netip.MustParsePrefix("10.1.0.0/16"), DefaultNetwork: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.st.CreateSubnet(ctx, vpc.Subnet{VPC: name, Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24")}); err != nil {
			t.Fatal(err)
		}
	}
	attach := func(name, vpcName string, def bool, ips ...string) (*pod, error) {
		p := &pod{ns: n.newPodNS(), id: "ctr-" + name + "-" + randSuffix(), ifName: "eth0"}
		res, err := n.client.Attach(ctx, &agentapi.AttachRequest{
			ContainerID: p.id, IfName: p.ifName, Netns: p.ns.Path(), PodNamespace: "default", PodName: name,
			VPC: vpcName, Subnet: "web", IPs: ips, DefaultNetwork: def,
		})
		if err != nil {
			return p, err
		}
		p.res = res
		p.ip, _ = netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
		return p, nil
	}
	hostRoute := func(p *pod) (route bool, neigh netlink.Neigh) {
		t.Helper()
		err := n.ns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(hostIfOf(t, p))
			if err != nil {
				return err
			}
			rs, err := netlink.RouteList(l, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			for _, r := range rs {
				if r.Dst != nil && r.Dst.String() == p.ip.String()+"/32" {
					route = true
				}
			}
			ns, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
			for _, x := range ns {
				if x.IP.Equal(p.ip.AsSlice()) {
					neigh = x
				}
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return route, neigh
	}

	blue, err := attach("blue-dn", "blue", true)
	if err != nil {
		t.Fatalf("%v\n%s", err, n.logs())
	}
	if route, neigh := hostRoute(blue); !route || neigh.State != netlink.NUD_PERMANENT {
		t.Errorf("blue %s: host route %v, neighbour %+v; want a route and a permanent neighbour", blue.ip, route, neigh)
	}
	var def bool
	_ = blue.ns.Do(func(ns.NetNS) error {
		rs, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range rs {
			def = def || r.Dst == nil || r.Dst.String() == "0.0.0.0/0"
		}
		return nil
	})
	if !def {
		t.Errorf("the default-network pod has no default route")
	}

	red, err := attach("red-dn", "red", true)
	if err != nil {
		t.Fatalf("second default-network pod: %v", err)
	}
	if red.ip == blue.ip {
		t.Fatalf("red's default-network pod got blue's %s", red.ip)
	}
	if route, _ := hostRoute(red); !route {
		t.Errorf("red %s has no host route", red.ip)
	}

	_, err = attach("red-clash", "red", true, blue.ip.String())
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, "blue-dn") || !strings.Contains(te.Msg, "unique") {
		t.Fatalf("a requested clashing address: %v; want an invalid-config error naming blue-dn", err)
	}

	sec, err := attach("red-secondary", "red", false, blue.ip.String())
	if err != nil {
		t.Fatalf("a secondary attachment with blue's address: %v", err)
	}
	if route, _ := hostRoute(sec); route {
		t.Errorf("a secondary attachment got a host route")
	}
}
