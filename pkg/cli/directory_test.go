package cli

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/directory"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// geniectl directory ring / lookup against three real directory nodes
// (gRPC on 127.0.0.1-3, one port) loading their shards from a real etcd
// store, which also names the nodes: the ring shows every shard at R
// holders, a lookup shows where the endpoint lives and every holder's
// answer, an unknown address exits 1, and geniectl status adds the ring.
func TestDirectoryCommands(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: filepath.Join(dir, "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ep := strings.Join(e.Endpoints(), ",")
	st, err := etcdstore.New(ctx, e.Endpoints(), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// One port free on 127.0.0.1; the other loopback addresses share it.
	l0, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l0.Addr().(*net.TCPAddr).Port
	var ms []directory.Member
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("n%d", i)
		ip := netip.AddrFrom4([4]byte{127, 0, 0, byte(i)})
		if err := st.RegisterNode(ctx, vpc.Node{Name: name, UnderlayIP: ip, UnderlayMAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(i)}}); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, directory.Member{Name: name, RPC: netip.AddrPortFrom(ip, uint16(port))})
	}
	if _, err := st.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.10.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.10.1.0/24")}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ClaimBlock(ctx, "blue", "web", "n2"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutEndpoint(ctx, vpc.Endpoint{VPC: "blue", Subnet: "web", ID: "c1/eth0", IP: netip.MustParseAddr("10.10.1.2"),
		MAC: net.HardwareAddr{2, 0xaa, 0, 0, 0, 2}, Node: "n2"}); err != nil {
		t.Fatal(err)
	}
	tr := directory.NewGRPCTransport()
	defer tr.Close()
	nctx, ncancel := context.WithCancel(ctx) // the nodes stop before the store closes
	defer ncancel()
	var nodes []*directory.Node
	for i, m := range ms {
		var l net.Listener
		if i == 0 {
			l = l0
		} else if l, err = directory.ListenRPC(m.RPC.String()); err != nil {
			t.Skipf("loopback address %s not usable: %v", m.RPC, err)
		}
		nd, err := directory.NewNode(directory.Config{Self: m, Source: st, Transport: tr})
		if err != nil {
			t.Fatal(err)
		}
		srv := directory.NewGRPCServer(nd)
		go srv.Serve(l)
		defer srv.Stop()
		go nd.Run(nctx)
		nd.SetMembers(ms)
		nodes = append(nodes, nd)
	}
	for _, nd := range nodes { // every node loaded
		for deadline := time.Now().Add(20 * time.Second); ; {
			if _, loading := nd.HeldShards(); len(loading) == 0 && len(nd.Placement().Members()) == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("directory nodes did not load their shards")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	rpc := fmt.Sprint(port)
	geniectl := func(wantCode int, args ...string) string {
		t.Helper()
		out, code := run(t, append([]string{"--store-endpoints", ep}, args...)...)
		if code != wantCode {
			t.Fatalf("geniectl %v: exit %d, want %d:\n%s", args, code, wantCode, out)
		}
		return out
	}
	out := geniectl(0, "directory", "ring", "--rpc-port", rpc)
	if !strings.Contains(out, "3 members, 4096 shards, R = 3, replicas missing 0, shards without a loaded holder 0") ||
		strings.Count(out, " 4096 ") < 3 {
		t.Errorf("directory ring:\n%s", out)
	}
	out = geniectl(0, "directory", "lookup", "blue", "10.10.1.2", "--rpc-port", rpc)
	if !strings.Contains(out, "on node n2, mac 02:aa:00:00:00:02") || strings.Count(out, " found ") != 3 {
		t.Errorf("directory lookup:\n%s", out)
	}
	out = geniectl(1, "directory", "lookup", "blue", "10.10.1.77", "--rpc-port", rpc)
	if !strings.Contains(out, "not found") || strings.Count(out, "not-found") != 3 {
		t.Errorf("directory lookup of an unknown address:\n%s", out)
	}
	geniectl(1, "directory", "lookup", "blue", "nonsense", "--rpc-port", rpc)
	// The lookers of the CLI's lookups are not remembered.
	k := directory.Key{VNI: 1, IP: netip.MustParseAddr("10.10.1.2")}
	for _, nd := range nodes {
		if ls := nd.Lookers(k); len(ls) > 0 {
			t.Errorf("a geniectl lookup registered lookers %v", ls)
		}
	}
	var _ store.DirectorySource = st
}
