package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
)

// ModulePath is the path of the module whose root FindModuleRoot finds.
const ModulePath = "github.com/cni-genie/cni-genie"

// Environment variables that locate the test binaries.
const (
	// EnvBinDir holds cnitool, etcd and kube-apiserver.
	EnvBinDir = "GENIE_TEST_BINDIR"
	// EnvCNIBinDir holds the CNI reference plugins.
	EnvCNIBinDir = "GENIE_TEST_CNI_BINDIR"
)

// FindModuleRoot returns the root of the cni-genie module, walking up from
// the working directory (go test runs in the package's directory).
func FindModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil {
			line, _, _ := strings.Cut(string(data), "\n")
			if strings.TrimSpace(line) == "module "+ModulePath {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find module root: no go.mod of %s above the working directory", ModulePath)
		}
		dir = parent
	}
}

// ModuleRoot is FindModuleRoot, failing the test when there is none.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	root, err := FindModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// BinDir returns $GENIE_TEST_BINDIR, else <module root>/_output/bin.
func BinDir(t testing.TB) string {
	t.Helper()
	return envDir(t, EnvBinDir, "_output", "bin")
}

// CNIBinDir returns $GENIE_TEST_CNI_BINDIR, else
// <module root>/_output/cni/bin.
func CNIBinDir(t testing.TB) string {
	t.Helper()
	return envDir(t, EnvCNIBinDir, "_output", "cni", "bin")
}

func envDir(t testing.TB, key string, def ...string) string {
	t.Helper()
	if d := os.Getenv(key); d != "" {
		return d
	}
	return filepath.Join(append([]string{ModuleRoot(t)}, def...)...)
}

// RequireBinaries skips the test unless every path exists, naming the
// missing one and the step that builds it.
func RequireBinaries(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("needs %s (run hack/build-test-bins.sh): %v", p, err)
		}
	}
}

// RequireRoot skips the test unless it runs as root; why says what needs
// root ("creates network namespaces").
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: " + why)
	}
}

// RandSuffix returns 6 random hex digits, to make names of links,
// namespaces and other machine-wide objects unique to one test. It is
// short so that a 3-letter prefix plus the suffix fits an interface name.
func RandSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewNS creates a network namespace, closed and unmounted at test end.
func NewNS(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		_ = testutils.UnmountNS(n)
	})
	return n
}

// HostLocalAllocations lists the addresses the host-local IPAM plugin
// holds under its dataDir, as "<network>/<ip>", in walk order.
func HostLocalAllocations(dataDir string) []string {
	var out []string
	_ = filepath.Walk(dataDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && net.ParseIP(info.Name()) != nil {
			out = append(out, filepath.Base(filepath.Dir(p))+"/"+info.Name())
		}
		return nil
	})
	return out
}
