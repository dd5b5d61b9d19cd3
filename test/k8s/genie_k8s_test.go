package k8s

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/cni-genie/cni-genie/pkg/kube"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubeapi"
)

func TestMain(m *testing.M) { kubeapi.Main(m) }

var nadGVR = schema.GroupVersionResource{Group: "k8s.cni.cncf.io", Version: "v1", Resource: "network-attachment-definitions"}

func randSuffix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and links")
	}
}

// cniBinDir holds the reference plugins (hack/build-test-bins.sh).
func cniBinDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("GENIE_TEST_CNI_BINDIR")
	if dir == "" {
		root, err := kubeapi.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, "_output", "cni", "bin")
	}
	for _, p := range []string{"bridge", "macvlan", "host-local"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			if os.Getenv(kubeapi.EnvRequire) == "1" {
				t.Fatalf("CNI reference plugins missing in %s (run hack/build-test-bins.sh): %v", dir, err)
			}
			t.Skipf("needs the CNI reference plugins in %s (run hack/build-test-bins.sh): %v", dir, err)
		}
	}
	return dir
}

// buildGenie builds cmd/genie into a bin dir that also links the reference
// plugins, as /opt/cni/bin would hold them.
func buildGenie(t *testing.T, pluginDir string) string {
	t.Helper()
	root, err := kubeapi.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(bin, "genie"), "./cmd/genie")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/genie: %v\n%s", err, out)
	}
	ents, err := os.ReadDir(pluginDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			if err := os.Symlink(filepath.Join(pluginDir, e.Name()), filepath.Join(bin, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	return bin
}

func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		testutils.UnmountNS(n)
	})
	return n
}

// relay forwards TCP connections accepted on 127.0.0.1 inside a node netns
// to an address on the host's loopback.
type relay struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startRelay(t *testing.T, node ns.NetNS, target string) *relay {
	t.Helper()
	r := &relay{}
	err := node.Do(func(ns.NetNS) error {
		var err error
		r.l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatalf("relay listen in node netns: %v", err)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := r.l.Accept()
			if err != nil {
				return
			}
			// This goroutine is not locked to a thread, so it dials from the
			// host netns.
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, c, up)
			r.mu.Unlock()
			r.wg.Add(2)
			go func() { defer r.wg.Done(); io.Copy(up, c); up.Close() }()
			go func() { defer r.wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(r.close)
	return r
}

func (r *relay) addr() string { return r.l.Addr().String() }

// close stops accepting and cuts every relayed connection.
func (r *relay) close() {
	r.l.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
	r.mu.Unlock()
	r.wg.Wait()
}

// cluster is the Kubernetes side: namespaces, RBAC, a genie service account.
type cluster struct {
	srv   *kubeapi.Server
	admin *kubernetes.Clientset
	dyn   *dynamic.DynamicClient
	ns    string // the pods' namespace
	infra string // a second namespace holding shared NADs
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	srv := kubeapi.Shared(t)
	if err := srv.InstallProjectCRDs(t.Context(), kubeapi.NADCRDFile); err != nil {
		t.Fatal(err)
	}
	admin, err := srv.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{srv: srv, admin: admin, dyn: dyn,
		ns: srv.CreateNamespace(t, "genie-pods"), infra: srv.CreateNamespace(t, "genie-infra")}
	role := kubeapi.UniqueName("genie-cni")
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: kube.PolicyRules()}
	if _, err := admin.RbacV1().ClusterRoles().Create(t.Context(), cr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.RbacV1().ClusterRoles().Delete(context.Background(), role, metav1.DeleteOptions{}) })
	for _, n := range []string{c.ns, c.infra} {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "genie", Namespace: n},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "genie", Namespace: c.ns}},
		}
		if _, err := admin.RbacV1().RoleBindings(n).Create(t.Context(), rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *cluster) createNAD(t *testing.T, ns, name string, config any) {
	t.Helper()
	data, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     map[string]any{"config": string(data)},
	}}
	if _, err := c.dyn.Resource(nadGVR).Namespace(ns).Create(t.Context(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create nad %s/%s: %v", ns, name, err)
	}
}

