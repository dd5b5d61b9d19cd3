package cli

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// TestEgressCommands runs geniectl egress against a real embedded etcd:
// create (and its refusals, each naming the conflict), list, status,
// drain and undo, delete.
func TestEgressCommands(t *testing.T) {
	e, err := etcdstore.StartEmbedded(context.Background(), etcdstore.EmbeddedConfig{DataDir: filepath.Join(t.TempDir(), "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ep := strings.Join(e.Endpoints(), ",")
	st, err := etcdstore.New(t.Context(), e.Endpoints(), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i, n := range []string{"gw1", "gw2", "w1"} {
		labels := map[string]string(nil)
		if n == "gw2" {
			labels = map[string]string{"role": "egress"}
		}
		if err := st.RegisterNode(t.Context(), vpc.Node{Name: n, UnderlayIP: netip.AddrFrom4([4]byte{192, 168, 0, byte(i + 1)}), Labels: labels}); err != nil {
			t.Fatal(err)
		}
	}
	gctl := func(args ...string) (string, int) {
		return run(t, append([]string{"--store-endpoints", ep}, args...)...)
	}
	must := func(args ...string) string {
		t.Helper()
		out, code := gctl(args...)
		if code != 0 {
			t.Fatalf("geniectl %v: exit %d:\n%s", args, code, out)
		}
		return out
	}
	fail := func(want string, args ...string) {
		t.Helper()
		if out, code := gctl(args...); code == 0 || !strings.Contains(out, want) {
			t.Errorf("geniectl %v: exit %d, want error with %q:\n%s", args, code, want, out)
		}
	}
	must("vpc", "create", "blue", "--cidr", "10.10.0.0/16")
	out := must("egress", "create", "blue/out", "--dest", "0.0.0.0/0", "--node", "gw1", "--node-selector", "role=egress",
		"--selector", "app=web", "--egress-ip", "gw1=192.168.0.101")
	if !strings.Contains(out, "gw1(192.168.0.101 active") || !strings.Contains(out, "gw2(192.168.0.2 active") || !strings.Contains(out, "app=web") {
		t.Errorf("create output:\n%s", out)
	}
	fail(`vpc "green"`, "egress", "create", "green/out", "--dest", "0.0.0.0/0", "--node", "gw1")
	fail(`node "nope"`, "egress", "create", "blue/x", "--dest", "0.0.0.0/0", "--node", "nope")
	fail(`overlaps vpc "blue"`, "egress", "create", "blue/x", "--dest", "10.10.3.0/24", "--node", "gw1")
	fail(`"blue/out"`, "egress", "create", "blue/x", "--dest", "8.8.8.0/24", "--node", "gw1", "--egress-ip", "gw1=192.168.0.99")
	fail("already exists", "egress", "create", "blue/out", "--dest", "8.8.8.0/24", "--node", "gw1")
	fail("no gateway nodes", "egress", "create", "blue/x", "--dest", "8.8.8.0/24")

	out = must("egress", "drain", "gw2")
	if !strings.Contains(out, `node "gw2" draining in 1 egress gateways`) {
		t.Errorf("drain output:\n%s", out)
	}
	if out := must("egress", "list"); !strings.Contains(out, "gw2(192.168.0.2 draining") || !strings.Contains(out, "gw1(192.168.0.101 active") {
		t.Errorf("list after drain:\n%s", out)
	}
	if out := must("status"); !strings.Contains(out, "EGRESS GATEWAY") || !strings.Contains(out, "blue/out") {
		t.Errorf("status:\n%s", out)
	}
	fail(`no such node`, "egress", "drain", "nope")
	if out := must("egress", "drain", "w1"); !strings.Contains(out, "in 0 egress gateways") {
		t.Errorf("drain of a node that is no gateway:\n%s", out)
	}
	must("egress", "drain", "gw2", "--undo")
	if out := must("egress", "list", "blue"); !strings.Contains(out, "gw2(192.168.0.2 active") {
		t.Errorf("list after undo:\n%s", out)
	}
	must("egress", "delete", "blue/out")
	fail("not found", "egress", "delete", "blue/out")
}
