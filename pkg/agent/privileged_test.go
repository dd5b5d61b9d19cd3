package agent_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
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

// env is one node: an embedded etcd, a node netns with an uplink veth into
// an underlay netns, and genied running inside the node netns.
type env struct {
	t        *testing.T
	bin      string
	dir      string
	pinDir   string
	socket   string
	st       *etcdstore.Store
	storeURL []string
	nodeNS   ns.NetNS
	underNS  ns.NetNS
	agent    *exec.Cmd
	agentErr chan error
	logPath  string
	client   *agentapi.Client
}

func skipUnlessPrivileged(t *testing.T) {
	t.Helper()
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

// buildGenied builds the agent binary once per test binary run.
func buildGenied(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "genied")
	cmd := exec.Command("go", "build", "-o", out, "github.com/cni-genie/cni-genie/cmd/genied")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building genied: %v\n%s", err, b)
	}
	return out
}

func newEnv(t *testing.T) *env {
	skipUnlessPrivileged(t)
	ctx := context.Background()
	e := &env{t: t, dir: t.TempDir()}
	e.bin = buildGenied(t)
	e.pinDir = "/sys/fs/bpf/genie-agent-test-" + randSuffix()
	e.socket = filepath.Join(e.dir, "agent.sock")

	emb, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{DataDir: filepath.Join(e.dir, "etcd")})
	if err != nil {
		t.Fatalf("starting embedded etcd: %v", err)
	}
	t.Cleanup(func() { emb.Close() })
	e.storeURL = emb.Endpoints()
	if e.st, err = etcdstore.New(ctx, e.storeURL, etcdstore.Options{}); err != nil {
		t.Fatalf("connecting to etcd: %v", err)
	}
	t.Cleanup(func() { e.st.Close() })

	if e.nodeNS, err = testutils.NewNS(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.nodeNS.Close(); testutils.UnmountNS(e.nodeNS) })
	if e.underNS, err = testutils.NewNS(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.underNS.Close(); testutils.UnmountNS(e.underNS) })
	// Pins are removed before the namespaces go (cleanups run LIFO).
	t.Cleanup(func() {
		if err := datapath.Remove(e.pinDir); err != nil {
			t.Errorf("removing pins: %v", err)
		}
		os.Remove(e.pinDir)
	})

	// Uplink: eth0 in the node netns, its peer "under0" in the underlay.
	err = e.nodeNS.Do(func(ns.NetNS) error {
		la := netlink.NewLinkAttrs()
		la.Name = "eth0"
		la.MTU = 1500
		veth := &netlink.Veth{LinkAttrs: la, PeerName: "under0", PeerNamespace: netlink.NsFd(int(e.underNS.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: mustCIDR("192.168.77.2/24")}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		lo, _ := netlink.LinkByName("lo")
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatalf("creating uplink: %v", err)
	}
	err = e.underNS.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("under0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: mustCIDR("192.168.77.1/24")}); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatalf("configuring underlay: %v", err)
	}
	e.client = agentapi.NewClient(e.socket, 30*time.Second)
	e.startAgent()
	t.Cleanup(e.stopAgent)
	return e
}

func mustCIDR(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

func (e *env) startAgent() {
	t := e.t
	e.logPath = filepath.Join(e.dir, fmt.Sprintf("genied-%d.log", time.Now().UnixNano()))
	logf, err := os.Create(e.logPath)
	if err != nil {
		t.Fatal(err)
	}
	e.agent = exec.Command("nsenter", "--net="+e.nodeNS.Path(), "--",
		e.bin, "--node-name", "node-a", "--uplink", "eth0", "--pin-dir", e.pinDir,
		"--socket", e.socket, "--state-dir", filepath.Join(e.dir, "state"),
		"--store-endpoints", strings.Join(e.storeURL, ","), "--metrics-addr", "127.0.0.1:0")
	e.agent.Stdout, e.agent.Stderr = logf, logf
	if err := e.agent.Start(); err != nil {
		t.Fatalf("starting genied: %v", err)
	}
	e.agentErr = make(chan error, 1)
	go func() { e.agentErr <- e.agent.Wait(); logf.Close() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := e.client.Status(context.Background())
		if err == nil && st.Ready {
			return
		}
		select {
		case err := <-e.agentErr:
			e.agent = nil
			t.Fatalf("genied exited during start-up: %v\n%s", err, e.logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("genied not ready after 30s (status %+v, %v)\n%s", st, err, e.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) stopAgent() {
	if e.agent == nil {
		return
	}
	_ = e.agent.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-e.agentErr:
		if err != nil {
			e.t.Errorf("genied exited with %v\n%s", err, e.logs())
		}
	case <-time.After(20 * time.Second):
		_ = e.agent.Process.Kill()
		<-e.agentErr
		e.t.Errorf("genied did not stop on SIGTERM\n%s", e.logs())
	}
	e.agent = nil
}

func (e *env) logs() string {
	b, _ := os.ReadFile(e.logPath)
	return string(b)
}

// pod is a pod netns attached through the agent.
type pod struct {
	ns     ns.NetNS
	id     string
	ifName string
	ip     netip.Addr
	res    *current.Result
}

func (e *env) newPodNS() ns.NetNS {
	p, err := testutils.NewNS()
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { p.Close(); testutils.UnmountNS(p) })
	return p
}

func (e *env) attach(name, vpcName, subnet string, ips ...string) (*pod, error) {
	p := &pod{ns: e.newPodNS(), id: "ctr-" + name + "-" + randSuffix(), ifName: "eth1"}
	res, err := e.client.Attach(context.Background(), &agentapi.AttachRequest{
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

func (e *env) mustAttach(name, vpcName, subnet string, ips ...string) *pod {
	e.t.Helper()
	p, err := e.attach(name, vpcName, subnet, ips...)
	if err != nil {
		e.t.Fatalf("attach %s: %v\n%s", name, err, e.logs())
	}
	return p
}

// listen opens a TCP echo server on p's address; it lives until the test
// ends.
func (e *env) listen(p *pod, port int) {
	var l net.Listener
	err := p.ns.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", net.JoinHostPort(p.ip.String(), fmt.Sprint(port)))
		return err
	})
	if err != nil {
		e.t.Fatalf("listening in pod: %v", err)
	}
	e.t.Cleanup(func() { l.Close() })
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
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.st.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	sub, err := e.st.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}

	a := e.mustAttach("a", "blue", "web")
	b := e.mustAttach("b", "blue", "web")
	t.Logf("pod a %s, pod b %s", a.ip, b.ip)

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
		if err := e.client.Check(ctx, &agentapi.CheckRequest{ContainerID: a.id, IfName: "eth1", Netns: a.ns.Path()}); err != nil {
			t.Fatalf("check: %v", err)
		}
		ep, err := e.st.GetEndpoint(ctx, "blue", vpc.EndpointID(a.id, "eth1"))
		if err != nil || ep.IP != a.ip || ep.Node != "node-a" || ep.MAC.String() != pi.Mac {
			t.Fatalf("store endpoint %+v, %v", ep, err)
		}
	})

	e.listen(b, 5001)
	conn, err := dial(a, b.ip, 5001)
	if err != nil {
		t.Fatalf("TCP from a to b: %v\n%s", err, e.logs())
	}
	defer conn.Close()
	if err := echo(conn, "hello"); err != nil {
		t.Fatalf("TCP echo a->b: %v", err)
	}

	t.Run("unknown vpc leaves nothing behind", func(t *testing.T) {
		before := hostLinks(e.nodeNS)
		p, err := e.attach("x", "nope", "web")
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig ||
			!strings.Contains(te.Msg, `attach vpc "nope" subnet "web" to pod default/x`) || !strings.Contains(te.Msg, "not found") {
			t.Fatalf("want a clear invalid-config error, got %v", err)
		}
		if linkExists(p.ns, "eth1") {
			t.Fatal("pod got an interface")
		}
		if after := hostLinks(e.nodeNS); len(after) != len(before) {
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
		if after := hostLinks(e.nodeNS); len(after) != len(before) {
			t.Fatalf("host veths %v, before %v", after, before)
		}
	})

	t.Run("restart keeps established TCP", func(t *testing.T) {
		e.stopAgent()
		if err := echo(conn, "while-down"); err != nil {
			t.Fatalf("TCP echo with the agent stopped: %v", err)
		}
		e.startAgent()
		if err := echo(conn, "after-restart"); err != nil {
			t.Fatalf("TCP echo after restart: %v\n%s", err, e.logs())
		}
		if err := e.client.Check(ctx, &agentapi.CheckRequest{ContainerID: b.id, IfName: "eth1", Netns: b.ns.Path()}); err != nil {
			t.Fatalf("check after restart: %v", err)
		}
		// The restored agent keeps allocating distinct addresses.
		c := e.mustAttach("c", "blue", "web")
		if c.ip == a.ip || c.ip == b.ip {
			t.Fatalf("pod c got %s, already used", c.ip)
		}
		e.listen(c, 5002)
		cc, err := dial(a, c.ip, 5002)
		if err != nil {
			t.Fatalf("TCP a->c after restart: %v", err)
		}
		defer cc.Close()
		if err := echo(cc, "to-c"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("detach frees the address and removes the link", func(t *testing.T) {
		hostIf := e.hostIfOf(b)
		if err := e.client.Detach(ctx, &agentapi.DetachRequest{ContainerID: b.id, IfName: "eth1", Netns: b.ns.Path()}); err != nil {
			t.Fatalf("detach: %v", err)
		}
		if linkExists(b.ns, "eth1") || linkExists(e.nodeNS, hostIf) {
			t.Fatal("veth still exists after detach")
		}
		if _, err := e.st.GetEndpoint(ctx, "blue", vpc.EndpointID(b.id, "eth1")); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("endpoint still in store: %v", err)
		}
		// Idempotent, also with the netns gone.
		if err := e.client.Detach(ctx, &agentapi.DetachRequest{ContainerID: b.id, IfName: "eth1"}); err != nil {
			t.Fatalf("second detach: %v", err)
		}
		// The address is free again: a static request for it succeeds.
		d := e.mustAttach("d", "blue", "web", b.ip.String()+"/24")
		if d.ip != b.ip {
			t.Fatalf("static request got %s, want %s", d.ip, b.ip)
		}
		if _, err := e.attach("e", "blue", "web", d.ip.String()); err == nil {
			t.Fatal("a static address in use was handed out twice")
		}
	})

	t.Run("gc frees attachments the runtime forgot", func(t *testing.T) {
		resp, err := e.client.GC(ctx, &agentapi.GCRequest{Valid: []agentapi.Attachment{{ContainerID: a.id, IfName: "eth1"}}})
		if err != nil {
			t.Fatalf("gc: %v", err)
		}
		if len(resp.Freed) != 2 {
			t.Fatalf("gc freed %+v, want pods c and d", resp.Freed)
		}
		if links := hostLinks(e.nodeNS); len(links) != 1 {
			t.Fatalf("host veths after gc: %v", links)
		}
		eps, _, err := e.st.ListEndpoints(ctx, "blue")
		if err != nil || len(eps) != 1 || eps[0].IP != a.ip {
			t.Fatalf("endpoints after gc: %+v %v", eps, err)
		}
	})
}

func (e *env) hostIfOf(p *pod) string {
	for _, i := range p.res.Interfaces {
		if i.Sandbox == "" {
			return i.Name
		}
	}
	e.t.Fatalf("no host interface in %+v", p.res)
	return ""
}
