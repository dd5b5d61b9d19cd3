package e2e

import (
	"context"
	"net/netip"
	"os"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

func TestMain(m *testing.M) { sandboxtest.Main(m) }

// suiteUnderlay is the underlay the suite runs on: GENIE_E2E_UNDERLAY
// ("flat" or "routed"), default routed. A routed sandbox has both kinds of
// node pairs (node1-node3 share a segment, node2 is behind the router), so
// it covers the flat case's on-link path too; TestPrivilegedSameVPC also
// runs on a flat underlay, where every pair is on-link.
func suiteUnderlay() string {
	if u := os.Getenv("GENIE_E2E_UNDERLAY"); u != "" {
		return u
	}
	return sandbox.UnderlayRouted
}

// newSandbox brings up a sandbox with a random name on the suite's
// underlay; its teardown must leave nothing behind.
func newSandbox(t *testing.T, nodes int) *sandbox.Sandbox {
	t.Helper()
	return newSandboxOn(t, nodes, suiteUnderlay())
}

// newSandboxOn is newSandbox on the given underlay.
func newSandboxOn(t *testing.T, nodes int, underlay string) *sandbox.Sandbox {
	t.Helper()
	return sandboxtest.New(t, "e2e", sandbox.Options{Nodes: nodes, Underlay: underlay})
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
