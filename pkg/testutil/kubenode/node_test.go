package kubenode

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

const bridgeConflist = `{"cniVersion": "1.0.0", "name": "cluster", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}`

// TestPrivilegedNodeRunsPod brings a node up with the bridge plugin as its
// network, runs a pod through the API, checks its address inside the
// container's netns, deletes it (the lease is released), and checks that
// Stop leaves no cgroup, process or mount behind.
func TestPrivilegedNodeRunsPod(t *testing.T) {
	Require(t)
	bin := testenv.BinDir(t)
	cni := testenv.CNIBinDir(t)
	imgs := TestImages(t, bin, t.TempDir())
	var plugins []string
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		plugins = append(plugins, filepath.Join(cni, p))
	}
	testenv.RequireBinaries(t, plugins...)
	n := New(t, Options{BinDir: bin, CNIBin: plugins, NetConf: map[string][]byte{"10-cluster.conflist": []byte(bridgeConflist)}, Images: []string{imgs}})
	ctx := context.Background()
	cs, err := n.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if _, err := cs.CoreV1().Pods("default").Create(ctx, BusyboxPod("default", "p1", n.Name, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := WaitRunning(ctx, cs, "default", "p1", 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pod create → Running %v, IP %s", time.Since(begin).Round(time.Millisecond), p.Status.PodIP)
	ip := net.ParseIP(p.Status.PodIP)
	if ip == nil || !(&net.IPNet{IP: net.IPv4(10, 244, 0, 0), Mask: net.CIDRMask(24, 32)}).Contains(ip) {
		t.Fatalf("pod IP %q not from the bridge network", p.Status.PodIP)
	}
	pns, err := n.PodNetNS(p)
	if err != nil {
		t.Fatal(err)
	}
	err = pns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.IP.Equal(ip) {
				return nil
			}
		}
		t.Errorf("eth0 in the container has %v, not the pod IP %s", addrs, ip)
		return nil
	})
	pns.Close()
	if err != nil {
		t.Fatal(err)
	}
	lease := n.NodePath("/var/lib/cni/networks/cluster/" + p.Status.PodIP)
	if _, err := os.Stat(lease); err != nil {
		t.Fatalf("no host-local lease: %v", err)
	}
	if err := cs.CoreV1().Pods("default").Delete(ctx, "p1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := WaitGone(ctx, cs, "default", "p1", time.Minute); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(lease); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lease not released after the pod was deleted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	dir, cg := n.Dir, n.cgroupRoot
	n.Stop()
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s left behind", dir)
	}
	if m, _ := filepath.Glob("/sys/fs/cgroup/*/" + cg); len(m) > 0 {
		t.Errorf("cgroups left behind: %v", m)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); len(mi) > 0 && strings.Contains(string(mi), dir) {
		t.Errorf("mounts under %s left in the host's mount namespace", dir)
	}
}
