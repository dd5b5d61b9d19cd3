package cli

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// TestStatusCommand runs `geniectl status` against a real embedded etcd
// holding two nodes, a VPC with a subnet, blocks and endpoints.
func TestStatusCommand(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: filepath.Join(dir, "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	st, err := etcdstore.New(ctx, e.Endpoints(), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	for i, n := range []string{"n1", "n2"} {
		if err := st.RegisterNode(ctx, vpc.Node{Name: n, UnderlayIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), UnderlayMAC: mac}); err != nil {
			t.Fatal(err)
		}
	}
	v, err := st.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.10.0.0/16"), QoSClass: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.10.1.0/24")}); err != nil {
		t.Fatal(err)
	}
	for i, n := range []string{"n1", "n2", "n2"} {
		b, err := st.ClaimBlock(ctx, "blue", "web", n)
		if err != nil {
			t.Fatal(err)
		}
		ip := b.CIDR.Addr().Next().Next()
		var q *vpc.EndpointQoS
		if i == 1 {
			q = &vpc.EndpointQoS{Class: "high", EgressRate: 50_000_000, IngressRate: 200_000_000}
		}
		if _, err := st.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c" + string(rune('0'+i)) + "/eth0", IP: ip, MAC: mac, Node: n,
			PodNamespace: "default", PodName: "p" + string(rune('0'+i)), Interface: "eth0", QoS: q}); err != nil {
			t.Fatal(err)
		}
	}
	ep := strings.Join(e.Endpoints(), ",")
	out, code := run(t, "--store-endpoints", ep, "status")
	if code != 0 {
		t.Fatalf("status: exit %d:\n%s", code, out)
	}
	for _, want := range []string{
		"n1", "192.0.2.1", "n2",
		"blue", "10.10.0.0/16",
		"blue/web", "10.10.1.1", "3 x /28",
		"3 endpoints in 1 VPCs on 2 nodes",
		"ENDPOINTS  QOS", "normal", // the VPC's default class
		"high  default/p1  eth0       blue", "50Mbit/s      200Mbit/s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status: want %q in:\n%s", want, out)
		}
	}
	// 256 - network, broadcast, gateway - 3 used.
	if !strings.Contains(out, "250") {
		t.Errorf("status: want 250 free addresses in:\n%s", out)
	}

	out, code = run(t, "--store-endpoints", ep, "status", "--json", "--agent-socket", filepath.Join(dir, "nosuch.sock"), "--node", "n1")
	if code != 0 {
		t.Fatalf("status --json: exit %d:\n%s", code, out)
	}
	var cs ClusterStatus
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		t.Fatalf("status --json: %v:\n%s", err, out)
	}
	if len(cs.Nodes) != 2 || cs.Nodes[0].Endpoints != 1 || cs.Nodes[1].Endpoints != 2 || cs.Nodes[1].Blocks != 2 {
		t.Errorf("nodes %+v", cs.Nodes)
	}
	if !strings.HasPrefix(cs.Nodes[0].Agent, "unreachable") || cs.Nodes[1].Agent != "" {
		t.Errorf("agent of n1 (bad socket) %q, of n2 %q", cs.Nodes[0].Agent, cs.Nodes[1].Agent)
	}
	if len(cs.VPCs) != 1 || cs.VPCs[0].VNI != v.VNI || cs.VPCs[0].Endpoints != 3 || cs.VPCs[0].Subnets != 1 {
		t.Errorf("vpcs %+v", cs.VPCs)
	}
	if len(cs.Subnets) != 1 || cs.Subnets[0].Used != 3 || cs.Subnets[0].Free != 250 || cs.Subnets[0].Blocks != 3 {
		t.Errorf("subnets %+v", cs.Subnets)
	}
	if cs.Endpoints != 3 {
		t.Errorf("endpoints %d", cs.Endpoints)
	}
	if len(cs.QoS) != 1 || cs.QoS[0].Pod != "default/p1" || cs.QoS[0].Class != "high" || cs.QoS[0].IngressRate != 200_000_000 ||
		cs.VPCs[0].QoSClass != "normal" {
		t.Errorf("qos %+v, vpc %+v", cs.QoS, cs.VPCs)
	}
}
