package agent_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// cluster is an embedded etcd, a fabric netns with a bridge (the
// underlay) and nodes: netns with an eth0 veth into the bridge, each running
// its own genied (started with nsenter --net, so it sees the host's bpffs).
type cluster struct {
	t        *testing.T
	bin      string
	dir      string
	emb      *etcdstore.Embedded
	st       *etcdstore.Store
	storeURL []string
	fabric   ns.NetNS
	nodes    []*node
	// agentArgs are extra genied flags of every node.
	agentArgs []string
}

// node is one node of the cluster.
type node struct {
	c        *cluster
	name     string
	ns       ns.NetNS
	dir      string
	pinDir   string
	socket   string
	agent    *exec.Cmd
	agentErr chan error
	logPath  string
	client   *agentapi.Client
}

func skipUnlessPrivileged(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped in -short mode (make test-unit)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and loads BPF programs")
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &sfs); err != nil || sfs.Type != unix.BPF_FS_MAGIC {
		t.Skip("needs bpffs mounted at /sys/fs/bpf")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("needs nsenter to start genied inside the node netns")
	}
}

func randSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func buildGenied(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "genied")
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "github.com/cni-genie/cni-genie/cmd/genied")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building genied: %v\n%s", err, b)
	}
	return out
}

func newCluster(t *testing.T, nodes int, agentArgs ...string) *cluster {
	skipUnlessPrivileged(t)
	ctx := context.Background()
	c := &cluster{t: t, dir: t.TempDir(), agentArgs: agentArgs}
	c.bin = buildGenied(t)

	c.startStore()
	t.Cleanup(func() { c.emb.Close() })
	c.storeURL = c.emb.Endpoints()
	var err error
	if c.st, err = etcdstore.New(ctx, c.storeURL, etcdstore.Options{}); err != nil {
		t.Fatalf("connecting to etcd: %v", err)
	}
	t.Cleanup(func() { c.st.Close() })

	if c.fabric, err = testutils.NewNS(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.fabric.Close(); testutils.UnmountNS(c.fabric) })
	err = c.fabric.Do(func(ns.NetNS) error {
		la := netlink.NewLinkAttrs()
		la.Name = "br0"
		br := &netlink.Bridge{LinkAttrs: la}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		return netlink.LinkSetUp(br)
	})
	if err != nil {
		t.Fatalf("creating underlay bridge: %v", err)
	}
	for i := range nodes {
		c.nodes = append(c.nodes, c.addNode(fmt.Sprintf("node-%c", 'a'+i), i))
	}
	return c
}

// startStore starts (or restarts, on the same data dir and socket) the
// embedded etcd.
func (c *cluster) startStore() {
	emb, err := etcdstore.StartEmbedded(context.Background(), etcdstore.EmbeddedConfig{DataDir: filepath.Join(c.dir, "etcd")})
	if err != nil {
		c.t.Fatalf("starting embedded etcd: %v", err)
	}
	c.emb = emb
}

