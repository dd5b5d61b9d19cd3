package agent

import (
	"context"
	"fmt"
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
