package image

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func fakeBins(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	for _, b := range append(GenieBinaries, "pause", "busybox") {
		if err := os.WriteFile(filepath.Join(dir, b), []byte(content+b), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestReproducible builds the same image twice, from files with different
// mtimes, and gets the same digest; different content gives another.
func TestReproducible(t *testing.T) {
	a, b := fakeBins(t, "v1-"), fakeBins(t, "v1-")
	os.Chtimes(filepath.Join(b, "genied"), epoch.AddDate(30, 0, 0), epoch.AddDate(30, 0, 0))
	d1, err := WriteTarball(filepath.Join(t.TempDir(), "a.tar"), Genie(GenieRef, a))
	if err != nil {
		t.Fatal(err)
	}
	d2, err := WriteTarball(filepath.Join(t.TempDir(), "b.tar"), Genie(GenieRef, b))
	if err != nil {
		t.Fatal(err)
	}
	if d1[GenieRef] != d2[GenieRef] {
		t.Fatalf("same content, different digests: %v %v", d1[GenieRef], d2[GenieRef])
	}
	d3, err := WriteTarball(filepath.Join(t.TempDir(), "c.tar"), Genie(GenieRef, fakeBins(t, "v2-")))
	if err != nil {
		t.Fatal(err)
	}
	if d3[GenieRef] == d1[GenieRef] {
		t.Fatal("different binaries, same digest")
	}
}

// TestTarballContents reads the written tarball back the way a runtime
// would and checks each image's name, config and files.
func TestTarballContents(t *testing.T) {
	bins := fakeBins(t, "x-")
	out := filepath.Join(t.TempDir(), "all.tar")
	if _, err := WriteTarball(out, Genie(GenieRef, bins), Pause(PauseRef, filepath.Join(bins, "pause")), Busybox(BusyboxRef, filepath.Join(bins, "busybox"))); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		ref        string
		entrypoint string
		files      map[string]string // path -> content ("" = any); "->x" = symlink
	}{
		{GenieRef, "/usr/local/bin/genied", map[string]string{
			"usr/local/bin/genied": "x-genied", "usr/local/bin/genie": "x-genie", "usr/local/bin/geniectl": "x-geniectl",
			"usr/local/bin/genie-install": "x-genie-install", "var/run/netns/": "", "run/genie/": "", "tmp/": ""}},
		{PauseRef, "/pause", map[string]string{"pause": "x-pause"}},
		{BusyboxRef, "/bin/sh", map[string]string{"bin/busybox": "x-busybox", "bin/sh": "->busybox", "bin/ip": "->busybox"}},
	}
	for _, c := range cases {
		tag, err := name.NewTag(c.ref)
		if err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(out, &tag)
		if err != nil {
			t.Fatalf("%s not in the tarball: %v", c.ref, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != c.entrypoint || cf.OS != "linux" || cf.Architecture != "amd64" {
			t.Errorf("%s config: entrypoint %v os %s arch %s", c.ref, cf.Config.Entrypoint, cf.OS, cf.Architecture)
		}
		layers, _ := img.Layers()
		if len(layers) != 1 {
			t.Fatalf("%s: %d layers", c.ref, len(layers))
		}
		rc, _ := layers[0].Uncompressed()
		tr := tar.NewReader(rc)
		seen := map[string]bool{}
		prev := ""
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Name < prev {
				t.Errorf("%s: entries not sorted: %s after %s", c.ref, h.Name, prev)
			}
			prev = h.Name
			if !h.ModTime.Equal(epoch) || h.Uid != 0 || h.Gid != 0 {
				t.Errorf("%s: %s has mtime %v uid %d gid %d", c.ref, h.Name, h.ModTime, h.Uid, h.Gid)
			}
			want, ok := c.files[h.Name]
			if !ok {
				continue
			}
			seen[h.Name] = true
			switch {
			case len(want) > 2 && want[:2] == "->":
				if h.Typeflag != tar.TypeSymlink || h.Linkname != want[2:] {
					t.Errorf("%s: %s is not a link to %s", c.ref, h.Name, want[2:])
				}
			case want != "":
				b, _ := io.ReadAll(tr)
				if !bytes.Equal(b, []byte(want)) || h.Mode != 0o755 {
					t.Errorf("%s: %s = %q mode %o", c.ref, h.Name, b, h.Mode)
				}
			}
		}
		rc.Close()
		for f := range c.files {
			if !seen[f] {
				t.Errorf("%s: %s missing", c.ref, f)
			}
		}
	}
}

func TestMissingSource(t *testing.T) {
	_, err := WriteTarball(filepath.Join(t.TempDir(), "x.tar"), Genie(GenieRef, t.TempDir()))
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("genied")) {
		t.Fatalf("missing binary: %v", err)
	}
}
