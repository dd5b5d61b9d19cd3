package image

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildBinaries builds the cni-genie image's binaries and the pause binary
// into dir, static (CGO_ENABLED=0), stripped and with -trimpath so that
// the same source gives the same bytes. root is the module root.
func BuildBinaries(root, dir string) error {
	pkgs := []string{"./hack/images/pause"}
	for _, b := range GenieBinaries {
		pkgs = append(pkgs, "./cmd/"+b)
	}
	cmd := exec.Command("go", append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", dir + "/"}, pkgs...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build image binaries: %w\n%s", err, out)
	}
	return nil
}

// Tarballs are the files Build writes.
type Tarballs struct {
	// Genie holds the cni-genie image; Test the pause and busybox images.
	Genie, Test string
}

// Build builds the binaries (into outDir/bin) and writes outDir/cni-genie.tar
// (GenieRef) and outDir/test-images.tar (PauseRef, BusyboxRef around
// busyboxBin; skipped when busyboxBin is empty).
func Build(root, outDir, busyboxBin string) (*Tarballs, error) {
	bin := filepath.Join(outDir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	if err := BuildBinaries(root, bin); err != nil {
		return nil, err
	}
	t := &Tarballs{Genie: filepath.Join(outDir, "cni-genie.tar")}
	if _, err := WriteTarball(t.Genie, Genie(GenieRef, bin)); err != nil {
		return nil, err
	}
	if busyboxBin != "" {
		t.Test = filepath.Join(outDir, "test-images.tar")
		if _, err := WriteTarball(t.Test, Pause(PauseRef, filepath.Join(bin, "pause")), Busybox(BusyboxRef, busyboxBin)); err != nil {
			return nil, err
		}
	}
	return t, nil
}
