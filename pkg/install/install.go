package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Options configures Install, Run and Uninstall. Paths are as the installer
// sees them (in the DaemonSet, the host's directories are mounted under
// /host); Host* fields are the same places as the runtime sees them.
type Options struct {
	// Source is the genie binary to install.
	Source string
	// BinDir and ConfDir are the host's CNI directories.
	BinDir, ConfDir string
	// Conf says what goes into genie's conflist; its ConfDir is ConfDir.
	Conf ConfOptions
	// Kubeconfig is where credentials come from; a nil value writes no
	// kubeconfig (genie runs without Kubernetes).
	Kubeconfig *KubeconfigSource
	// RefreshInterval is Run's token check period (default 30s).
	RefreshInterval time.Duration
	// StateDir is genie's attachment records (Uninstall removes it only
	// with Purge).
	StateDir string
	// Purge makes Uninstall remove StateDir too.
	Purge bool
	// Log receives progress; nil: slog.Default().
	Log *slog.Logger
}

func (o *Options) log() *slog.Logger {
	if o.Log == nil {
		return slog.Default()
	}
	return o.Log
}

// KubeconfigPath is where the kubeconfig goes, as the installer sees it.
func (o *Options) KubeconfigPath() string { return filepath.Join(o.ConfDir, KubeconfigName) }

func (o *Options) confName() string {
	if o.Conf.ConfName == "" {
		return ConfName
	}
	return o.Conf.ConfName
}

// Install copies the binary, writes the kubeconfig (before the conflist
// that points at it) and then the conflist. It is idempotent: files that
// are already right are not rewritten.
func Install(ctx context.Context, o Options) error {
	log := o.log()
	for _, d := range []string{o.BinDir, o.ConfDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("install: %w", err)
		}
	}
	changed, err := CopyBinary(o.Source, o.BinDir, BinaryName)
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	log.Info("binary", "path", filepath.Join(o.BinDir, BinaryName), "changed", changed)
	if o.Kubeconfig != nil {
		changed, err := WriteKubeconfig(ctx, o.KubeconfigPath(), *o.Kubeconfig)
		if err != nil {
			return fmt.Errorf("install: %w", err)
		}
		log.Info("kubeconfig", "path", o.KubeconfigPath(), "changed", changed)
	}
	conf := o.Conf
	conf.ConfDir = o.ConfDir
	w, changed, err := WriteConflist(conf)
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	log.Info("conflist", "path", filepath.Join(o.ConfDir, o.confName()), "wraps", w.Name, "from", w.File, "changed", changed)
	return nil
}

// Run installs, then keeps the kubeconfig's token fresh until ctx ends.
// It leaves everything installed when it returns: a stopped installer is
// an upgrade or a restart far more often than an uninstall.
func Run(ctx context.Context, o Options) error {
	if err := Install(ctx, o); err != nil {
		return err
	}
	if o.Kubeconfig == nil {
		<-ctx.Done()
		return nil
	}
	interval := o.RefreshInterval
	if interval <= 0 {
		interval = 30 * time.Second
	}
	log := o.log()
	RefreshKubeconfig(ctx, o.KubeconfigPath(), *o.Kubeconfig, interval,
		func() { log.Info("kubeconfig refreshed", "path", o.KubeconfigPath()) },
		func(err error) { log.Error("kubeconfig refresh failed", "err", err) })
	return nil
}

// Uninstall removes genie's conflist (first, so the runtime falls back to
// the wrapped network), its kubeconfig and its binary, and with Purge its
// state dir. A conflist of that name that is not genie's is left alone.
// Missing files are not an error.
func Uninstall(o Options) error {
	log := o.log()
	var errs []error
	conf := filepath.Join(o.ConfDir, o.confName())
	if l, err := readConf(conf); err == nil && !isGenieList(l) {
		log.Warn("not removing a conflist that is not genie's", "path", conf)
	} else if err := removeFile(conf); err != nil {
		errs = append(errs, err)
	}
	for _, p := range []string{o.KubeconfigPath(), filepath.Join(o.BinDir, BinaryName)} {
		if err := removeFile(p); err != nil {
			errs = append(errs, err)
		}
	}
	if o.Purge && o.StateDir != "" {
		if err := os.RemoveAll(o.StateDir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", o.StateDir, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	log.Info("uninstalled", "confDir", o.ConfDir, "binDir", o.BinDir)
	return nil
}

func removeFile(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// CheckUninstalled returns an error naming the first of genie's files
// still present (the uninstall DaemonSet's readiness probe).
func CheckUninstalled(o Options) error {
	for _, p := range []string{filepath.Join(o.ConfDir, o.confName()), o.KubeconfigPath(), filepath.Join(o.BinDir, BinaryName)} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s is still installed", p)
		}
	}
	return nil
}
