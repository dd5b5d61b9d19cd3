package cli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
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
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(lines[2], "10.10.1.5,10.10.1.6") || !strings.Contains(lines[1], "none") {
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
}
