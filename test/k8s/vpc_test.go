package k8s

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/kube"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/kubestore"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

var vpcEndpointGVR = schema.GroupVersionResource{Group: kubestore.Group, Version: kubestore.Version, Resource: "vpcendpoints"}

// buildBinary builds ./cmd/<name> of the module into dir.
func buildBinary(t *testing.T, dir, name string) string {
	t.Helper()
	root, err := kubeapi.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, b)
	}
	return out
}

// storeAccount is a service account bound (cluster-wide: the store's
// objects are cluster-scoped) to exactly kubestore.PolicyRules(), the role
// genied and geniectl run with.
type storeAccount struct {
	token  string
	revoke func(context.Context) error
}

func newStoreAccount(t *testing.T, c *cluster, name string) *storeAccount {
	t.Helper()
	role := kubeapi.UniqueName(name)
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: kubestore.PolicyRules()}
	if _, err := c.admin.RbacV1().ClusterRoles().Create(t.Context(), cr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.admin.RbacV1().ClusterRoles().Delete(context.Background(), role, metav1.DeleteOptions{}) })
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: c.infra}},
	}
	if _, err := c.admin.RbacV1().ClusterRoleBindings().Create(t.Context(), crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), role, metav1.DeleteOptions{})
	})
	tok, revoke, err := c.srv.ServiceAccountToken(t.Context(), c.infra, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { revoke(context.Background()) })
	return &storeAccount{token: tok, revoke: revoke}
}

// kubeconfig writes a kubeconfig of the account for the API server at
// server (https URL).
func (a *storeAccount) kubeconfig(t *testing.T, c *cluster, server string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.kubeconfig")
	if err := kubeapi.WriteKubeconfig(path, server, c.srv.CAData, a.token); err != nil {
		t.Fatal(err)
	}
	return path
}

// agentNode is genied running in a node netns on the kubernetes datastore.
type agentNode struct {
	name     string
	socket   string
	stateDir string
	pinDir   string
	logFile  string
	uplink   string
	cmd      *exec.Cmd
	exited   chan struct{}
	// proxy is the agent's way to the API server; it records what the
	// agent asked the API server to watch.
	proxy *watchProxy
}

// underlay connects two nodes with a veth pair (named "gku"+suffix of
// each node) and gives the ends 192.168.253.<i+1>/24; it returns the
// names of the uplinks.
func underlay(t *testing.T, nodes ...*node) []string {
	t.Helper()
	if len(nodes) != 2 {
		t.Fatal("underlay connects two nodes")
	}
	names := []string{"gku" + nodes[0].sfx, "gku" + nodes[1].sfx}
	err := nodes[0].netns.Do(func(ns.NetNS) error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: names[0], MTU: 1500}, PeerName: names[1],
			PeerNamespace: netlink.NsFd(int(nodes[1].netns.Fd()))}
		return netlink.LinkAdd(v)
	})
	if err != nil {
		t.Fatalf("underlay veth: %v", err)
	}
	for i, n := range nodes {
		err := n.netns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(names[i])
			if err != nil {
				return err
			}
			addr, _ := netlink.ParseAddr(fmt.Sprintf("192.168.253.%d/24", i+1))
			if err := netlink.AddrAdd(l, addr); err != nil {
				return err
			}
			return netlink.LinkSetUp(l)
		})
		if err != nil {
			t.Fatalf("underlay of node %d: %v", i+1, err)
		}
	}
	return names
}

