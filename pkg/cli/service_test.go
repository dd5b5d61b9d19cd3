package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/service/resolver"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// TestServiceCommands runs geniectl service against a real embedded etcd.
func TestServiceCommands(t *testing.T) {
	e, err := etcdstore.StartEmbedded(context.Background(), etcdstore.EmbeddedConfig{DataDir: filepath.Join(t.TempDir(), "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ep := strings.Join(e.Endpoints(), ",")
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
	must("vpc", "create", "red", "--cidr", "10.10.0.0/16")
	must("subnet", "create", "blue/web", "--cidr", "10.10.1.0/24")
	out := must("service", "create", "blue/web", "--port", "80:8080", "--port", "53/udp", "--selector", "app=web")
	if !strings.Contains(out, "10.10.255.254 ") || !strings.Contains(out, "80:8080/tcp,53:53/udp") || !strings.Contains(out, "app=web") {
		t.Errorf("create output:\n%s", out)
	}
	must("service", "create", "red/web", "--vip", "10.10.255.254", "--port", "80", "--endpoints", "10.10.1.5,10.10.1.6")
	fail(`inside subnet "blue/web"`, "service", "create", "blue/db", "--vip", "10.10.1.9", "--port", "5432")
	fail(`outside vpc "blue"`, "service", "create", "blue/db", "--vip", "10.96.0.1", "--port", "5432")
	fail("port clash", "service", "create", "blue/db", "--port", "5432", "--port", "5432:6000")
	fail(`vpc "green"`, "service", "create", "green/db", "--port", "5432")
	fail("want PORT", "service", "create", "blue/db", "--port", "http")
	out = must("service", "list")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(lines[2], "endpoints=10.10.1.5,10.10.1.6") || !strings.Contains(lines[1], "pending") {
		t.Errorf("service list:\n%s", out)
	}
	if out := must("status"); !strings.Contains(out, "red/web") || !strings.Contains(out, "10.10.1.5,10.10.1.6") {
		t.Errorf("status without services:\n%s", out)
	}
	must("service", "delete", "blue/web")
	fail("not found", "service", "delete", "blue/web")
	if out := must("service", "list", "blue"); strings.Contains(out, "blue/web") {
		t.Errorf("deleted service listed:\n%s", out)
	}
	st, err := etcdstore.New(t.Context(), e.Endpoints(), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	checkServiceListing(t, st, gctl)
}

// checkServiceListing creates blue/api (selector app=api) and two
// labelled endpoints in st, runs the real resolver until it wrote their
// backend record, and checks that `service list`, `status` and `status
// --json` show the VIP, ports, selector and those backends (and
// "pending" before the resolver ran). gctl runs geniectl on the same
// datastore. blue/web must be a subnet of st.
func checkServiceListing(t *testing.T, st store.Store, gctl func(args ...string) (string, int)) {
	t.Helper()
	must := func(args ...string) string {
		t.Helper()
		out, code := gctl(args...)
		if code != 0 {
			t.Fatalf("geniectl %v: exit %d:\n%s", args, code, out)
		}
		return out
	}
	must("service", "create", "blue/api", "--vip", "10.10.200.1", "--port", "80:8080", "--port", "53/udp", "--selector", "app=api")
	if out := must("service", "list", "blue"); !strings.Contains(out, "pending") {
		t.Errorf("service list before the resolver ran, want pending:\n%s", out)
	}
	for i, node := range []string{"node-a", "node-b"} {
		a := netip.AddrFrom4([4]byte{10, 10, 1, byte(10 + 16*i)})
		if _, err := st.ClaimBlockContaining(t.Context(), "blue", "web", node, a); err != nil {
			t.Fatal(err)
		}
		if _, err := st.PutEndpoint(t.Context(), vpc.Endpoint{VPC: "blue", Subnet: "web", ID: fmt.Sprintf("c%d/eth1", i), IP: a, Node: node,
			MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(i + 1)}, Labels: map[string]string{"app": "api"}}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = (&resolver.Resolver{Store: st, ID: "test"}).Run(ctx) }()
	defer func() { cancel(); <-done }()
	want := []string{"blue/api", "10.10.200.1", "80:8080/tcp,53:53/udp", "app=api", "10.10.1.10@node-a,10.10.1.26@node-b"}
	var out string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out = must("service", "list", "blue")
		if strings.Contains(out, want[4]) || time.Now().After(deadline) {
			break
		}
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("service list lacks %q:\n%s", w, out)
		}
	}
	out = must("status")
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("status lacks %q:\n%s", w, out)
		}
	}
	var cs ClusterStatus
	if err := json.Unmarshal([]byte(must("status", "--json")), &cs); err != nil {
		t.Fatal(err)
	}
	var got *ServiceStatus
	for i := range cs.Services {
		if cs.Services[i].Service == "blue/api" {
			got = &cs.Services[i]
		}
	}
	if got == nil || got.VIP != netip.MustParseAddr("10.10.200.1") || len(got.Ports) != 2 || got.Selector["app"] != "api" ||
		!got.Resolved || len(got.Backends) != 2 || got.Backends[0].Node != "node-a" {
		t.Errorf("status --json services: %+v", cs.Services)
	}
}
