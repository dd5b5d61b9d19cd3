package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
)

func run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(args, &out, &errOut)
	return out.String() + errOut.String(), code
}

func TestErrors(t *testing.T) {
	root := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sandbox", "status", "--state-root", root}, "no sandbox is up"},
		{[]string{"vpc", "list", "--state-root", root}, "no --store-endpoints given and no sandbox is up"},
		{[]string{"sandbox", "pod", "add", "x", "--state-root", root}, "at least one --net"},
		{[]string{"subnet", "create", "bad", "--cidr", "10.0.0.0/24", "--state-root", root}, "want VPC/NAME"},
		{[]string{"subnet", "delete", "a/b/c", "--state-root", root}, "want VPC/NAME"},
		{[]string{"vpc", "create", "x", "--cidr", "300.0.0.0/8", "--state-root", root}, `vpc "x": --cidr`},
		{[]string{"vpc", "create", "x", "--state-root", root}, `"cidr" not set`},
		{[]string{"sandbox", "status", "--name", "Bad_Name", "--state-root", root}, "sandbox name"},
		{[]string{"sandbox", "up", "--name", "x", "--nodes", "0", "--state-root", root}, "--nodes 0: want 1 to"},
		{[]string{"nosuch"}, "unknown command"},
	} {
		out, code := run(t, tc.args...)
		if code == 0 {
			t.Errorf("geniectl %v succeeded:\n%s", tc.args, out)
			continue
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("geniectl %v: want %q in:\n%s", tc.args, tc.want, out)
		}
		if strings.Contains(out, "panic") || strings.Contains(out, "goroutine") {
			t.Errorf("geniectl %v panicked:\n%s", tc.args, out)
		}
	}
}

// TestVPCAndSubnetCommands runs the vpc and subnet commands against a real
// embedded etcd.
func TestVPCAndSubnetCommands(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: filepath.Join(dir, "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ep := strings.Join(e.Endpoints(), ",")
	must := func(args ...string) string {
		t.Helper()
		out, code := run(t, append([]string{"--store-endpoints", ep}, args...)...)
		if code != 0 {
			t.Fatalf("geniectl %v: exit %d:\n%s", args, code, out)
		}
		return out
	}
	fail := func(want string, args ...string) {
		t.Helper()
		out, code := run(t, append([]string{"--store-endpoints", ep}, args...)...)
		if code == 0 || !strings.Contains(out, want) {
			t.Errorf("geniectl %v: exit %d, want error with %q:\n%s", args, code, want, out)
		}
	}
	must("vpc", "create", "blue", "--cidr", "10.10.0.0/16")
	must("vpc", "create", "red", "--cidr", "10.10.0.0/16", "--mtu", "1400", "--qos-class", "low")
	fail(`qos class "gold": want high, normal or low`, "vpc", "create", "gold", "--cidr", "10.40.0.0/16", "--qos-class", "gold")
	fail("mtu", "vpc", "create", "tiny", "--cidr", "10.30.0.0/16", "--mtu", "100")
	fail("already exists", "vpc", "create", "red", "--cidr", "10.20.0.0/16")
	out := must("vpc", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "VPC") || !strings.Contains(lines[1], "blue") || !strings.Contains(lines[2], "red") {
		t.Errorf("vpc list:\n%s", out)
	}
	if !strings.Contains(lines[1], " 1") || !strings.Contains(lines[2], " 2") {
		t.Errorf("want VNIs 1 and 2:\n%s", out)
	}
	if !strings.HasSuffix(strings.TrimSpace(lines[1]), "auto  -") || !strings.HasSuffix(strings.TrimSpace(lines[2]), "1400  low") {
		t.Errorf("want MTU auto and no QoS class for blue, 1400 and low for red:\n%s", out)
	}
	out = must("subnet", "create", "blue/web", "--cidr", "10.10.1.0/24")
	if !strings.Contains(out, "10.10.1.1") {
		t.Errorf("default gateway missing:\n%s", out)
	}
	must("subnet", "create", "red/web", "--cidr", "10.10.1.0/24", "--gateway", "10.10.1.254")
	fail("overlaps", "subnet", "create", "blue/db", "--cidr", "10.10.1.128/25")
	fail("outside", "subnet", "create", "blue/far", "--cidr", "10.99.0.0/24")
	fail("not found", "subnet", "create", "green/web", "--cidr", "10.10.1.0/24")
	if out := must("subnet", "list", "red"); !strings.Contains(out, "10.10.1.254") || strings.Contains(out, "blue") {
		t.Errorf("subnet list red:\n%s", out)
	}
	fail("in use", "vpc", "delete", "blue")
	must("subnet", "delete", "blue/web")
	must("vpc", "delete", "blue")
	fail("not found", "vpc", "delete", "blue")
	if out := must("vpc", "list"); strings.Contains(out, "blue") {
		t.Errorf("blue still listed:\n%s", out)
	}
}