func (c *cluster) addNode(name string, i int) *node {
	t := c.t
	n := &node{c: c, name: name, dir: filepath.Join(c.dir, name)}
	n.pinDir = "/sys/fs/bpf/genie-agent-test-" + randSuffix()
	n.socket = filepath.Join(n.dir, "agent.sock")
	var err error
	if n.ns, err = testutils.NewNS(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.ns.Close(); testutils.UnmountNS(n.ns) })
	// Pins go before the namespaces (cleanups run LIFO).
	t.Cleanup(func() {
		if err := datapath.Remove(n.pinDir); err != nil {
			t.Errorf("removing pins of %s: %v", name, err)
		}
		os.Remove(n.pinDir)
	})
	port := fmt.Sprintf("p%d-%s", i, randSuffix())
	err = n.ns.Do(func(ns.NetNS) error {
		la := netlink.NewLinkAttrs()
		la.Name = "eth0"
		la.MTU = 1500
		veth := &netlink.Veth{LinkAttrs: la, PeerName: port, PeerNamespace: netlink.NsFd(int(c.fabric.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addr := mustCIDR(fmt.Sprintf("192.168.77.%d/24", 10+i))
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: addr}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		lo, _ := netlink.LinkByName("lo")
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatalf("creating uplink of %s: %v", name, err)
	}
	err = c.fabric.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(port)
		if err != nil {
			return err
		}
		br, err := netlink.LinkByName("br0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(l, br); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatalf("plugging %s into the underlay: %v", name, err)
	}
	n.client = agentapi.NewClient(n.socket, 30*time.Second)
	n.startAgent(t)
	t.Cleanup(n.stopAgent)
	return n
}

func mustCIDR(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

func (n *node) startAgent(t *testing.T) {
	t.Helper()
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n.logPath = filepath.Join(n.dir, fmt.Sprintf("genied-%d.log", time.Now().UnixNano()))
	logf, err := os.Create(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	n.agent = exec.Command("nsenter", "--net="+n.ns.Path(), "--",
		n.c.bin, "--node-name", n.name, "--uplink", "eth0", "--pin-dir", n.pinDir,
		"--socket", n.socket, "--state-dir", filepath.Join(n.dir, "state"),
		"--store-endpoints", strings.Join(n.c.storeURL, ","), "--metrics-addr", "127.0.0.1:9465")
	n.agent.Args = append(n.agent.Args, n.c.agentArgs...)
	n.agent.Stdout, n.agent.Stderr = logf, logf
	if err := n.agent.Start(); err != nil {
		t.Fatalf("starting genied: %v", err)
	}
	n.agentErr = make(chan error, 1)
	go func() { n.agentErr <- n.agent.Wait(); logf.Close() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := n.client.Status(context.Background())
		if err == nil && st.Ready {
			return
		}
		select {
		case err := <-n.agentErr:
			n.agent = nil
			t.Fatalf("genied on %s exited during start-up: %v\n%s", n.name, err, n.logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("genied on %s not ready after 30s (status %+v, %v)\n%s", n.name, st, err, n.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *node) stopAgent() {
	if n.agent == nil {
		return
	}
	_ = n.agent.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.agentErr:
		if err != nil {
			n.c.t.Errorf("genied on %s exited with %v\n%s", n.name, err, n.logs())
		}
	case <-time.After(20 * time.Second):
		_ = n.agent.Process.Kill()
		<-n.agentErr
		n.c.t.Errorf("genied on %s did not stop on SIGTERM\n%s", n.name, n.logs())
	}
	n.agent = nil
}

// killAgent stops the agent with SIGKILL, as a crash would.
func (n *node) killAgent() {
	if n.agent == nil {
		return
	}
	_ = n.agent.Process.Kill()
	<-n.agentErr
	n.agent = nil
}

func (n *node) logs() string {
	b, _ := os.ReadFile(n.logPath)
	return string(b)
}

// metrics scrapes the node agent's /metrics (inside the node netns) and
// returns the sample lines by "name{labels}".
func (n *node) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	var body []byte
	err := n.ns.Do(func(ns.NetNS) error {
		conn, err := net.DialTimeout("tcp4", "127.0.0.1:9465", 3*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("GET /metrics HTTP/1.0\r\nHost: genied\r\n\r\n")); err != nil {
			return err
		}
		body, err = io.ReadAll(conn)
		return err
	})
	if err != nil {
		t.Fatalf("scraping metrics of %s: %v", n.name, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// pod is a pod netns attached through the agent.
type pod struct {
	ns     ns.NetNS
	id     string
	ifName string
	ip     netip.Addr
	res    *current.Result
}

func (n *node) newPodNS() ns.NetNS {
	p, err := testutils.NewNS()
	if err != nil {
		n.c.t.Fatal(err)
	}
	n.c.t.Cleanup(func() { p.Close(); testutils.UnmountNS(p) })
	return p
}

func (n *node) attach(name, vpcName, subnet string, ips ...string) (*pod, error) {
	// The pod's netns lives until the cluster goes.
	p := &pod{ns: n.newPodNS(), id: "ctr-" + name + "-" + randSuffix(), ifName: "eth1"}
	res, err := n.client.Attach(context.Background(), &agentapi.AttachRequest{
		ContainerID: p.id, IfName: p.ifName, Netns: p.ns.Path(),
		PodNamespace: "default", PodName: name, VPC: vpcName, Subnet: subnet, IPs: ips,
	})
	if err != nil {
		return p, err
	}
	p.res = res
	p.ip, _ = netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	return p, nil
}

func (n *node) mustAttach(t *testing.T, name, vpcName, subnet string, ips ...string) *pod {
	t.Helper()
	p, err := n.attach(name, vpcName, subnet, ips...)
	if err != nil {
		t.Fatalf("attach %s on %s: %v\n%s", name, n.name, err, n.logs())
	}
	return p
}

func (n *node) detach(t *testing.T, p *pod) {
	t.Helper()
	if err := n.client.Detach(context.Background(), &agentapi.DetachRequest{ContainerID: p.id, IfName: p.ifName, Netns: p.ns.Path()}); err != nil {
		t.Fatalf("detach %s: %v", p.id, err)
	}
}

// listen opens a TCP echo server on p's address until the test ends.
func listen(t *testing.T, p *pod, port int) {
	t.Helper()
	var l net.Listener
	err := p.ns.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", net.JoinHostPort(p.ip.String(), fmt.Sprint(port)))
		return err
	})
	if err != nil {
		t.Fatalf("listening in pod: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// dial connects from src to dst:port (the socket lives in src's netns).
func dial(src *pod, dst netip.Addr, port int) (net.Conn, error) {
	var c net.Conn
	err := src.ns.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp4", net.JoinHostPort(dst.String(), fmt.Sprint(port)), 3*time.Second)
		return err
	})
	return c, err
}

// echo sends a line over c and expects it back.
func echo(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if got != msg+"\n" {
		return fmt.Errorf("echo got %q, want %q", got, msg)
	}
	return nil
}

func linkExists(n ns.NetNS, name string) bool {
	found := false
	_ = n.Do(func(ns.NetNS) error {
		_, err := netlink.LinkByName(name)
		found = err == nil
		return nil
	})
	return found
}

func hostLinks(n ns.NetNS) []string {
	var names []string
	_ = n.Do(func(ns.NetNS) error {
		links, _ := netlink.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "gv") {
				names = append(names, l.Attrs().Name)
			}
		}
		return nil
	})
	return names
}

func TestPrivilegedAgent(t *testing.T) {
	c := newCluster(t, 1)
	e := c.nodes[0]
	ctx := context.Background()
	if _, err := c.st.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	sub, err := c.st.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}

	a := e.mustAttach(t, "a", "blue", "web")
	b := e.mustAttach(t, "b", "blue", "web")
	t.Logf("pod a %s, pod b %s", a.ip, b.ip)

	t.Run("metrics", func(t *testing.T) {
		m := e.metrics(t)
		if m[`genie_endpoints{scope="local"}`] != 2 || m["genie_attach_duration_seconds_count"] != 2 || m["genie_vpc_watches"] != 1 {
			t.Fatalf("unexpected metrics: local=%v adds=%v watches=%v", m[`genie_endpoints{scope="local"}`],
				m["genie_attach_duration_seconds_count"], m["genie_vpc_watches"])
		}
		if _, ok := m[`genie_datapath_drops_total{reason="NO_ROUTE"}`]; !ok {
			t.Fatal("drop counters are not exported")
		}
	})

	t.Run("distinct addresses of the subnet", func(t *testing.T) {
		if a.ip == b.ip || !sub.CIDR.Contains(a.ip) || !sub.CIDR.Contains(b.ip) || a.ip == sub.Gateway || b.ip == sub.Gateway {
			t.Fatalf("addresses %s and %s, subnet %s gateway %s", a.ip, b.ip, sub.CIDR, sub.Gateway)
		}
	})

	t.Run("result and pod interface", func(t *testing.T) {
		res := a.res
		if res.CNIVersion != "1.1.0" || len(res.IPs) != 1 || res.IPs[0].Gateway.String() != sub.Gateway.String() ||
			res.IPs[0].Address.String() != a.ip.String()+"/24" {
			t.Fatalf("unexpected result %+v", res)
		}
		pi := res.Interfaces[*res.IPs[0].Interface]
		if pi.Name != "eth1" || pi.Sandbox != a.ns.Path() || pi.Mac == "" {
			t.Fatalf("unexpected pod interface %+v", pi)
		}
		if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "10.1.0.0/16" {
			t.Fatalf("want a route to the VPC CIDR, got %+v", res.Routes)
		}
		err := a.ns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName("eth1")
			if err != nil {
				return err
			}
			if l.Attrs().MTU != 1500-datapath.EncapOverhead {
				return fmt.Errorf("mtu %d, want %d", l.Attrs().MTU, 1500-datapath.EncapOverhead)
			}
			if l.Attrs().HardwareAddr.String() != pi.Mac {
				return fmt.Errorf("mac %s, result says %s", l.Attrs().HardwareAddr, pi.Mac)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		hostIf := hostIfOf(t, a)
		err = e.ns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(hostIf)
			if err != nil {
				return err
			}
			if l.Attrs().Flags&net.FlagUp == 0 {
				return fmt.Errorf("host veth %s is down", hostIf)
			}
			if addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4); len(addrs) != 0 {
				return fmt.Errorf("host veth %s has addresses %v", hostIf, addrs)
			}
			v6, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + hostIf + "/disable_ipv6")
			if err == nil && strings.TrimSpace(string(v6)) != "1" {
				return fmt.Errorf("IPv6 is enabled on host veth %s", hostIf)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.client.Check(ctx, &agentapi.CheckRequest{ContainerID: a.id, IfName: "eth1", Netns: a.ns.Path()}); err != nil {
			t.Fatalf("check: %v", err)
		}
		ep, err := c.st.GetEndpoint(ctx, "blue", vpc.EndpointID(a.id, "eth1"))
		if err != nil || ep.IP != a.ip || ep.Node != "node-a" || ep.MAC.String() != pi.Mac {
			t.Fatalf("store endpoint %+v, %v", ep, err)
		}
	})

	listen(t, b, 5001)
	conn, err := dial(a, b.ip, 5001)
	if err != nil {
		t.Fatalf("TCP from a to b: %v\n%s", err, e.logs())
	}
	defer conn.Close()
	if err := echo(conn, "hello"); err != nil {
		t.Fatalf("TCP echo a->b: %v", err)
	}

	t.Run("default route on request", func(t *testing.T) {
		p := &pod{ns: e.newPodNS(), id: "ctr-dr-" + randSuffix(), ifName: "net1"}
		res, err := e.client.Attach(ctx, &agentapi.AttachRequest{ContainerID: p.id, IfName: p.ifName, Netns: p.ns.Path(),
			VPC: "blue", Subnet: "web", DefaultRoute: true, MAC: "02:aa:bb:cc:dd:ee"})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Routes) != 2 || res.Routes[1].Dst.String() != "0.0.0.0/0" || !res.Routes[1].GW.Equal(net.IP(sub.Gateway.AsSlice())) {
			t.Fatalf("routes %+v", res.Routes)
		}
		err = p.ns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName("net1")
			if err != nil {
				return err
			}
			if l.Attrs().HardwareAddr.String() != "02:aa:bb:cc:dd:ee" {
				return fmt.Errorf("requested MAC not set: %s", l.Attrs().HardwareAddr)
			}
			routes, err := netlink.RouteList(l, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			for _, r := range routes {
				if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(net.IP(sub.Gateway.AsSlice())) {
					return nil
				}
			}
			return fmt.Errorf("no default route via %s in %+v", sub.Gateway, routes)
		})
		if err != nil {
			t.Fatal(err)
		}
		// CHECK notices a pod interface that lost its address.
		err = p.ns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName("net1")
			if err != nil {
				return err
			}
			return netlink.AddrDel(l, &netlink.Addr{IPNet: &res.IPs[0].Address})
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.client.Check(ctx, &agentapi.CheckRequest{ContainerID: p.id, IfName: p.ifName, Netns: p.ns.Path()}); err == nil ||
			!strings.Contains(err.Error(), "lacks address") {
			t.Fatalf("check of a broken attachment: %v", err)
		}
		if err := e.client.Detach(ctx, &agentapi.DetachRequest{ContainerID: p.id, IfName: p.ifName}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.client.Attach(ctx, &agentapi.AttachRequest{ContainerID: "bad-mac", IfName: "eth1", Netns: p.ns.Path(),
			VPC: "blue", Subnet: "web", MAC: "01:00:5e:00:00:01"}); err == nil || !strings.Contains(err.Error(), "multicast") {
			t.Fatalf("multicast MAC: %v", err)
		}
	})

	t.Run("unknown vpc leaves nothing behind", func(t *testing.T) {
		before := hostLinks(e.ns)
		p, err := e.attach("x", "nope", "web")
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig ||
			!strings.Contains(te.Msg, `attach vpc "nope" subnet "web" to pod default/x`) || !strings.Contains(te.Msg, "not found") {
			t.Fatalf("want a clear invalid-config error, got %v", err)
		}
		if linkExists(p.ns, "eth1") {
			t.Fatal("pod got an interface")
		}
		if after := hostLinks(e.ns); len(after) != len(before) {
			t.Fatalf("host veths %v, before %v", after, before)
		}
		recs, _ := filepath.Glob(filepath.Join(e.dir, "state", "attachments", "*.json"))
		if len(recs) != 2 {
			t.Fatalf("state records %v, want 2", recs)
		}
		// Unknown subnet of a known VPC, and an address outside the subnet.
		if _, err := e.attach("y", "blue", "nope"); err == nil || !strings.Contains(err.Error(), `subnet "nope"`) {
			t.Fatalf("unknown subnet: %v", err)
		}
		if _, err := e.attach("z", "blue", "web", "10.2.0.9"); err == nil {
			t.Fatal("address outside the subnet was accepted")
		}
		if after := hostLinks(e.ns); len(after) != len(before) {
			t.Fatalf("host veths %v, before %v", after, before)
		}
	})

	t.Run("parallel attaches to a new vpc", func(t *testing.T) {
		if _, err := c.st.CreateVPC(ctx, vpc.VPC{Name: "green", CIDR: netip.MustParsePrefix("10.9.0.0/24")}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.st.CreateSubnet(ctx, vpc.Subnet{VPC: "green", Name: "all", CIDR: netip.MustParsePrefix("10.9.0.0/24")}); err != nil {
			t.Fatal(err)
		}
		const n = 12
		pods := make([]*pod, n)
		errs := make(chan error, n)
		for i := range n {
			go func() {
				p, err := e.attach(fmt.Sprintf("g%d", i), "green", "all")
				pods[i] = p
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatalf("parallel attach: %v", err)
			}
		}
		seen := map[netip.Addr]bool{}
		for _, p := range pods {
			if seen[p.ip] {
				t.Fatalf("address %s handed out twice", p.ip)
			}
			seen[p.ip] = true
		}
		// The VPC route is absent when the subnet is the whole VPC.
		if len(pods[0].res.Routes) != 0 {
			t.Fatalf("unexpected routes %+v", pods[0].res.Routes)
		}
		listen(t, pods[n-1], 7000)
		gc, err := dial(pods[0], pods[n-1].ip, 7000)
		if err != nil {
			t.Fatalf("TCP between green pods: %v", err)
		}
		if err := echo(gc, "green"); err != nil {
			t.Fatal(err)
		}
		gc.Close()
		for i := range n {
			go func() {
				errs <- e.client.Detach(ctx, &agentapi.DetachRequest{ContainerID: pods[i].id, IfName: "eth1"})
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatalf("parallel detach: %v", err)
			}
		}
		if m := e.metrics(t); m["genie_vpc_watches"] != 1 || m[`genie_endpoints{scope="local"}`] != 2 {
			t.Fatalf("after detaching green: watches %v local %v", m["genie_vpc_watches"], m[`genie_endpoints{scope="local"}`])
		}
		if eps, _, err := c.st.ListEndpoints(ctx, "green"); err != nil || len(eps) != 0 {
			t.Fatalf("green endpoints left: %+v %v", eps, err)
		}
	})

	t.Run("restart keeps established TCP", func(t *testing.T) {
		e.stopAgent()
		if err := echo(conn, "while-down"); err != nil {
			t.Fatalf("TCP echo with the agent stopped: %v", err)
		}
		// An attach the previous agent crashed in the middle of: its
		// record is incomplete and its veth exists. Start-up undoes it.
		const crashed = "gvdeadbeef01"
		rec := `{"containerID":"crashed","ifName":"eth1","vpc":"blue","subnet":"web","vni":1,"hostIf":"` + crashed + `","complete":false}`
		if err := os.WriteFile(filepath.Join(e.dir, "state", "attachments", crashed+".json"), []byte(rec), 0o600); err != nil {
			t.Fatal(err)
		}
		err := e.ns.Do(func(ns.NetNS) error {
			la := netlink.NewLinkAttrs()
			la.Name = crashed
			return netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: crashed + "p"})
		})
		if err != nil {
			t.Fatal(err)
		}
		e.startAgent(t)
		if linkExists(e.ns, crashed) {
			t.Fatal("veth of the crashed attach survived the restart")
		}
		if _, err := os.Stat(filepath.Join(e.dir, "state", "attachments", crashed+".json")); !os.IsNotExist(err) {
			t.Fatalf("record of the crashed attach survived the restart: %v", err)
		}
		if err := echo(conn, "after-restart"); err != nil {
			t.Fatalf("TCP echo after restart: %v\n%s", err, e.logs())
		}
		if err := e.client.Check(ctx, &agentapi.CheckRequest{ContainerID: b.id, IfName: "eth1", Netns: b.ns.Path()}); err != nil {
			t.Fatalf("check after restart: %v", err)
		}
		// The restored agent keeps allocating distinct addresses.
		pc := e.mustAttach(t, "c", "blue", "web")
		if pc.ip == a.ip || pc.ip == b.ip {
			t.Fatalf("pod c got %s, already used", pc.ip)
		}
		listen(t, pc, 5002)
		cc, err := dial(a, pc.ip, 5002)
		if err != nil {
			t.Fatalf("TCP a->c after restart: %v", err)
		}
		defer cc.Close()
		if err := echo(cc, "to-c"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("detach frees the address and removes the link", func(t *testing.T) {
		hostIf := hostIfOf(t, b)
		if n := sourceRules(t, b.ns, b.ip); n != 1 {
			t.Fatalf("pod has %d rules from %s before detach, want 1 (per-source routing)", n, b.ip)
		}
		if err := e.client.Detach(ctx, &agentapi.DetachRequest{ContainerID: b.id, IfName: "eth1", Netns: b.ns.Path()}); err != nil {
			t.Fatalf("detach: %v", err)
		}
		if n := sourceRules(t, b.ns, b.ip); n != 0 {
			t.Fatalf("pod has %d rules from %s after detach", n, b.ip)
		}
		if linkExists(b.ns, "eth1") || linkExists(e.ns, hostIf) {
			t.Fatal("veth still exists after detach")
		}
		if _, err := c.st.GetEndpoint(ctx, "blue", vpc.EndpointID(b.id, "eth1")); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("endpoint still in store: %v", err)
		}
		// Idempotent, also with the netns gone.
		if err := e.client.Detach(ctx, &agentapi.DetachRequest{ContainerID: b.id, IfName: "eth1"}); err != nil {
			t.Fatalf("second detach: %v", err)
		}
		// The address is free again: a static request for it succeeds.
		d := e.mustAttach(t, "d", "blue", "web", b.ip.String()+"/24")
		if d.ip != b.ip {
			t.Fatalf("static request got %s, want %s", d.ip, b.ip)
		}
		if _, err := e.attach("e", "blue", "web", d.ip.String()); err == nil {
			t.Fatal("a static address in use was handed out twice")
		}
	})

	t.Run("status follows the store", func(t *testing.T) {
		c.emb.Close()
		waitStatus(t, e, false, "store unreachable")
		c.startStore()
		waitStatus(t, e, true, "")
	})

	m := e.metrics(t)
	t.Logf("attach latency: %v attaches, mean %.1f ms; detach: %v, mean %.1f ms",
		m["genie_attach_duration_seconds_count"], 1000*m["genie_attach_duration_seconds_sum"]/m["genie_attach_duration_seconds_count"],
		m["genie_detach_duration_seconds_count"], 1000*m["genie_detach_duration_seconds_sum"]/m["genie_detach_duration_seconds_count"])

	t.Run("gc frees attachments the runtime forgot", func(t *testing.T) {
		resp, err := e.client.GC(ctx, &agentapi.GCRequest{Valid: []agentapi.Attachment{{ContainerID: a.id, IfName: "eth1"}}})
		if err != nil {
			t.Fatalf("gc: %v", err)
		}
		if len(resp.Freed) != 2 {
			t.Fatalf("gc freed %+v, want pods c and d", resp.Freed)
		}
		if links := hostLinks(e.ns); len(links) != 1 {
			t.Fatalf("host veths after gc: %v", links)
		}
		eps, _, err := c.st.ListEndpoints(ctx, "blue")
		if err != nil || len(eps) != 1 || eps[0].IP != a.ip {
			t.Fatalf("endpoints after gc: %+v %v", eps, err)
		}
	})
}

// sourceRules counts the pod's policy rules "from ip".
func sourceRules(t *testing.T, pns ns.NetNS, ip netip.Addr) int {
	t.Helper()
	n := 0
	err := pns.Do(func(ns.NetNS) error {
		rules, err := netlink.RuleList(netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rules {
			if r.Src != nil && r.Src.IP.Equal(ip.AsSlice()) {
				n++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func hostIfOf(t *testing.T, p *pod) string {
	for _, i := range p.res.Interfaces {
		if i.Sandbox == "" {
			return i.Name
		}
	}
	t.Fatalf("no host interface in %+v", p.res)
	return ""
}

// waitMetric polls a node's metric until it has the wanted value: remote
// endpoints arrive through the store asynchronously.
func waitMetric(t *testing.T, n *node, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := n.metrics(t)[name]
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s on %s is %v, want %v\n%s", name, n.name, got, want, n.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPrivilegedTwoNodes(t *testing.T) {
	c := newCluster(t, 2)
	na, nb := c.nodes[0], c.nodes[1]
	ctx := context.Background()
	// Two VPCs with the same CIDR.
	for _, name := range []string{"blue", "red"} {
		if _, err := c.st.CreateVPC(ctx, vpc.VPC{Name: name, CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.st.CreateSubnet(ctx, vpc.Subnet{VPC: name, Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24")}); err != nil {
			t.Fatal(err)
		}
	}
	a1 := na.mustAttach(t, "a1", "blue", "web")
	b1 := nb.mustAttach(t, "b1", "blue", "web")
	r1 := nb.mustAttach(t, "r1", "red", "web")
	r2 := nb.mustAttach(t, "r2", "red", "web")
	t.Logf("blue: a1 %s (node-a), b1 %s (node-b); red: r1 %s, r2 %s (node-b)", a1.ip, b1.ip, r1.ip, r2.ip)

	listen(t, b1, 6001)
	listen(t, r2, 6001)
	// b1 was attached after a1: node-a learns it through its watch.
	waitMetric(t, na, `genie_endpoints{scope="remote"}`, 1)
	conn, err := dial(a1, b1.ip, 6001)
	if err != nil {
		t.Fatalf("TCP a1 (node-a) -> b1 (node-b): %v\n%s\n%s", err, na.logs(), nb.logs())
	}
	defer conn.Close()
	if err := echo(conn, "cross-node"); err != nil {
		t.Fatal(err)
	}

	t.Run("a node learns only the VPCs it hosts", func(t *testing.T) {
		ma, mb := na.metrics(t), nb.metrics(t)
		if ma["genie_vpc_watches"] != 1 || ma[`genie_endpoints{scope="remote"}`] != 1 {
			t.Fatalf("node-a watches %v VPCs and has %v remote endpoints, want 1 and 1 (blue only)",
				ma["genie_vpc_watches"], ma[`genie_endpoints{scope="remote"}`])
		}
		if mb["genie_vpc_watches"] != 2 || mb[`genie_endpoints{scope="remote"}`] != 1 {
			t.Fatalf("node-b watches %v VPCs and has %v remote endpoints, want 2 and 1",
				mb["genie_vpc_watches"], mb[`genie_endpoints{scope="remote"}`])
		}
		// node-a learned b1 through its watch (node-b listed a1 when it
		// joined blue, which is not a propagation): exactly one sample.
		if n, sum := ma["genie_endpoint_propagation_seconds_count"], ma["genie_endpoint_propagation_seconds_sum"]; n != 1 || sum <= 0 || sum > 10 {
			t.Fatalf("node-a propagation histogram: count %v sum %vs, want 1 sample in (0, 10s]", n, sum)
		}
	})

	t.Run("vpcs with the same cidr stay isolated", func(t *testing.T) {
		if r2.ip == b1.ip || a1.ip == r2.ip {
			t.Skipf("address layout %s %s %s does not allow the check", a1.ip, b1.ip, r2.ip)
		}
		// r2's address exists only in red: blue's a1 must not reach it.
		if c, err := dialTimeout(a1, r2.ip, 6001, time.Second); err == nil {
			c.Close()
			t.Fatalf("blue pod a1 reached red pod r2 at %s", r2.ip)
		}
	})

	t.Run("new remote endpoints propagate", func(t *testing.T) {
		b2 := nb.mustAttach(t, "b2", "blue", "web")
		listen(t, b2, 6002)
		waitMetric(t, na, `genie_endpoints{scope="remote"}`, 2)
		cc, err := dial(a1, b2.ip, 6002)
		if err != nil {
			t.Fatalf("TCP a1 -> b2: %v", err)
		}
		defer cc.Close()
		if err := echo(cc, "b2"); err != nil {
			t.Fatal(err)
		}
		nb.detach(t, b2)
		waitMetric(t, na, `genie_endpoints{scope="remote"}`, 1)
	})

	t.Run("agent restart keeps the cross-node stream", func(t *testing.T) {
		na.stopAgent()
		nb.killAgent() // a crash: no shutdown path runs
		if err := echo(conn, "both-down"); err != nil {
			t.Fatalf("echo with both agents stopped: %v", err)
		}
		na.startAgent(t)
		nb.startAgent(t)
		if err := echo(conn, "both-restarted"); err != nil {
			t.Fatalf("echo after restart: %v", err)
		}
		waitMetric(t, na, `genie_endpoints{scope="remote"}`, 1)
	})

	t.Run("last local endpoint stops the vpc watch", func(t *testing.T) {
		na.detach(t, a1)
		m := na.metrics(t)
		if m["genie_vpc_watches"] != 0 || m[`genie_endpoints{scope="remote"}`] != 0 || m[`genie_endpoints{scope="local"}`] != 0 {
			t.Fatalf("node-a after its last detach: watches %v remote %v local %v", m["genie_vpc_watches"],
				m[`genie_endpoints{scope="remote"}`], m[`genie_endpoints{scope="local"}`])
		}
		waitMetric(t, nb, `genie_endpoints{scope="remote"}`, 0)
	})
}

func dialTimeout(src *pod, dst netip.Addr, port int, d time.Duration) (net.Conn, error) {
	var c net.Conn
	err := src.ns.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp4", net.JoinHostPort(dst.String(), fmt.Sprint(port)), d)
		return err
	})
	return c, err
}

// waitStatus polls the agent's STATUS until Ready is want (and, when not
// ready, the message contains msg).
func waitStatus(t *testing.T, n *node, want bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := n.client.Status(context.Background())
		if err == nil && st.Ready == want && (want || strings.Contains(st.Message, msg)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of %s: %+v %v, want ready=%v %q", n.name, st, err, want, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