// startAgent starts genied in the node netns with --datastore kubernetes,
// reaching the API server through the node's relay, the tunnel on uplink
// (which has an IPv4 address), and waits until it reports ready.
func startAgent(t *testing.T, c *cluster, n *node, genied string, acct *storeAccount, uplink string) *agentNode {
	t.Helper()
	dir := t.TempDir()
	a := &agentNode{
		name:     "node-" + n.sfx,
		socket:   filepath.Join(dir, "genied.sock"),
		stateDir: filepath.Join(dir, "state"),
		pinDir:   "/sys/fs/bpf/genie-k8s-vpc-" + n.sfx,
		logFile:  filepath.Join(dir, "genied.log"),
		uplink:   uplink,
		exited:   make(chan struct{}),
	}
	// Cleanups run LIFO: the pins go after the agent stopped and before
	// the node netns.
	t.Cleanup(func() {
		err := n.netns.Do(func(ns.NetNS) error { return datapath.Remove(a.pinDir) })
		if err != nil {
			t.Errorf("remove pins %s: %v", a.pinDir, err)
		}
		os.Remove(a.pinDir)
	})
	// Through a recording proxy in the node netns (the relay carries
	// TLS end to end and sees no request).
	a.proxy = startWatchProxy(t, n.netns, c.srv.URL, c.srv.CAData)
	kubecfg := filepath.Join(dir, "store.kubeconfig")
	if err := kubeapi.WriteKubeconfig(kubecfg, a.proxy.url(), a.proxy.caPEM, acct.token); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(a.logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	a.cmd = exec.Command(genied,
		"--datastore", "kubernetes", "--kubeconfig", kubecfg,
		"--node-name", a.name, "--uplink", a.uplink, "--pin-dir", a.pinDir,
		"--socket", a.socket, "--state-dir", a.stateDir, "--metrics-addr", "")
	a.cmd.Stdout, a.cmd.Stderr = log, log
	// Started from a thread inside the node netns, genied runs there.
	if err := n.netns.Do(func(ns.NetNS) error { return a.cmd.Start() }); err != nil {
		t.Fatalf("start genied: %v", err)
	}
	go func() { a.cmd.Wait(); close(a.exited) }()
	t.Cleanup(func() { a.stop(t) })

	deadline := time.Now().Add(60 * time.Second)
	var last string
	for {
		select {
		case <-a.exited:
			t.Fatalf("genied exited: %v\n%s", a.cmd.ProcessState, a.log())
		default:
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		st, err := agentapi.NewClient(a.socket, 2*time.Second).Status(ctx)
		cancel()
		if err == nil && st.Ready {
			return a
		}
		if err != nil {
			last = err.Error()
		} else {
			last = st.Message
		}
		if time.Now().After(deadline) {
			t.Fatalf("genied not ready after 60s (%s):\n%s", last, a.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (a *agentNode) log() string {
	b, _ := os.ReadFile(a.logFile)
	return string(b)
}

// stop ends genied: SIGTERM, SIGKILL after 15 s.
func (a *agentNode) stop(t *testing.T) {
	select {
	case <-a.exited:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(15 * time.Second):
		t.Errorf("genied ignored SIGTERM for 15s; killing it")
		a.cmd.Process.Kill()
		<-a.exited
	}
}

// allocations returns the addresses genied's IPAM holds, by owner.
func (a *agentNode) allocations(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(a.stateDir, "ipam", "ipam.json"))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}
	}
	if err != nil {
		t.Fatal(err)
	}
	var fs struct {
		Allocations []struct {
			Owner string `json:"owner"`
			IP    string `json:"ip"`
		} `json:"allocations"`
	}
	if err := json.Unmarshal(data, &fs); err != nil {
		t.Fatalf("ipam state %s: %v", data, err)
	}
	out := map[string]string{}
	for _, al := range fs.Allocations {
		out[al.Owner] = al.IP
	}
	return out
}

// vpcPod is a pod attached through genie on an agent's node.
type vpcPod struct {
	name, containerID string
	node              *node
	agent             *agentNode
	obj               *corev1.Pod
	netns             ns.NetNS
	vpc               string
	ip                netip.Addr // its VPC address
}

// TestPrivilegedVPCKubernetes runs the VPC overlay on the Kubernetes
// datastore end to end on a real API server: genied on two nodes (network
// namespaces joined by an underlay veth) with --datastore kubernetes, as a
// service account with exactly kubestore.PolicyRules(); a VPC and a subnet
// made with geniectl --datastore kubernetes; a NetworkAttachmentDefinition
// of type genie-vpc selected by a Pod's NPWG networks annotation; the real
// genie binary run as kubelet would. Pods of the VPC reach each other over
// TCP on one node and across nodes (Geneve); a Pod object deleted before
// its DEL still gets its address freed (no VPCEndpoint, no IPAM
// allocation), a new pod takes that address by a static request, and the
// other node learns the change through its watch (same IP, new MAC).
func TestPrivilegedVPCKubernetes(t *testing.T) {
	requireRoot(t)
	plugins := cniBinDir(t)
	c := newCluster(t)
	if err := c.srv.InstallProjectCRDs(t.Context()); err != nil {
		t.Fatal(err)
	}
	binDir := buildGenie(t, plugins)
	tools := t.TempDir()
	genied := buildBinary(t, tools, "genied")
	geniectl := buildBinary(t, tools, "geniectl")
	acct := newStoreAccount(t, c, "genied")

	// The test's own view of the store, as the admin.
	st, err := kubestore.NewForConfig(t.Context(), c.srv.RESTConfig(), kubestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	n1, n2 := newNode(t, c, binDir, "1.0.0"), newNode(t, c, binDir, "1.0.0")
	uplinks := underlay(t, n1, n2)
	var agents []*agentNode
	for i, n := range []*node{n1, n2} {
		a := startAgent(t, c, n, genied, acct, uplinks[i])
		n.agentSocket = a.socket
		agents = append(agents, a)
		t.Cleanup(func() { st.DeleteNode(context.Background(), a.name) })
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("genied log of %s:\n%s", a.name, a.log())
				n.dumpLog()
			}
		})
	}
	a1, a2 := agents[0], agents[1]

	// geniectl on the host, as the same service account.
	ctlKubecfg := acct.kubeconfig(t, c, c.srv.URL)
	ctl := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(geniectl, append([]string{"--datastore", "kubernetes", "--kubeconfig", ctlKubecfg}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("geniectl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	vpcName := kubeapi.UniqueName("blue")
	subnetCIDR := netip.MustParsePrefix("10.61.1.0/24")
	ctl("vpc", "create", vpcName, "--cidr", "10.61.0.0/16")
	ctl("subnet", "create", vpcName+"/web", "--cidr", subnetCIDR.String())
	cleaned := false
	t.Cleanup(func() {
		if !cleaned { // best effort after a failure
			st.DeleteSubnet(context.Background(), vpcName, "web")
			st.DeleteVPC(context.Background(), vpcName)
		}
	})
	c.createNAD(t, c.ns, "vpc-web", map[string]any{
		"cniVersion": "1.0.0", "name": "vpc-web", "type": "genie-vpc", "vpc": vpcName, "subnet": "web",
	})

	// add attaches a new pod on node n to the networks of the NPWG
	// annotation value, whose VPC network is nad of vpcName.
	add := func(n *node, a *agentNode, name, vpcName, nad, networks string) *vpcPod {
		t.Helper()
		p := &vpcPod{name: name + "-" + n.sfx, containerID: "ctr-" + name + "-" + randSuffix(),
			node: n, agent: a, netns: newNS(t), vpc: vpcName}
		p.obj = c.createPod(t, p.name, networks)
		start := time.Now()
		res, err := n.add(p.containerID, p.netns, p.obj)
		if err != nil {
			t.Fatalf("ADD %s: %v", p.name, err)
		}
		t.Logf("ADD %s on %s (default network + VPC, genie process included): %v", p.name, a.name, time.Since(start).Round(time.Millisecond))
		links, defaults := readPod(t, p.netns)
		net1, ok := links["net1"]
		if !ok || len(net1.addrs) != 1 {
			t.Fatalf("pod %s: want the VPC interface net1 with one address, have %+v (result %+v)", p.name, links, res)
		}
		pfx, err := netip.ParsePrefix(net1.addrs[0])
		if err != nil || !subnetCIDR.Contains(pfx.Addr()) || pfx.Bits() != subnetCIDR.Bits() {
			t.Fatalf("pod %s: net1 address %s not in subnet %s", p.name, net1.addrs[0], subnetCIDR)
		}
		p.ip = pfx.Addr()
		if _, ok := links["eth0"]; !ok || len(defaults) != 1 || !strings.HasSuffix(defaults[0], "dev eth0") {
			t.Fatalf("pod %s: want eth0 (default network) holding the one default route, have %+v %v", p.name, links, defaults)
		}
		// network-status: the default network once, marked default, and
		// the VPC attachment with its address.
		var def, vpcs int
		for _, s := range c.networkStatus(t, p.name) {
			if s.Default {
				def++
				if s.Interface != "eth0" {
					t.Errorf("pod %s: default network-status entry %+v is not eth0", p.name, s)
				}
			}
			if s.Name == c.ns+"/"+nad {
				vpcs++
				if s.Interface != "net1" || !slices.Equal(s.IPs, []string{p.ip.String()}) || s.Mac != net1.mac || s.Default {
					t.Errorf("pod %s: network-status of %s %+v, want net1 %s %s", p.name, nad, s, p.ip, net1.mac)
				}
			}
		}
		if def != 1 || vpcs != 1 {
			t.Fatalf("pod %s: network-status has %d default and %d %s entries, want 1 and 1: %+v",
				p.name, def, vpcs, nad, c.networkStatus(t, p.name))
		}
		// The endpoint is a VPCEndpoint object of this node.
		e, err := st.GetEndpoint(t.Context(), vpcName, vpc.EndpointID(p.containerID, "net1"))
		if err != nil {
			t.Fatalf("pod %s: endpoint: %v", p.name, err)
		}
		if e.IP != p.ip || e.Node != a.name || e.Subnet != "web" {
			t.Fatalf("pod %s: endpoint %+v, want %s on %s", p.name, e, p.ip, a.name)
		}
		obj, err := c.dyn.Resource(vpcEndpointGVR).Get(t.Context(), endpointObjectName(vpcName, p.ip), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("pod %s: VPCEndpoint object: %v", p.name, err)
		}
		if obj.GetLabels()[kubestore.LabelVPC] != vpcName {
			t.Fatalf("pod %s: VPCEndpoint labels %v", p.name, obj.GetLabels())
		}
		if got := a.allocations(t)[vpc.EndpointID(p.containerID, "net1")]; got != netip.PrefixFrom(p.ip, subnetCIDR.Bits()).String() {
			t.Fatalf("pod %s: IPAM allocation %q, want %s/%d", p.name, got, p.ip, subnetCIDR.Bits())
		}
		return p
	}
	del := func(p *vpcPod) {
		t.Helper()
		if _, err := p.node.genie("DEL", p.containerID, p.netns, p.obj); err != nil {
			t.Fatalf("DEL %s: %v", p.name, err)
		}
		assertFreed(t, c, st, p.agent, p.vpc, p)
	}

	pa := add(n1, a1, "a", vpcName, "vpc-web", "vpc-web")
	pb := add(n1, a1, "b", vpcName, "vpc-web", "vpc-web")
	if pa.ip == pb.ip {
		t.Fatalf("pods a and b share %s", pa.ip)
	}
	tcpExchange(t, pb, pa)
	tcpExchange(t, pa, pb)
	// Node 2 joins the VPC after a and b exist: it lists them.
	pd := add(n2, a2, "d", vpcName, "vpc-web", "vpc-web")
	tcpExchange(t, pd, pa)
	tcpExchange(t, pb, pd)
	// A second VPC with the same CIDR, hosted on node 1 only.
	redName := kubeapi.UniqueName("red")
	ctl("vpc", "create", redName, "--cidr", "10.61.0.0/16")
	ctl("subnet", "create", redName+"/web", "--cidr", subnetCIDR.String())
	t.Cleanup(func() {
		if !cleaned {
			st.DeleteSubnet(context.Background(), redName, "web")
			st.DeleteVPC(context.Background(), redName)
		}
	})
	c.createNAD(t, c.ns, "red-web", map[string]any{
		"cniVersion": "1.0.0", "name": "red-web", "type": "genie-vpc", "vpc": redName, "subnet": "web",
	})
	pr := add(n1, a1, "r", redName, "red-web", "red-web")
	if pr.ip != pa.ip {
		t.Fatalf("pod r got %s in %s, want %s (the lowest free address, as a's in %s)", pr.ip, redName, pa.ip, vpcName)
	}

	// The kubelet order: the Pod object is gone before DEL.
	c.deletePod(t, pa.name)
	del(pa)
	// The address is free again: a new pod asking for it gets it, with a
	// new MAC; node 2 learns both changes through its watch. Pod r holds
	// the same address in red on the same node: d reaches c, never r
	// (r would answer with a reset).
	pc := add(n1, a1, "c", vpcName, "vpc-web", fmt.Sprintf(`[{"name":"vpc-web","ips":["%s"]}]`, pa.ip))
	if pc.ip != pa.ip {
		t.Fatalf("pod c asked for the freed %s and got %s", pa.ip, pc.ip)
	}
	tcpExchange(t, pd, pc)
	tcpExchange(t, pc, pb)

	c.deletePod(t, pb.name)
	for _, p := range []*vpcPod{pb, pc, pd, pr} {
		del(p)
	}
	for _, v := range []string{vpcName, redName} {
		if eps, _, err := st.ListEndpoints(t.Context(), v); err != nil || len(eps) != 0 {
			t.Fatalf("endpoints left in %s: %+v, %v", v, eps, err)
		}
	}
	for _, a := range agents {
		if al := a.allocations(t); len(al) != 0 {
			t.Fatalf("IPAM allocations left on %s: %v", a.name, al)
		}
	}
	// The subnet has no endpoint left, so it can go (its blocks with it).
	// Each node asked the API server to watch the endpoints of the VPCs it
	// hosts only (one label-selected stream, restarted as VPCs join): node
	// 1 both, node 2 blue only, as recorded by the proxy each agent
	// reaches the API server through.
	for _, tc := range []struct {
		a    *agentNode
		want []string
	}{{a1, []string{vpcName, redName}}, {a2, []string{vpcName}}} {
		most, all := tc.a.proxy.watched()
		if most != len(tc.want) || len(all) != len(tc.want) {
			t.Errorf("%s asked the API server to watch at most %d VPCs, %v in all; want %v", tc.a.name, most, all, tc.want)
		}
		for _, v := range tc.want {
			if !all[v] {
				t.Errorf("%s never watched vpc %s (watched %v)", tc.a.name, v, all)
			}
		}
	}
	for _, v := range []string{vpcName, redName} {
		ctl("subnet", "delete", v+"/web")
		ctl("vpc", "delete", v)
	}
	cleaned = true
}

// endpointObjectName is the VPCEndpoint's name: <vpc>.<a-b-c-d>.
func endpointObjectName(vpcName string, ip netip.Addr) string {
	return vpcName + "." + strings.ReplaceAll(ip.String(), ".", "-")
}

// assertFreed checks that p's address is no longer held anywhere: no
// endpoint (by ID or as a VPCEndpoint object), no IPAM allocation, no
// interface left in the pod.
func assertFreed(t *testing.T, c *cluster, st *kubestore.Store, a *agentNode, vpcName string, p *vpcPod) {
	t.Helper()
	id := vpc.EndpointID(p.containerID, "net1")
	if _, err := st.GetEndpoint(t.Context(), vpcName, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("pod %s: endpoint after DEL: %v", p.name, err)
	}
	_, err := c.dyn.Resource(vpcEndpointGVR).Get(t.Context(), endpointObjectName(vpcName, p.ip), metav1.GetOptions{})
	if !kube.IsNotFound(err) {
		t.Fatalf("pod %s: VPCEndpoint object after DEL: %v", p.name, err)
	}
	if got, ok := a.allocations(t)[id]; ok {
		t.Fatalf("pod %s: IPAM still allocates %s after DEL", p.name, got)
	}
	if links, _ := readPod(t, p.netns); len(links) != 0 {
		t.Fatalf("pod %s: interfaces left after DEL: %+v", p.name, links)
	}
}

// tcpExchange opens a TCP listener in to's netns on its VPC address and
// has from connect to it, send a line and read it back upper-cased.
func tcpExchange(t *testing.T, from, to *vpcPod) {
	t.Helper()
	var l net.Listener
	err := to.netns.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", netip.AddrPortFrom(to.ip, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen in pod %s: %v", to.name, err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err == nil {
			if ra := conn.RemoteAddr().(*net.TCPAddr); ra.IP.String() != from.ip.String() {
				err = fmt.Errorf("connection from %s, want %s", ra.IP, from.ip)
			}
		}
		if err == nil {
			_, err = conn.Write([]byte(strings.ToUpper(line)))
		}
		served <- err
	}()
	msg := fmt.Sprintf("hello from %s\n", from.name)
	var reply string
	err = from.netns.Do(func(ns.NetNS) error {
		conn, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte(msg)); err != nil {
			return err
		}
		reply, err = bufio.NewReader(conn).ReadString('\n')
		return err
	})
	if err != nil {
		t.Fatalf("pod %s -> %s (%s): %v", from.name, to.name, l.Addr(), err)
	}
	if err := <-served; err != nil {
		t.Fatalf("pod %s serving %s: %v", to.name, from.name, err)
	}
	if reply != strings.ToUpper(msg) {
		t.Fatalf("pod %s -> %s: reply %q", from.name, to.name, reply)
	}
}
