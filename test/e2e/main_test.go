package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// binDir holds genie, genied and geniectl built once for all tests; empty
// when the tests cannot run (not root).
var binDir string
var buildErr error

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Geteuid() == 0 && !testing.Short() {
		dir, err := os.MkdirTemp("", "genie-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		buildErr = sandbox.BuildBinaries(dir)
		binDir = dir
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// newSandbox brings up a sandbox with a random name and registers its
// teardown, which must leave nothing behind.
func newSandbox(t *testing.T, nodes int) *sandbox.Sandbox {
	t.Helper()
	requirePrivileged(t)
	b := make([]byte, 3)
	rand.Read(b)
	name := "e2e" + hex.EncodeToString(b)
	cniDir, _ := sandbox.TestCNIBinDir()
	sb, err := sandbox.Up(context.Background(), sandbox.Options{Name: name, Nodes: nodes, BinDir: binDir,
		CNIBinDir: cniDir, Log: logWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range sb.Nodes() {
				if data, err := os.ReadFile(n.LogFile); err == nil {
					t.Logf("%s genied log (tail):\n%s", n.Name, tailLines(string(data), 30))
				}
			}
		}
		if err := sb.Down(context.Background()); err != nil {
			t.Errorf("down: %v", err)
		}
		if left := sandbox.Leftovers("", "", name); len(left) > 0 {
			t.Errorf("down left %v", left)
		}
	})
	return sb
}

// requirePrivileged skips unless the sandbox can run here, and fails if
// the binaries did not build.
func requirePrivileged(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, BPF")
	}
	if err := sandbox.CheckBPFFS(sandbox.DefaultBPFRoot); err != nil {
		t.Skipf("needs bpffs: %v", err)
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
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

type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