func (c *cluster) createPod(t *testing.T, name, networks string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.ns,
			Annotations: map[string]string{kube.NetworksAnnotation: networks}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/none"}}},
	}
	pod, err := c.admin.CoreV1().Pods(c.ns).Create(t.Context(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	return pod
}

func (c *cluster) deletePod(t *testing.T, name string) {
	t.Helper()
	zero := int64(0)
	if err := c.admin.CoreV1().Pods(c.ns).Delete(t.Context(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatalf("delete pod %s: %v", name, err)
	}
	if _, err := c.admin.CoreV1().Pods(c.ns).Get(t.Context(), name, metav1.GetOptions{}); !kube.IsNotFound(err) {
		t.Fatalf("pod %s still readable after delete: %v", name, err)
	}
}

// node is one simulated node: a netns running genie and its delegates, a
// relay to the API server, and genie's directories and configuration.
type node struct {
	t        *testing.T
	netns    ns.NetNS
	relay    *relay
	binDir   string
	confDir  string
	stateDir string
	ipamDir  string
	logFile  string
	kubecfg  string
	sfx      string
	version  string
	token    string                      // genie's current token
	revoke   func(context.Context) error // revokes token
	// agentSocket is genied's socket, for VPC networks ("" = default).
	agentSocket string

	mu        sync.Mutex
	maxRSSKiB int64 // largest max RSS of a genie process (KiB)
}

func newNode(t *testing.T, c *cluster, binDir, version string) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{t: t, netns: newNS(t), binDir: binDir, version: version, sfx: randSuffix(),
		confDir: filepath.Join(dir, "net.d"), stateDir: filepath.Join(dir, "state"),
		ipamDir: filepath.Join(dir, "ipam"), logFile: filepath.Join(dir, "genie.log"),
		kubecfg: filepath.Join(dir, "genie.kubeconfig")}
	err := n.netns.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		// The macvlan master: a veth pair (this kernel has no dummy driver).
		master := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n.master()}, PeerName: "gkp" + n.sfx}
		if err := netlink.LinkAdd(master); err != nil {
			return fmt.Errorf("add macvlan master: %w", err)
		}
		for _, name := range []string{n.master(), "gkp" + n.sfx} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("set up node netns: %v", err)
	}
	u, err := url.Parse(c.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	n.relay = startRelay(t, n.netns, u.Host)
	if err := os.MkdirAll(n.confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The node's default network, as a cluster's primary CNI would install it.
	n.writeConf("10-default.conf", map[string]any{
		"cniVersion": version, "name": "genie-default", "type": "bridge", "bridge": "gkd" + n.sfx,
		"isGateway": true, "isDefaultGateway": true, "ipam": n.hostLocal("10.77.0.0/24"),
	})
	n.writeKubeconfig(t, c, n.relay.addr())
	return n
}

func (n *node) master() string { return "gkm" + n.sfx }

func (n *node) hostLocal(subnet string) map[string]any {
	return map[string]any{"type": "host-local", "dataDir": n.ipamDir,
		"ranges": []any{[]any{map[string]any{"subnet": subnet}}}}
}

func (n *node) writeConf(file string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.confDir, file), data, 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// writeKubeconfig installs a fresh service-account token for genie in the
// node's kubeconfig, for the API server at addr (the relay), the way a node
// agent rotates it: the file is replaced atomically.
func (n *node) writeKubeconfig(t *testing.T, c *cluster, addr string) {
	t.Helper()
	// Not t.Context(): this also runs from t.Cleanup.
	tok, revoke, err := c.srv.ServiceAccountToken(context.Background(), c.ns, "genie")
	if err != nil {
		t.Fatal(err)
	}
	if err := kubeapi.WriteKubeconfig(n.kubecfg, "https://"+addr, c.srv.CAData, tok); err != nil {
		t.Fatal(err)
	}
	n.token, n.revoke = tok, revoke
}

// stdinConf is genie's configuration as the runtime hands it over.
func (n *node) stdinConf() []byte {
	data, _ := json.Marshal(map[string]any{
		"cniVersion": n.version, "name": "genie", "type": "genie",
		"confDir": n.confDir, "stateDir": n.stateDir, "binDir": n.binDir,
		"kubeconfig": n.kubecfg, "logFile": n.logFile, "logLevel": "debug",
		"agentSocket": n.agentSocket,
	})
	return data
}

// genie runs the genie binary in the node netns as a runtime would.
func (n *node) genie(command, containerID string, pod interface{ Path() string }, k8sPod *corev1.Pod) ([]byte, error) {
	args := "IgnoreUnknown=1"
	if k8sPod != nil {
		args += fmt.Sprintf(";K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=%s",
			k8sPod.Namespace, k8sPod.Name, containerID, k8sPod.UID)
	}
	cmd := exec.Command(filepath.Join(n.binDir, "genie"))
	cmd.Env = []string{
		"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + containerID, "CNI_NETNS=" + pod.Path(),
		"CNI_IFNAME=eth0", "CNI_PATH=" + n.binDir, "CNI_ARGS=" + args, "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
	}
	cmd.Stdin = bytes.NewReader(n.stdinConf())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Started from a thread inside the node netns, the process runs there.
	err := n.netns.Do(func(ns.NetNS) error { return cmd.Run() })
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			n.mu.Lock()
			n.maxRSSKiB = max(n.maxRSSKiB, ru.Maxrss)
			n.mu.Unlock()
		}
	}
	if err != nil {
		te := &types.Error{}
		if json.Unmarshal(stdout.Bytes(), te) == nil && te.Msg != "" {
			return stdout.Bytes(), fmt.Errorf("genie %s (stderr %q): %w", command, stderr.String(), te)
		}
		return stdout.Bytes(), fmt.Errorf("genie %s: %w; stdout %q stderr %q", command, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

func (n *node) add(containerID string, pod ns.NetNS, k8sPod *corev1.Pod) (*current.Result, error) {
	out, err := n.genie("ADD", containerID, pod, k8sPod)
	if err != nil {
		return nil, err
	}
	r, err := create.Create(n.version, out)
	if err != nil {
		return nil, fmt.Errorf("parse genie result %s: %w", out, err)
	}
	return current.NewResultFromResult(r)
}

func (n *node) dumpLog() {
	if data, err := os.ReadFile(n.logFile); err == nil {
		n.t.Logf("genie log:\n%s", data)
	}
}

// allocations lists the addresses host-local holds under the node's dataDir,
// as network/ip.
func (n *node) allocations() []string {
	var out []string
	filepath.Walk(n.ipamDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && net.ParseIP(info.Name()) != nil {
			out = append(out, filepath.Base(filepath.Dir(p))+"/"+info.Name())
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// records lists genie's attachment records.
func (n *node) records() []string {
	var out []string
	ents, _ := os.ReadDir(n.stateDir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".json") {
			out = append(out, e.Name())
		}
	}
	return out
}

// podLink is one interface of a pod netns.
type podLink struct {
	mac   string
	addrs []string // IPv4 CIDRs
}

// readPod returns the pod's links (lo excluded) and its IPv4 default routes
// as "via GW dev IF".
func readPod(t *testing.T, pod ns.NetNS) (map[string]podLink, []string) {
	t.Helper()
	links := map[string]podLink{}
	var defaults []string
	err := pod.Do(func(ns.NetNS) error {
		ls, err := netlink.LinkList()
		if err != nil {
			return err
		}
		names := map[int]string{}
		for _, l := range ls {
			names[l.Attrs().Index] = l.Attrs().Name
			if l.Attrs().Name == "lo" {
				continue
			}
			addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			pl := podLink{mac: l.Attrs().HardwareAddr.String()}
			for _, a := range addrs {
				pl.addrs = append(pl.addrs, a.IPNet.String())
			}
			links[l.Attrs().Name] = pl
		}
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
				defaults = append(defaults, fmt.Sprintf("via %s dev %s", r.Gw, names[r.LinkIndex]))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read pod netns: %v", err)
	}
	return links, defaults
}

func inSubnet(t *testing.T, cidr, subnet string) bool {
	t.Helper()
	ip, _, err := net.ParseCIDR(cidr)
	if err != nil {
		return false
	}
	_, sn, _ := net.ParseCIDR(subnet)
	return sn.Contains(ip)
}

func (c *cluster) networkStatus(t *testing.T, name string) []nadv1.NetworkStatus {
	t.Helper()
	pod, err := c.admin.CoreV1().Pods(c.ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod %s: %v", name, err)
	}
	raw, ok := pod.Annotations[kube.NetworkStatusAnnotation]
	if !ok {
		t.Fatalf("pod %s has no %s annotation (annotations %v)", name, kube.NetworkStatusAnnotation, pod.Annotations)
	}
	var st []nadv1.NetworkStatus
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatalf("pod %s network-status %q: %v", name, raw, err)
	}
	return st
}

// TestPrivilegedGenieNPWG attaches a pod to its default network plus two
// NADs (one in the pod's namespace, one in another), checks the pod's netns
// and its network-status annotation, then deletes the Pod object before DEL
// (the kubelet order) and checks that DEL frees everything. A second pod is
// added after a token rotation and deleted while the API server is
// unreachable.
func TestPrivilegedGenieNPWG(t *testing.T) {
	requireRoot(t)
	plugins := cniBinDir(t)
	c := newCluster(t)
	binDir := buildGenie(t, plugins)

	for _, version := range []string{"0.4.0", "1.0.0"} {
		t.Run("cni-"+version, func(t *testing.T) {
			testNPWG(t, c, binDir, version)
		})
	}
}

func testNPWG(t *testing.T, c *cluster, binDir, version string) {
	n := newNode(t, c, binDir, version)
	defer func() {
		if t.Failed() {
			n.dumpLog()
		}
	}()
	// NADs: a second bridge in the pod's namespace (no name in the config:
	// the NAD's name is used), a macvlan with a static-IP capability in the
	// infra namespace.
	brNAD := "br-data-" + n.sfx
	mvNAD := "mv-storage-" + n.sfx
	c.createNAD(t, c.ns, brNAD, map[string]any{
		"cniVersion": version, "type": "bridge", "bridge": "gkb" + n.sfx,
		"isGateway": true, "ipam": n.hostLocal("10.78.0.0/24"),
	})
	c.createNAD(t, c.infra, mvNAD, map[string]any{
		"cniVersion": version, "name": mvNAD, "plugins": []any{map[string]any{
			"type": "macvlan", "master": n.master(), "mode": "bridge",
			"capabilities": map[string]any{"ips": true}, "ipam": map[string]any{
				"type": "host-local", "dataDir": n.ipamDir,
				"ranges": []any{[]any{map[string]any{"subnet": "10.79.0.0/24"}}}}}},
	})
	selection := fmt.Sprintf(`[{"name":%q,"interface":"data0"},{"name":%q,"namespace":%q,"ips":["10.79.0.50/24"]}]`,
		brNAD, mvNAD, c.infra)

	// --- pod 1: ADD, check, delete the Pod object, DEL.
	pod1 := c.createPod(t, "web-"+n.sfx, selection)
	netns1 := newNS(t)
	cid1 := "cid1-" + n.sfx
	res, err := n.add(cid1, netns1, pod1)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	links, defaults := readPod(t, netns1)
	if len(links) != 3 {
		t.Fatalf("pod netns links = %v, want eth0, data0, net1", links)
	}
	eth0, data0, net1 := links["eth0"], links["data0"], links["net1"]
	switch {
	case len(eth0.addrs) != 1 || !inSubnet(t, eth0.addrs[0], "10.77.0.0/24"):
		t.Errorf("eth0 addresses %v, want one in the default network 10.77.0.0/24", eth0.addrs)
	case len(data0.addrs) != 1 || !inSubnet(t, data0.addrs[0], "10.78.0.0/24"):
		t.Errorf("data0 addresses %v, want one in %s's 10.78.0.0/24", data0.addrs, brNAD)
	case !slices.Equal(net1.addrs, []string{"10.79.0.50/24"}):
		t.Errorf("net1 addresses %v, want the requested 10.79.0.50/24", net1.addrs)
	}
	if !slices.Equal(defaults, []string{"via 10.77.0.1 dev eth0"}) {
		t.Errorf("pod default routes %v, want exactly one, via the default network's gateway on eth0", defaults)
	}
	if len(res.IPs) != 3 {
		t.Errorf("ADD result IPs %v, want 3", res.IPs)
	}

	st := c.networkStatus(t, pod1.Name)
	byIf := map[string]nadv1.NetworkStatus{}
	defaultsInStatus := 0
	for _, s := range st {
		byIf[s.Interface] = s
		if s.Default {
			defaultsInStatus++
		}
	}
	if len(st) != 3 || defaultsInStatus != 1 || !byIf["eth0"].Default {
		t.Fatalf("network-status %+v: want 3 entries with exactly one default (eth0)", st)
	}
	want := map[string]struct {
		name string
		link podLink
	}{
		"eth0":  {"genie-default", eth0},
		"data0": {c.ns + "/" + brNAD, data0},
		"net1":  {c.infra + "/" + mvNAD, net1},
	}
	for ifname, w := range want {
		s := byIf[ifname]
		ip, _, _ := strings.Cut(w.link.addrs[0], "/")
		if s.Name != w.name || !slices.Equal(s.IPs, []string{ip}) || s.Mac != w.link.mac {
			t.Errorf("network-status for %s = %+v, want name %q ips [%s] mac %s", ifname, s, w.name, ip, w.link.mac)
		}
	}
	if got := n.allocations(); len(got) != 3 {
		t.Errorf("host-local allocations after ADD = %v, want 3", got)
	}

	c.deletePod(t, pod1.Name)
	if _, err := n.genie("DEL", cid1, netns1, pod1); err != nil {
		t.Fatalf("DEL after the Pod object was deleted: %v", err)
	}
	if links, _ := readPod(t, netns1); len(links) != 0 {
		t.Errorf("pod netns links after DEL = %v, want none", links)
	}
	if got := n.allocations(); len(got) != 0 {
		t.Errorf("host-local allocations after DEL = %v, want none", got)
	}
	if got := n.records(); len(got) != 0 {
		t.Errorf("genie records after DEL = %v, want none", got)
	}
	// DEL is idempotent.
	if _, err := n.genie("DEL", cid1, netns1, pod1); err != nil {
		t.Errorf("second DEL: %v", err)
	}

	// --- Token rotation: the node's kubeconfig gets a new token and the old
	// one is revoked; the next ADD must use the new one.
	oldToken, oldRevoke := n.token, n.revoke
	n.writeKubeconfig(t, c, n.relay.addr())
	revoke(t, c, oldToken, oldRevoke)

	// --- pod 2: ADD with the rotated token, then DEL with the API server
	// unreachable (the relay is closed and the kubeconfig names a closed port).
	pod2 := c.createPod(t, "db-"+n.sfx, selection)
	netns2 := newNS(t)
	cid2 := "cid2-" + n.sfx
	if _, err := n.add(cid2, netns2, pod2); err != nil {
		t.Fatalf("ADD after token rotation: %v", err)
	}
	if st := c.networkStatus(t, pod2.Name); len(st) != 3 {
		t.Errorf("pod 2 network-status %+v, want 3 entries", st)
	}
	if got := n.allocations(); len(got) != 3 {
		t.Errorf("host-local allocations after ADD of pod 2 = %v, want 3", got)
	}
	n.relay.close()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	if err := kubeapi.WriteKubeconfig(n.kubecfg, "https://"+deadAddr, c.srv.CAData, "unused"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.genie("DEL", cid2, netns2, pod2); err != nil {
		t.Fatalf("DEL with the API server unreachable: %v", err)
	}
	if links, _ := readPod(t, netns2); len(links) != 0 {
		t.Errorf("pod 2 netns links after DEL = %v, want none", links)
	}
	if got := n.allocations(); len(got) != 0 {
		t.Errorf("host-local allocations after DEL of pod 2 = %v, want none", got)
	}
	if got := n.records(); len(got) != 0 {
		t.Errorf("genie records after DEL of pod 2 = %v, want none", got)
	}
}

// revoke revokes a genie token and waits until the API server refuses it
// (the server caches successful token reviews for up to 10s).
func revoke(t *testing.T, c *cluster, token string, revokeFn func(context.Context) error) {
	t.Helper()
	if err := revokeFn(t.Context()); err != nil {
		t.Fatal(err)
	}
	kc, err := kube.NewFromConfig(c.srv.RESTConfigForToken(token))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := kc.GetPod(t.Context(), c.ns, "any")
		if kube.IsUnauthorized(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("old token still accepted after revocation: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// pathNS names a netns path that may no longer exist (genie only passes it
// on as CNI_NETNS).
type pathNS string

func (p pathNS) Path() string { return string(p) }

// cniError extracts the CNI error genie printed.
func cniError(t *testing.T, err error) *types.Error {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("genie failed without a CNI error object: %v", err)
	}
	t.Logf("genie error (code %d): %s", te.Code, te.Msg)
	return te
}

// assertNothingAttached checks that a failed ADD left nothing behind: no
// link in the pod, no address held, no record, no network-status.
func assertNothingAttached(t *testing.T, c *cluster, n *node, pod ns.NetNS, podName string) {
	t.Helper()
	if links, _ := readPod(t, pod); len(links) != 0 {
		t.Errorf("pod netns links after failed ADD = %v, want none", links)
	}
	if got := n.allocations(); len(got) != 0 {
		t.Errorf("host-local allocations after failed ADD = %v, want none", got)
	}
	if got := n.records(); len(got) != 0 {
		t.Errorf("genie records after failed ADD = %v, want none", got)
	}
	p, err := c.admin.CoreV1().Pods(c.ns).Get(t.Context(), podName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := p.Annotations[kube.NetworkStatusAnnotation]; ok {
		t.Errorf("pod %s got network-status %s from a failed ADD", podName, v)
	}
}

// TestPrivilegedGenieK8sEdges covers the Kubernetes-side failure modes and
// the no-selection case: every failed ADD must say why and leave nothing
// attached.
func TestPrivilegedGenieK8sEdges(t *testing.T) {
	requireRoot(t)
	plugins := cniBinDir(t)
	c := newCluster(t)
	binDir := buildGenie(t, plugins)
	n := newNode(t, c, binDir, "1.0.0")
	defer func() {
		if t.Failed() {
			n.dumpLog()
		}
	}()
	c.createNAD(t, c.ns, "br-"+n.sfx, map[string]any{
		"cniVersion": "1.0.0", "type": "bridge", "bridge": "gkb" + n.sfx, "ipam": n.hostLocal("10.78.0.0/24"),
	})

	t.Run("no selection gets the default network only", func(t *testing.T) {
		pod := c.createPod(t, "plain-"+n.sfx, "")
		netns := newNS(t)
		if _, err := n.add("plain-"+n.sfx, netns, pod); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		st := c.networkStatus(t, pod.Name)
		if len(st) != 1 || !st[0].Default || st[0].Interface != "eth0" || st[0].Name != "genie-default" ||
			len(st[0].IPs) != 1 || !strings.HasPrefix(st[0].IPs[0], "10.77.0.") {
			t.Errorf("network-status %+v, want only genie-default on eth0, default", st)
		}
		if _, err := n.genie("DEL", "plain-"+n.sfx, netns, pod); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		if got := n.allocations(); len(got) != 0 {
			t.Errorf("allocations after DEL = %v", got)
		}
	})

	t.Run("DEL after the pod netns and the Pod object are gone", func(t *testing.T) {
		pod := c.createPod(t, "gone-"+n.sfx, "br-"+n.sfx)
		netns, err := testutils.NewNS()
		if err != nil {
			t.Fatal(err)
		}
		path := netns.Path()
		if _, err := n.add("gone-"+n.sfx, netns, pod); err != nil {
			netns.Close()
			testutils.UnmountNS(netns)
			t.Fatalf("ADD: %v", err)
		}
		if got := n.allocations(); len(got) != 2 {
			t.Errorf("allocations after ADD = %v, want 2", got)
		}
		// The runtime tore the sandbox down first (or crashed): the netns
		// path no longer exists when DEL comes.
		netns.Close()
		if err := testutils.UnmountNS(netns); err != nil {
			t.Fatal(err)
		}
		c.deletePod(t, pod.Name)
		if _, err := n.genie("DEL", "gone-"+n.sfx, pathNS(path), pod); err != nil {
			t.Fatalf("DEL with the netns gone: %v", err)
		}
		if got := n.allocations(); len(got) != 0 {
			t.Errorf("host-local allocations after DEL = %v, want none", got)
		}
		if got := n.records(); len(got) != 0 {
			t.Errorf("genie records after DEL = %v, want none", got)
		}
	})

	t.Run("missing NAD", func(t *testing.T) {
		pod := c.createPod(t, "missing-"+n.sfx, "br-"+n.sfx+",no-such-net")
		netns := newNS(t)
		_, err := n.add("missing-"+n.sfx, netns, pod)
		if err == nil {
			t.Fatal("ADD with a missing NAD succeeded")
		}
		te := cniError(t, err)
		if te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, "no-such-net") || !strings.Contains(te.Msg, "not found") {
			t.Errorf("error = code %d %q, want code %d naming no-such-net as not found", te.Code, te.Msg, types.ErrInvalidNetworkConfig)
		}
		assertNothingAttached(t, c, n, netns, pod.Name)
	})

	t.Run("NAD in a namespace genie may not read", func(t *testing.T) {
		locked := c.srv.CreateNamespace(t, "genie-locked")
		c.createNAD(t, locked, "secret-net", map[string]any{"cniVersion": "1.0.0", "type": "bridge", "bridge": "gkx" + n.sfx,
			"ipam": n.hostLocal("10.80.0.0/24")})
		pod := c.createPod(t, "locked-"+n.sfx, locked+"/secret-net")
		netns := newNS(t)
		_, err := n.add("locked-"+n.sfx, netns, pod)
		if err == nil {
			t.Fatal("ADD with a forbidden NAD succeeded")
		}
		if te := cniError(t, err); !strings.Contains(te.Msg, "RBAC") || !strings.Contains(te.Msg, locked+"/secret-net") {
			t.Errorf("error %q does not name the NAD and point at RBAC", te.Msg)
		}
		assertNothingAttached(t, c, n, netns, pod.Name)
	})

	t.Run("pod re-created under the same name", func(t *testing.T) {
		old := c.createPod(t, "sts-0-"+n.sfx, "br-"+n.sfx)
		c.deletePod(t, old.Name)
		fresh := c.createPod(t, old.Name, "br-"+n.sfx)
		netns := newNS(t)
		// The runtime still sets up the old pod's sandbox (K8S_POD_UID is
		// the old UID): its status must not land on the new pod.
		_, err := n.add("sts-"+n.sfx, netns, old)
		if err == nil {
			t.Fatal("ADD for a pod UID that no longer exists succeeded")
		}
		if te := cniError(t, err); !strings.Contains(te.Msg, string(old.UID)) {
			t.Errorf("error %q does not name the vanished pod UID", te.Msg)
		}
		assertNothingAttached(t, c, n, netns, fresh.Name)
	})

	t.Run("revoked token without rotation", func(t *testing.T) {
		pod := c.createPod(t, "stale-"+n.sfx, "br-"+n.sfx)
		revoke(t, c, n.token, n.revoke)
		t.Cleanup(func() { n.writeKubeconfig(t, c, n.relay.addr()) })
		netns := newNS(t)
		_, err := n.add("stale-"+n.sfx, netns, pod)
		if err == nil {
			t.Fatal("ADD with a revoked token succeeded")
		}
		te := cniError(t, err)
		for _, want := range []string{n.kubecfg, "rejected"} {
			if !strings.Contains(te.Msg, want) {
				t.Errorf("error %q does not mention %q", te.Msg, want)
			}
		}
		if te.Code != types.ErrTryAgainLater {
			t.Errorf("error code %d, want %d (try again later: the token may be rotated)", te.Code, types.ErrTryAgainLater)
		}
		assertNothingAttached(t, c, n, netns, pod.Name)
	})
}

// TestPrivilegedGenieBurst runs many ADDs at once on one node, as a kubelet
// does when a deployment scales up: every pod gets distinct addresses and its
// own network-status, and the DELs that follow free every address.
func TestPrivilegedGenieBurst(t *testing.T) {
	requireRoot(t)
	plugins := cniBinDir(t)
	c := newCluster(t)
	binDir := buildGenie(t, plugins)
	n := newNode(t, c, binDir, "1.0.0")
	defer func() {
		if t.Failed() {
			n.dumpLog()
		}
	}()
	nad := "br-" + n.sfx
	c.createNAD(t, c.ns, nad, map[string]any{
		"cniVersion": "1.0.0", "type": "bridge", "bridge": "gkb" + n.sfx, "ipam": n.hostLocal("10.78.0.0/24"),
	})
	const pods = 12
	type podRun struct {
		pod   *corev1.Pod
		netns ns.NetNS
		cid   string
	}
	runs := make([]podRun, pods)
	for i := range runs {
		runs[i] = podRun{pod: c.createPod(t, fmt.Sprintf("burst-%d-%s", i, n.sfx), nad), netns: newNS(t),
			cid: fmt.Sprintf("burst-%d-%s", i, n.sfx)}
	}
	each := func(verb string) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, pods)
		for i := range runs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = n.genie(verb, runs[i].cid, runs[i].netns, runs[i].pod)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s of pod %d: %v", verb, i, err)
			}
		}
		return time.Since(start)
	}
	addTime := each("ADD")
	if t.Failed() {
		t.FailNow()
	}
	seen := map[string]string{}
	for i, r := range runs {
		st := c.networkStatus(t, r.pod.Name)
		if len(st) != 2 || !st[0].Default || st[0].Interface != "eth0" || st[1].Interface != "net1" {
			t.Errorf("pod %d network-status %+v, want eth0 (default) and net1", i, st)
			continue
		}
		links, _ := readPod(t, r.netns)
		for _, s := range st {
			for _, ip := range s.IPs {
				if other, dup := seen[ip]; dup {
					t.Errorf("address %s given to %s and %s", ip, other, r.pod.Name)
				}
				seen[ip] = r.pod.Name
				if l := links[s.Interface]; len(l.addrs) != 1 || !strings.HasPrefix(l.addrs[0], ip+"/") {
					t.Errorf("pod %d: status says %s has %s, netns has %v", i, s.Interface, ip, l.addrs)
				}
			}
		}
	}
	if got := n.allocations(); len(got) != 2*pods {
		t.Errorf("host-local allocations after %d ADDs = %d, want %d", pods, len(got), 2*pods)
	}
	delTime := each("DEL")
	if got := n.allocations(); len(got) != 0 {
		t.Errorf("host-local allocations after the DELs = %v, want none", got)
	}
	if got := n.records(); len(got) != 0 {
		t.Errorf("genie records after the DELs = %v, want none", got)
	}
	t.Logf("%d concurrent ADDs (2 networks each) in %v, DELs in %v; largest genie max RSS %d KiB",
		pods, addTime.Round(time.Millisecond), delTime.Round(time.Millisecond), n.maxRSSKiB)
}
