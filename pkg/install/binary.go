package install

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// CopyBinary installs the executable src as dir/name atomically: the bytes
// go to a temporary file in dir, which is synced and renamed over the old
// name, so a process executing the old binary keeps running and no exec
// ever sees a partial file. It reports whether the file changed (an
// identical binary is left alone).
func CopyBinary(src, dir, name string) (changed bool, err error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return false, fmt.Errorf("install binary %s: %w", name, err)
	}
	dst := filepath.Join(dir, name)
	if same, _ := sameContent(dst, data); same {
		return false, nil
	}
	if err := writeAtomic(dst, data, 0o755); err != nil {
		return false, fmt.Errorf("install binary %s: %w", name, err)
	}
	return true, nil
}

// sameContent reports whether path holds exactly data.
func sameContent(path string, data []byte) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, err
	}
	want := sha256.Sum256(data)
	return bytes.Equal(h.Sum(nil), want[:]), nil
}

// writeAtomic replaces path with data: a temporary file in the same
// directory (same filesystem, so the rename is atomic), synced, given
// mode, then renamed over path. On error nothing is left behind.
func writeAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	return nil
}
