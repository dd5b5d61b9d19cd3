package etcdstore_test

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// The store works against an external etcd process (the "outgrown one
// machine" path), here the etcd binary built by hack/build-test-bins.sh.
func TestExternalEtcd(t *testing.T) {
	bin := filepath.Join(testenv.BinDir(t), "etcd")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no etcd binary at %s (run hack/build-test-bins.sh): %v", bin, err)
	}
	dir := shortTempDir(t)
	client := "unix://" + filepath.Join(dir, "c.sock")
	peer := "unix://" + filepath.Join(dir, "p.sock")
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--name", "ext", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "ext="+peer, "--log-level", "error")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	var s *etcdstore.Store
	var err error
	for range 50 {
		if s, err = etcdstore.New(ctx, []string{client}, etcdstore.Options{DialTimeout: 500 * time.Millisecond}); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("connect to external etcd: %v\n%s", err, logs.String())
	}
	defer s.Close()
	v, err := s.CreateVPC(ctx, vpc.VPC{Name: "ext", CIDR: netip.MustParsePrefix("10.0.0.0/8")})
	if err != nil || v.VNI != 1 {
		t.Fatalf("create = %+v, %v", v, err)
	}
	if _, err := s.CreateSubnet(ctx, vpc.Subnet{VPC: "ext", Name: "a", CIDR: netip.MustParsePrefix("10.0.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	if b, err := s.ClaimBlock(ctx, "ext", "a", "n1"); err != nil || b.CIDR != netip.MustParsePrefix("10.0.0.0/28") {
		t.Fatalf("claim = %+v, %v", b, err)
	}
}
