package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one entry of an image's single layer.
type File struct {
	// Path inside the image, without a leading slash ("usr/local/bin/genie").
	Path string
	// Source is a host file to copy (Data is used when empty).
	Source string
	// Data is the content when Source is empty.
	Data []byte
	// Mode is the permission bits (default 0755 for files from Source,
	// 0644 for Data).
	Mode int64
	// Link, if set, makes the entry a symlink to Link.
	Link string
	// Dir makes the entry a directory.
	Dir bool
}

// Spec is one image.
type Spec struct {
	// Ref is the image's name, e.g. "docker.io/cni-genie/cni-genie:0.1.0"
	// (the CRI looks images up by their normalized docker.io name).
	Ref string
	// Files make up the one layer; parent directories are added.
	Files []File
	// Entrypoint, Cmd and Env of the config.
	Entrypoint, Cmd, Env []string
}

// epoch is every entry's mtime.
var epoch = time.Unix(0, 0).UTC()

// Layer returns the spec's layer tar, byte-for-byte reproducible.
func (s Spec) Layer() ([]byte, error) {
	type entry struct {
		hdr  *tar.Header
		data []byte
	}
	entries := map[string]entry{}
	addDir := func(p string) {
		for d := p; d != "." && d != "/" && d != ""; d = path.Dir(d) {
			if _, ok := entries[d+"/"]; !ok {
				entries[d+"/"] = entry{hdr: &tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}}
			}
		}
	}
	for _, f := range s.Files {
		p := strings.TrimPrefix(path.Clean(f.Path), "/")
		addDir(path.Dir(p))
		switch {
		case f.Dir:
			addDir(p)
		case f.Link != "":
			entries[p] = entry{hdr: &tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: f.Link, Mode: 0o777}}
		default:
			data, mode := f.Data, f.Mode
			if f.Source != "" {
				b, err := os.ReadFile(f.Source)
				if err != nil {
					return nil, fmt.Errorf("image %s: %w", s.Ref, err)
				}
				data = b
				if mode == 0 {
					mode = 0o755
				}
			} else if mode == 0 {
				mode = 0o644
			}
			entries[p] = entry{hdr: &tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data))}, data: data}
		}
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := entries[n]
		e.hdr.ModTime, e.hdr.Format = epoch, tar.FormatPAX
		e.hdr.Uid, e.hdr.Gid = 0, 0
		if err := tw.WriteHeader(e.hdr); err != nil {
			return nil, fmt.Errorf("image %s: layer %s: %w", s.Ref, n, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("image %s: layer %s: %w", s.Ref, n, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", s.Ref, err)
	}
	return buf.Bytes(), nil
}

// Image builds the spec into an image.
func (s Spec) Image() (v1.Image, error) {
	layerTar, err := s.Layer()
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", s.Ref, err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", s.Ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", s.Ref, err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: epoch}
	cf.History = nil
	cf.Config.Entrypoint, cf.Config.Cmd = s.Entrypoint, s.Cmd
	cf.Config.Env = s.Env
	if cf.Config.Env == nil {
		cf.Config.Env = []string{"PATH=/usr/local/bin:/bin"}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", s.Ref, err)
	}
	return img, nil
}

// WriteTarball writes the images into one docker-save tarball at out
// (written to a temp file and renamed) and returns each image's digest.
func WriteTarball(out string, specs ...Spec) (map[string]v1.Hash, error) {
	refs := map[name.Reference]v1.Image{}
	digests := map[string]v1.Hash{}
	for _, s := range specs {
		ref, err := name.ParseReference(s.Ref)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", s.Ref, err)
		}
		img, err := s.Image()
		if err != nil {
			return nil, err
		}
		if digests[s.Ref], err = img.Digest(); err != nil {
			return nil, fmt.Errorf("image %s: %w", s.Ref, err)
		}
		refs[ref] = img
	}
	tmp := out + ".tmp"
	if err := tarball.MultiRefWriteToFile(tmp, refs); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("write %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("write %s: %w", out, err)
	}
	return digests, nil
}
