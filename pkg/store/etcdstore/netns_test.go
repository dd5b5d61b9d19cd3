package etcdstore_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore/etcdtest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

const childEnv = "GENIE_ETCDSTORE_CHILD"

// The embedded server's unix socket is reachable from another network
// namespace (as the sandbox's per-node agents need), while its loopback
// TCP listener is not: a child process in a fresh netns creates a VPC
// over the socket and fails to reach the TCP endpoint.
func TestPrivilegedUnixSocketAcrossNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	prefix := etcdtest.UniquePrefix(t)
	tcp, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: shortTempDir(t), ClientURL: "http://127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })

	cmd := exec.Command(os.Args[0], "-test.run=^TestNetnsChild$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=1",
		"GENIE_CHILD_UNIX="+srv.Endpoints()[0], "GENIE_CHILD_TCP="+tcp.Endpoints()[0], "GENIE_CHILD_PREFIX="+prefix)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child in new netns: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestNetnsChild") {
		t.Fatalf("child did not run its test:\n%s", out)
	}
	v, err := srv.NewStore(t, prefix).GetVPC(ctx, "from-netns")
	if err != nil || v.VNI != 1 {
		t.Fatalf("vpc created by the child = %+v, %v", v, err)
	}
}

// TestNetnsChild runs only inside the child of
// TestPrivilegedUnixSocketAcrossNetns.
func TestNetnsChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("helper of TestPrivilegedUnixSocketAcrossNetns")
	}
	s, err := etcdstore.New(context.Background(), []string{os.Getenv("GENIE_CHILD_UNIX")}, etcdstore.Options{Prefix: os.Getenv("GENIE_CHILD_PREFIX")})
	if err != nil {
		t.Fatalf("unix socket from another netns: %v", err)
	}
	defer s.Close()
	if _, err := s.CreateVPC(context.Background(), vpc.VPC{Name: "from-netns", CIDR: netip.MustParsePrefix("10.0.0.0/8")}); err != nil {
		t.Fatal(err)
	}
	if s, err := etcdstore.New(context.Background(), []string{os.Getenv("GENIE_CHILD_TCP")}, etcdstore.Options{DialTimeout: time.Second}); err == nil {
		s.Close()
		t.Fatal("loopback TCP of the host netns reachable from a new netns")
	}
}
