package agent

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSocketLock: while an agent holds its socket, a second agent given
// the same --socket fails with a message naming the socket and the first
// agent's pid, and the first agent's socket still exists and accepts
// connections. Once the first lock is released the socket can be taken.
// (Seen failing with the lockSocket call removed from Run: the second
// agent unlinked the socket and the dial below got ENOENT / reached the
// second agent's listener.)
func TestSocketLock(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "genie.sock")
	unlock, err := lockSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
			accepted <- struct{}{}
		}
	}()

	cfg := DefaultConfig()
	cfg.NodeName, cfg.Socket, cfg.StateDir, cfg.PinDir = "n1", sock, filepath.Join(dir, "state"), filepath.Join(dir, "pins")
	cfg.MetricsAddr = ""
	cfg.StoreEndpoints = []string{"unix://" + filepath.Join(dir, "no-etcd.sock")}
	second, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = second.Run(ctx)
	want := fmt.Sprintf("socket %s is in use by another agent (pid %d)", sock, os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second agent: %v, want an error containing %q", err, want)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("first agent's socket after the second agent started: %v", err)
	}
	c.Close()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the first agent's listener did not get the connection")
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
		t.Error("the refused agent created its state dir")
	}

	unlock()
	again, err := lockSocket(sock)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again()
}

func TestNodeReclaimFlag(t *testing.T) {
	cfg := DefaultConfig()
	if cfg.NodeReclaimAfter != DefaultNodeReclaimAfter {
		t.Fatalf("default reclaim time %v", cfg.NodeReclaimAfter)
	}
	fs := flag.NewFlagSet("genied", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"--node-reclaim-after", "90s"}); err != nil || cfg.NodeReclaimAfter != 90*time.Second {
		t.Fatalf("--node-reclaim-after 90s: %v, %v", cfg.NodeReclaimAfter, err)
	}
	if err := fs.Parse([]string{"--node-reclaim-after", "0"}); err != nil || cfg.NodeReclaimAfter != 0 {
		t.Fatalf("--node-reclaim-after 0: %v, %v", cfg.NodeReclaimAfter, err)
	}
}
