package cli

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// TestNodeCommands: node list shows heartbeats and blocks; node delete
// refuses a live node, takes it with --force, and frees its endpoints and
// blocks.
func TestNodeCommands(t *testing.T) {
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
	if _, err := st.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.10.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.10.1.0/24")}); err != nil {
		t.Fatal(err)
	}
	if err := st.RegisterNode(ctx, vpc.Node{Name: "n1", UnderlayIP: netip.MustParseAddr("192.168.0.1"),
		UnderlayMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Heartbeat: time.Now()}); err != nil {
		t.Fatal(err)
	}
	b, err := st.ClaimBlock(ctx, "blue", "web", "n1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c1/eth0", IP: b.CIDR.Addr().Next().Next(), Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	ep := strings.Join(e.Endpoints(), ",")
	out, code := run(t, "--store-endpoints", ep, "node", "list")
	if code != 0 || !strings.Contains(out, "n1") || !strings.Contains(out, "ago") || !strings.Contains(out, " 1") {
		t.Fatalf("node list: exit %d:\n%s", code, out)
	}
	out, code = run(t, "--store-endpoints", ep, "node", "delete", "n1")
	if code == 0 || !strings.Contains(out, "reported itself alive") {
		t.Fatalf("node delete of a live node: exit %d:\n%s", code, out)
	}
	if _, err := st.GetNode(ctx, "n1"); err != nil {
		t.Fatalf("refused delete removed the node: %v", err)
	}
	out, code = run(t, "--store-endpoints", ep, "node", "delete", "n1", "--force")
	if code != 0 || !strings.Contains(out, "1 endpoint(s) deleted, 1 block(s) released") {
		t.Fatalf("node delete --force: exit %d:\n%s", code, out)
	}
	if bs, _ := st.ListBlocks(ctx, "", ""); len(bs) != 0 {
		t.Fatalf("blocks after node delete: %+v", bs)
	}
	if eps, _, _ := st.ListEndpoints(ctx, ""); len(eps) != 0 {
		t.Fatalf("endpoints after node delete: %+v", eps)
	}
}
