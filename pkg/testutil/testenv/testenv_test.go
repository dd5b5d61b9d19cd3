package testenv_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

func TestModuleRoot(t *testing.T) {
	root := testenv.ModuleRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.HasPrefix(string(data), "module "+testenv.ModulePath+"\n") {
		t.Fatalf("module root %s: go.mod = %.40q, %v", root, data, err)
	}
	if _, err := os.Stat(filepath.Join(root, "pkg", "testutil", "testenv", "testenv.go")); err != nil {
		t.Fatalf("module root %s does not hold this package: %v", root, err)
	}
}

func TestBinDirs(t *testing.T) {
	root := testenv.ModuleRoot(t)
	t.Setenv(testenv.EnvBinDir, "")
	t.Setenv(testenv.EnvCNIBinDir, "")
	if got, want := testenv.BinDir(t), filepath.Join(root, "_output", "bin"); got != want {
		t.Errorf("default bin dir = %s, want %s", got, want)
	}
	if got, want := testenv.CNIBinDir(t), filepath.Join(root, "_output", "cni", "bin"); got != want {
		t.Errorf("default cni bin dir = %s, want %s", got, want)
	}
	t.Setenv(testenv.EnvBinDir, "/x/bin")
	t.Setenv(testenv.EnvCNIBinDir, "/x/cni")
	if got := testenv.BinDir(t); got != "/x/bin" {
		t.Errorf("bin dir from env = %s", got)
	}
	if got := testenv.CNIBinDir(t); got != "/x/cni" {
		t.Errorf("cni bin dir from env = %s", got)
	}
}

func TestRequireBinariesSkipsOnMissing(t *testing.T) {
	present := filepath.Join(t.TempDir(), "present")
	if err := os.WriteFile(present, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	var skipped bool
	t.Run("sub", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		testenv.RequireBinaries(t, present)
		testenv.RequireBinaries(t, present, missing)
	})
	if !skipped {
		t.Fatal("a missing binary did not skip the test")
	}
}

func TestRandSuffix(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s := testenv.RandSuffix()
		if len(s) != 6 || strings.Trim(s, "0123456789abcdef") != "" {
			t.Fatalf("suffix %q: want 6 hex digits", s)
		}
		seen[s] = true
	}
	if len(seen) < 95 {
		t.Fatalf("%d distinct suffixes of 100", len(seen))
	}
}

func TestPrivilegedNewNS(t *testing.T) {
	testenv.RequireRoot(t, "creates network namespaces")
	var path string
	t.Run("create", func(t *testing.T) {
		n := testenv.NewNS(t)
		path = n.Path()
		// A fresh namespace holds only its loopback.
		err := n.Do(func(ns.NetNS) error {
			links, err := netlink.LinkList()
			if err != nil {
				return err
			}
			if len(links) != 1 || links[0].Attrs().Name != "lo" {
				t.Errorf("links in new netns: %d, want only lo", len(links))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	if _, err := os.Stat(path); err == nil {
		t.Fatalf("netns %s left after the test", path)
	}
}

func TestHostLocalAllocations(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"net-a/10.1.0.2", "net-a/last_reserved_ip.0", "net-a/lock", "net-b/10.2.0.9"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte("c1\neth0"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := strings.Join(testenv.HostLocalAllocations(dir), " ")
	if want := "net-a/10.1.0.2 net-b/10.2.0.9"; got != want {
		t.Fatalf("allocations = %q, want %q", got, want)
	}
	if got := testenv.HostLocalAllocations(filepath.Join(dir, "missing")); len(got) != 0 {
		t.Fatalf("allocations of a missing dir = %v", got)
	}
}
