package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/vishvananda/netlink"
)

// The overlay as a pod's default network (#9 part 4) through the real
// binaries. Blue (DefaultNetwork) is the only network of pod "dn" on
// node1; the external namespace is reachable from node1 only. Every
// server is an identity echo: it names itself and the source it sees, so
// the test knows which connection each reply belongs to and what the SNAT
// did. Tx checksum offload is off in the pod and on node1's uplink: the
// SNATed packets carry the checksums BPF computed.

// serviceCIDR is the sandbox cluster's Service range, clusterDNS a
// ClusterIP in it that node1's stand-in for kube-proxy (an iptables DNAT
// and masquerade) sends to node2's server.
var (
	serviceCIDR = netip.MustParsePrefix("10.96.0.0/12")
	clusterDNS  = netip.MustParseAddr("10.96.0.10")
)

// serveNamed runs an identity echo on port in the namespace at netns:
// "<name> <remote addr>", then every line back.
func serveNamed(t *testing.T, netns, name string, port int) {
	t.Helper()
	sandboxtest.ServeTCP(t, sandbox.Endpoint{Netns: netns}, fmt.Sprintf(":%d", port), func(c net.Conn) {
		fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
		_, _ = io.Copy(c, c)
	})
}

// dialIdentity connects from the namespace at netns to dst, checks the
// server's name, echoes one line and returns the source the server saw.
func dialIdentity(ctx context.Context, netns string, dst netip.AddrPort, server, line string) (netip.AddrPort, error) {
	var c net.Conn
	err := sandbox.InNetns(netns, func() error {
		d := net.Dialer{Timeout: 2 * time.Second}
		var err error
		c, err = d.DialContext(ctx, "tcp4", dst.String())
		return err
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	hello, err := r.ReadString('\n')
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("read the server's greeting: %w", err)
	}
	name, seen, _ := strings.Cut(strings.TrimSpace(hello), " ")
	if name != server {
		return netip.AddrPort{}, fmt.Errorf("reached %q, want %q", name, server)
	}
	src, err := netip.ParseAddrPort(seen)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
		return src, err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return src, err
	}
	if strings.TrimSpace(got) != line {
		return src, fmt.Errorf("sent %q, got %q back", line, strings.TrimSpace(got))
	}
	return src, nil
}

