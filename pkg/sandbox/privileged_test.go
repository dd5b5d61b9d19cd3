package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestPrivilegedBaselinesAndCrashCleanup builds a sandbox without agents,
// checks the underlay, the reference bridge plugin pods and the hand-built
// flannel-style path carry traffic, then loses the state file (as after a
// crash) and checks Down still removes everything by name, twice.
func TestPrivilegedBaselinesAndCrashCleanup(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	cniDir, ok := TestCNIBinDir()
	if !ok {
		t.Skipf("needs the CNI reference plugins in %s (hack/build-test-bins.sh)", cniDir)
	}
	bin := t.TempDir()
	if err := BuildBinaries(bin); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	rand.Read(b)
	name := "sbt" + hex.EncodeToString(b)
	ctx := context.Background()
	sb, err := Up(ctx, Options{Name: name, Nodes: 2, BinDir: bin, CNIBinDir: cniDir, NoAgents: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		Down(context.Background(), "", "", name, nil)
		if left := Leftovers("", "", name); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})
	if _, err := Up(ctx, Options{Name: name, Nodes: 2, BinDir: bin, NoAgents: true}); err == nil {
		t.Error("a second Up of the same name succeeded")
	}
	st, err := sb.Status(ctx)
	if err != nil || !st.StoreAlive || len(st.Nodes) != 2 {
		t.Fatalf("status %+v, %v", st, err)
	}
	// The store answers.
	store, err := sb.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.ListVPCs(ctx); err != nil {
		t.Errorf("store: %v", err)
	}
	store.Close()

	n1, n2 := sb.Nodes()[0], sb.Nodes()[1]
	if err := ProbeTCP(ctx, Endpoint{Netns: n1.Netns}, Endpoint{Netns: n2.Netns}, n2.UnderlayIP, 7000, 5*time.Second); err != nil {
		t.Errorf("underlay: %v", err)
	}
	a, err := sb.BridgePod(ctx, "br-a", "node1", "10.99.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	bb, err := sb.BridgePod(ctx, "br-b", "1", "10.99.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	ipB, ok := bb.IP("")
	if !ok {
		t.Fatalf("bridge pod has no IP: %+v", bb.Interfaces)
	}
	ea, eb := Endpoint{Netns: a.Netns}, Endpoint{Netns: bb.Netns}
	if err := ProbeTCP(ctx, ea, eb, ipB, 7001, 5*time.Second); err != nil {
		t.Errorf("bridge pods tcp: %v", err)
	}
	if err := ProbeUDP(ctx, ea, eb, ipB, 7002, 5*time.Second); err != nil {
		t.Errorf("bridge pods udp: %v", err)
	}
	if err := PingTo(ctx, ea, eb, ipB, 5*time.Second); err != nil {
		t.Errorf("bridge pods ping: %v", err)
	}
	fa, fb, err := sb.FlannelPair("node1", "node2", "fl-a", "fl-b")
	if err != nil {
		t.Fatal(err)
	}
	ipFB, _ := fb.IP("eth0")
	if err := ProbeTCP(ctx, Endpoint{Netns: fa.Netns}, Endpoint{Netns: fb.Netns}, ipFB, 7003, 5*time.Second); err != nil {
		t.Errorf("flannel-style path: %v", err)
	}
	if err := sb.PodDel(ctx, "br-a"); err != nil {
		t.Errorf("pod del: %v", err)
	}
	if _, err := os.Stat(a.Netns); err == nil {
		t.Error("pod del left the pod's netns")
	}
	if err := sb.PodDel(ctx, "br-a"); err == nil {
		t.Error("deleting a missing pod succeeded")
	}

	// Crash: the state file is gone, processes and namespaces remain.
	if err := os.Remove(filepath.Join(sb.Dir(), "sandbox.json")); err != nil {
		t.Fatal(err)
	}
	if len(Leftovers("", "", name)) == 0 {
		t.Fatal("nothing to clean up: the test lost its point")
	}
	for i := 0; i < 2; i++ {
		if err := Down(ctx, "", "", name, nil); err != nil {
			t.Errorf("down #%d: %v", i+1, err)
		}
		if left := Leftovers("", "", name); len(left) > 0 {
			t.Errorf("down #%d left %v", i+1, left)
		}
	}
}
