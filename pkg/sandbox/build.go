package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModuleRoot returns the root of the Go module containing the working
// directory (tests run in their package's directory).
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside a go module")
	}
	return filepath.Dir(mod), nil
}

// BuildBinaries builds genie, genied and geniectl into dir, for tests and
// benchmarks that run a sandbox from a fresh tree.
func BuildBinaries(dir string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/genie", "./cmd/genied", "./cmd/geniectl")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building binaries: %w\n%s", err, out)
	}
	return nil
}

// TestCNIBinDir returns the reference plugins' dir: $GENIE_TEST_CNI_BINDIR,
// else <module root>/_output/cni/bin. It reports whether bridge is there.
func TestCNIBinDir() (string, bool) {
	dir := os.Getenv("GENIE_TEST_CNI_BINDIR")
	if dir == "" {
		if root, err := ModuleRoot(); err == nil {
			dir = filepath.Join(root, "_output", "cni", "bin")
		}
	}
	_, err := os.Stat(filepath.Join(dir, "bridge"))
	return dir, err == nil
}