func TestPrivilegedDefaultNetwork(t *testing.T) {
	sb := sandboxtest.New(t, "e2e", sandbox.Options{Nodes: 2, Underlay: suiteUnderlay(),
		AgentArgs: []string{"--service-cidr=" + serviceCIDR.String()}})
	ctx := t.Context()
	st, err := sb.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, name := range []string{"blue", "red"} {
		if _, err := st.CreateVPC(ctx, vpc.VPC{Name: name, CIDR: netip.MustParsePrefix("10.10.0.0/16"), DefaultNetwork: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: name, Name: "web", CIDR: netip.MustParsePrefix("10.10.1.0/24")}); err != nil {
			t.Fatal(err)
		}
	}
	ext, err := sb.AddExternal("node1")
	if err != nil {
		t.Fatal(err)
	}
	serveEcho(t, ext)
	n1, err := sb.Node("node1")
	if err != nil {
		t.Fatal(err)
	}
	n2, err := sb.Node("node2")
	if err != nil {
		t.Fatal(err)
	}
	if err := sandbox.SetTxChecksum(n1.Netns, sandbox.NodeUplink, false); err != nil {
		t.Fatal(err)
	}
	pod := addPod(t, sb, "dn", "node1", "blue/web")
	if err := sandbox.SetTxChecksum(pod.Netns, vpcIf(t, pod), false); err != nil {
		t.Fatal(err)
	}
	podIP := ipOf(t, pod, "")
	serveNamed(t, pod.Netns, "dn", 8080)
	serveNamed(t, n1.Netns, "node1", 7101)
	serveNamed(t, n2.Netns, "node2", 7102)

	t.Run("it reaches the external server through its own node", func(t *testing.T) {
		var c *extConn
		// First: the egress plan (250 ms poll) routes 0.0.0.0/0 for blue
		// on node1 a moment after the pod's ADD.
		deadline := time.Now().Add(5 * time.Second)
		for {
			if c, err = dialExt(ctx, pod, ext, 0, time.Second); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer c.c.Close()
		if c.seen.Addr() != n1.UnderlayIP || c.seen.Port() < 61000 {
			t.Fatalf("the server saw %s, want node1's %s and an snat port", c.seen, n1.UnderlayIP)
		}
		for i := range 20 {
			if err := c.echo(fmt.Sprintf("dn-%d-%s", i, strings.Repeat("x", 600))); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("its node reaches it, from the node's address (a kubelet probe)", func(t *testing.T) {
		src, err := dialIdentity(ctx, n1.Netns, netip.AddrPortFrom(podIP, 8080), "dn", "probe")
		if err != nil {
			t.Fatal(err)
		}
		if src.Addr() != n1.UnderlayIP {
			t.Errorf("the pod saw the probe from %s, want node1's %s", src, n1.UnderlayIP)
		}
	})
	t.Run("it reaches its node, unNATed", func(t *testing.T) {
		src, err := dialIdentity(ctx, pod.Netns, netip.AddrPortFrom(n1.UnderlayIP, 7101), "node1", "to-node")
		if err != nil {
			t.Fatal(err)
		}
		if src.Addr() != podIP {
			t.Errorf("node1 saw %s, want the pod's %s", src, podIP)
		}
	})
	t.Run("it reaches another host of the cluster, snated to its node", func(t *testing.T) {
		src, err := dialIdentity(ctx, pod.Netns, netip.AddrPortFrom(n2.UnderlayIP, 7102), "node2", "to-other-host")
		if err != nil {
			t.Fatal(err)
		}
		if src.Addr() != n1.UnderlayIP || src.Port() < 61000 {
			t.Errorf("node2 saw %s, want node1's %s and an snat port", src, n1.UnderlayIP)
		}
	})
	t.Run("a clusterip goes through its node's kube-proxy rules", func(t *testing.T) {
		// A real node has a default route: without the host route for
		// the Service CIDR the pod's packet would be SNATed and sent
		// there, past kube-proxy's rules.
		var gw net.IP
		if err := sandbox.InNetns(n1.Netns, func() error {
			rs, err := netlink.RouteGet(ext.IP.AsSlice())
			if err == nil && len(rs) > 0 {
				gw = rs[0].Gw
			}
			return err
		}); err != nil || gw == nil {
			t.Fatalf("node1's route to the external namespace: gw %v, %v", gw, err)
		}
		for _, cmd := range [][]string{
			{"ip", "route", "add", "default", "via", gw.String()},
			{"iptables", "-t", "nat", "-A", "PREROUTING", "-d", clusterDNS.String() + "/32", "-p", "tcp", "--dport", "53",
				"-j", "DNAT", "--to-destination", netip.AddrPortFrom(n2.UnderlayIP, 7102).String()},
			{"iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.10.0.0/16", "!", "-d", "10.10.0.0/16", "-j", "MASQUERADE"},
		} {
			if out, err := exec.Command("nsenter", append([]string{"--net=" + n1.Netns}, cmd...)...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v: %s", cmd, err, out)
			}
		}
		src, err := dialIdentity(ctx, pod.Netns, netip.AddrPortFrom(clusterDNS, 53), "node2", "to-clusterip")
		if err != nil {
			t.Fatal(err)
		}
		if src.Addr() != n1.UnderlayIP {
			t.Errorf("node2 saw %s, want node1's %s (kube-proxy's masquerade)", src, n1.UnderlayIP)
		}
	})
	t.Run("a red pod on the same node gets another address; the node reaches each", func(t *testing.T) {
		red := addPod(t, sb, "red-dn", "node1", "red/web")
		redIP := ipOf(t, red, "")
		if redIP == podIP {
			t.Fatalf("red's default-network pod got blue's %s on the same node", redIP)
		}
		serveNamed(t, red.Netns, "red-dn", 8080)
		for ip, name := range map[netip.Addr]string{podIP: "dn", redIP: "red-dn"} {
			if _, err := dialIdentity(ctx, n1.Netns, netip.AddrPortFrom(ip, 8080), name, "probe-"+name); err != nil {
				t.Errorf("node1 to %s (%s): %v", ip, name, err)
			}
		}
	})
}
