package e2e

import (
	"context"
	"net/netip"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

func TestMain(m *testing.M) { sandboxtest.Main(m) }

// newSandbox brings up a sandbox with a random name; its teardown must
// leave nothing behind.
func newSandbox(t *testing.T, nodes int) *sandbox.Sandbox {
	t.Helper()
	return sandboxtest.New(t, "e2e", sandbox.Options{Nodes: nodes})
}

// mkVPC creates VPC name with cidr and one subnet "web" with subnetCIDR.
func mkVPC(t *testing.T, sb *sandbox.Sandbox, name, cidr, subnetCIDR string) {
	t.Helper()
	ctx := context.Background()
	st, err := sb.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.CreateVPC(ctx, vpc.VPC{Name: name, CIDR: netip.MustParsePrefix(cidr)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: name, Name: "web", CIDR: netip.MustParsePrefix(subnetCIDR)}); err != nil {
		t.Fatal(err)
	}
}

func addPod(t *testing.T, sb *sandbox.Sandbox, name, node string, nets ...string) *sandbox.Pod {
	t.Helper()
	p, err := sb.PodAdd(context.Background(), name, node, nets)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ipOf(t *testing.T, p *sandbox.Pod, ifname string) netip.Addr {
	t.Helper()
	ip, ok := p.IP(ifname)
	if !ok {
		t.Fatalf("pod %s has no IPv4 address on %q: %+v", p.Name, ifname, p.Interfaces)
	}
	return ip
}

func ep(p *sandbox.Pod, dev string) sandbox.Endpoint {
	return sandbox.Endpoint{Netns: p.Netns, Device: dev}
}
