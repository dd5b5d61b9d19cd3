package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
)

// ServeStoreArgs is the hidden geniectl subcommand that runs a sandbox's
// embedded etcd; Up starts it as a detached process.
var ServeStoreArgs = []string{"sandbox", "serve-store"}

func (s *Sandbox) storeDir() string { return filepath.Join(s.dir, "store") }

// startStore starts the store process and waits until it is ready.
func (s *Sandbox) startStore(ctx context.Context) error {
	dir := s.storeDir()
	sock := filepath.Join(dir, "etcd.sock")
	ready := filepath.Join(dir, "ready")
	os.Remove(ready)
	args := append(append([]string{}, ServeStoreArgs...), "--data-dir", filepath.Join(dir, "data"),
		"--socket", sock, "--ready-file", ready)
	logFile := filepath.Join(s.dir, "store.log")
	pid, err := s.startDetached("", logFile, filepath.Join(s.st.BinDir, "geniectl"), args...)
	if err != nil {
		return fmt.Errorf("sandbox %q: store: %w", s.st.Name, err)
	}
	s.st.StorePID = pid
	s.st.StoreEndpoint = "unix://" + sock
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			return nil
		}
		if !processAlive(pid) {
			return fmt.Errorf("sandbox %q: store exited; see %s:\n%s", s.st.Name, logFile, tail(logFile, 15))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sandbox %q: store not ready after 60s; see %s", s.st.Name, logFile)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sandbox %q: waiting for store: %w", s.st.Name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ServeStore runs an embedded etcd with its data in dataDir, serving
// clients on the unix socket sock (reachable from every network
// namespace), until SIGTERM/SIGINT or ctx ends. Once the server is ready it
// writes its endpoint to readyFile. It is the body of
// `geniectl sandbox serve-store`.
func ServeStore(ctx context.Context, dataDir, sock, readyFile string, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	e, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{
		DataDir:   dataDir,
		ClientURL: "unix://" + sock,
		PeerURL:   "unix://" + filepath.Join(filepath.Dir(sock), "peer.sock"),
		Name:      "sandbox",
		Logger:    log,
	})
	if err != nil {
		return err
	}
	defer e.Close()
	if readyFile != "" {
		if err := os.WriteFile(readyFile, []byte(strings.Join(e.Endpoints(), ",")+"\n"), 0o644); err != nil {
			return fmt.Errorf("writing ready file: %w", err)
		}
	}
	log.Info("store ready", "endpoints", e.Endpoints())
	select {
	case <-ctx.Done():
		log.Info("store stopping")
		return nil
	case err := <-e.Err():
		return fmt.Errorf("embedded etcd: %w", err)
	}
}
