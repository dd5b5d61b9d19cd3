package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cni-genie/cni-genie/pkg/image"
	"github.com/cni-genie/cni-genie/pkg/install"
	"github.com/cni-genie/cni-genie/pkg/testutil/kubenode"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

const clusterConflist = `{"cniVersion": "1.0.0", "name": "cluster", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}`

// env is one installed node (and a worker, once added).
type env struct {
	t    testing.TB
	n    *kubenode.Node
	w    *kubenode.Node // the worker (nil: none)
	cs   *kubernetes.Clientset
	root string
	bin  string // the image's binaries (geniectl)
	ns   string
}

// cidrs of the networks, for the checks.
var (
	clusterNet = mustCIDR("10.244.0.0/24")
	bridgeNet  = mustCIDR("10.30.0.0/24")
	macvlanNet = mustCIDR("10.31.0.0/24")
	vpcNet     = mustCIDR("10.10.1.0/24")
)

// with returns e reporting to t (a subtest).
func (e *env) with(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

func mustCIDR(s string) *net.IPNet { _, n, _ := net.ParseCIDR(s); return n }

// setup builds the image, starts a node whose network is the bridge plugin,
// measures the bridge-only baseline if asked, then installs genie from
// deploy/manifests and waits for its DaemonSet.
func setup(t testing.TB) *env {
	kubenode.Require(t)
	bin := testenv.BinDir(t)
	cni := testenv.CNIBinDir(t)
	root := testenv.ModuleRoot(t)
	var plugins []string
	for _, p := range []string{"bridge", "host-local", "loopback", "macvlan", "ptp", "static"} {
		plugins = append(plugins, filepath.Join(cni, p))
	}
	testenv.RequireBinaries(t, plugins...)
	tmp := t.TempDir()
	testImgs := kubenode.TestImages(t, bin, tmp)
	begin := time.Now()
	imgs, err := image.Build(root, filepath.Join(tmp, "image"), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image built in %v", time.Since(begin).Round(time.Millisecond))
	n := kubenode.New(t, kubenode.Options{BinDir: bin, CNIBin: plugins,
		NetConf: map[string][]byte{"10-cluster.conflist": []byte(clusterConflist)},
		Images:  []string{testImgs, imgs.Genie}})
	cs, err := n.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, n: n, cs: cs, root: root, bin: filepath.Join(tmp, "image", "bin"), ns: "default"}
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range []string{"kubelet", "containerd", "kube-controller-manager", "kube-scheduler"} {
				t.Logf("--- %s log ---\n%s", c, n.LogTail(c, 40))
			}
			ev, _ := n.Kubectl("get", "events", "-A")
			t.Logf("--- events ---\n%s", ev)
			out, _ := n.Kubectl("-n", "kube-system", "logs", "-l", "app.kubernetes.io/name=cni-genie", "--all-containers", "--tail=40")
			t.Logf("--- cni-genie logs ---\n%s", out)
		}
	})
	return e
}

// install applies the chart's rendered manifest and waits until the
// DaemonSet's pod is ready and genie's conflist is in place.
func (e *env) install() {
	t := e.t
	begin := time.Now()
	if out, err := e.n.Kubectl("apply", "-f", filepath.Join(e.root, "deploy/manifests/cni-genie.yaml")); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	e.waitInstalled()
	t.Logf("genie installed from deploy/manifests and ready in %v", time.Since(begin).Round(time.Millisecond))
}

// helmInstall installs the chart with helm, as the README says, and waits
// like install. GENIE_TEST_HELM_SET is passed as --set (experiments, e.g.
// agent.capabilities={BPF,NET_ADMIN}).
func (e *env) helmInstall() {
	begin := time.Now()
	args := []string{"install", "cni-genie", e.chart(), "--namespace", "kube-system"}
	if s := os.Getenv("GENIE_TEST_HELM_SET"); s != "" {
		args = append(args, "--set", s)
	}
	e.helm(args...)
	e.waitInstalled()
	e.t.Logf("genie installed with helm and ready in %v", time.Since(begin).Round(time.Millisecond))
}

// waitInstalled waits until the DaemonSet's pods are ready and genie's
// conflist is in place.
func (e *env) waitInstalled() {
	e.waitDaemonSet("cni-genie", 90*time.Second)
	conf := e.n.NodePath("/etc/cni/net.d/" + install.ConfName)
	e.eventually(time.Minute, "genie's conflist", func() error { _, err := os.Stat(conf); return err })
}

func (e *env) chart() string { return filepath.Join(e.root, "deploy/helm/cni-genie") }

// helm runs the helm of the bin dir inside the node as the admin, its
// cache and config in the node's dir (never the host's $HOME).
func (e *env) helm(args ...string) string {
	e.t.Helper()
	h := filepath.Join(testenv.BinDir(e.t), "helm")
	if _, err := os.Stat(h); err != nil {
		if os.Getenv(kubenode.EnvRequire) == "1" {
			e.t.Fatalf("needs %s (run hack/build-test-bins.sh)", h)
		}
		e.t.Skipf("needs %s (run hack/build-test-bins.sh)", h)
	}
	home := filepath.Join(e.n.Dir, "helm")
	full := append([]string{"HELM_CACHE_HOME=" + home + "/cache", "HELM_CONFIG_HOME=" + home + "/config",
		"HELM_DATA_HOME=" + home + "/data", "KUBECONFIG=" + e.n.AdminKubeconfig, h}, args...)
	out, err := e.n.Exec("env", full...)
	if err != nil {
		e.t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (e *env) waitDaemonSet(name string, timeout time.Duration) {
	e.eventually(timeout, "DaemonSet "+name+" ready", func() error {
		ds, err := e.cs.AppsV1().DaemonSets("kube-system").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ds.Status.DesiredNumberScheduled == 0 || ds.Status.NumberReady != ds.Status.DesiredNumberScheduled {
			pods, _ := e.cs.CoreV1().Pods("kube-system").List(context.Background(), metav1.ListOptions{})
			var st []string
			for _, p := range pods.Items {
				for _, c := range p.Status.ContainerStatuses {
					s := fmt.Sprintf("%s/%s ready=%v restarts=%d", p.Name, c.Name, c.Ready, c.RestartCount)
					if c.State.Waiting != nil {
						s += " " + c.State.Waiting.Reason + ": " + c.State.Waiting.Message
					}
					st = append(st, s)
				}
			}
			return fmt.Errorf("%d/%d ready; %s", ds.Status.NumberReady, ds.Status.DesiredNumberScheduled, strings.Join(st, "; "))
		}
		return nil
	})
}

func (e *env) eventually(timeout time.Duration, what string, f func() error) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not after %v: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// geniectl runs the image's geniectl inside the node as the admin.
func (e *env) geniectl(args ...string) string {
	e.t.Helper()
	full := append([]string{"--datastore", "kubernetes", "--kubeconfig", e.n.AdminKubeconfig}, args...)
	out, err := e.n.Exec(filepath.Join(e.bin, "geniectl"), full...)
	if err != nil {
		e.t.Fatalf("geniectl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// applyYAML writes doc into the node's dir and applies it.
func (e *env) applyYAML(name, doc string) {
	e.t.Helper()
	p := filepath.Join(e.n.Dir, name+".yaml")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if out, err := e.n.Kubectl("apply", "-f", p); err != nil {
		e.t.Fatalf("apply %s: %v\n%s", name, err, out)
	}
}

// networks creates the VPC, its subnet and the NADs the pods select.
func (e *env) networks() {
	e.geniectl("vpc", "create", "blue", "--cidr", "10.10.0.0/16")
	e.geniectl("subnet", "create", "blue/web", "--cidr", vpcNet.String())
	nad := func(name, conf string) string {
		return fmt.Sprintf("apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: %s, namespace: %s}\nspec:\n  config: '%s'\n---\n", name, e.ns, conf)
	}
	e.applyYAML("nads",
		nad("nad-bridge", `{"cniVersion": "1.0.0", "type": "bridge", "bridge": "br-nad", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.30.0.0/24"}]]}}`)+
			nad("nad-macvlan", `{"cniVersion": "1.0.0", "type": "macvlan", "master": "eth0", "mode": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.31.0.0/24"}]]}}`)+
			nad("nad-blue", `{"cniVersion": "1.1.0", "type": "genie-vpc", "vpc": "blue", "subnet": "web"}`))
}

// runPod creates a busybox pod and waits until it runs; it returns the pod
// and the time from create to Running.
func (e *env) runPod(name string, ann map[string]string) (*corev1.Pod, time.Duration) {
	e.t.Helper()
	return e.runPodOn(e.n, name, ann)
}

// runPodOn is runPod on node n.
func (e *env) runPodOn(n *kubenode.Node, name string, ann map[string]string) (*corev1.Pod, time.Duration) {
	e.t.Helper()
	ctx := context.Background()
	begin := time.Now()
	if _, err := e.cs.CoreV1().Pods(e.ns).Create(ctx, kubenode.BusyboxPod(e.ns, name, n.Name, ann), metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	p, err := kubenode.WaitRunning(ctx, e.cs, e.ns, name, 2*time.Minute)
	if err != nil {
		e.t.Fatal(err)
	}
	return p, time.Since(begin)
}

func (e *env) deletePods(names ...string) {
	e.t.Helper()
	ctx := context.Background()
	for _, name := range names {
		if err := e.cs.CoreV1().Pods(e.ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			e.t.Fatalf("delete %s: %v", name, err)
		}
	}
	for _, name := range names {
		if err := kubenode.WaitGone(ctx, e.cs, e.ns, name, 2*time.Minute); err != nil {
			e.t.Fatal(err)
		}
	}
}

// ifaces lists the container's interfaces (but lo) with their IPv4
// addresses.
func (e *env) ifaces(p *corev1.Pod) map[string][]net.IP {
	e.t.Helper()
	pns, err := e.nodeOf(p).PodNetNS(p)
	if err != nil {
		e.t.Fatal(err)
	}
	defer pns.Close()
	out := map[string][]net.IP{}
	err = pns.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Attrs().Name == "lo" {
				continue
			}
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
			out[l.Attrs().Name] = nil
			for _, a := range addrs {
				out[l.Attrs().Name] = append(out[l.Attrs().Name], a.IP)
			}
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// networkStatus reads the pod's network-status annotation (it is written
// during the ADD, before the pod runs).
func (e *env) networkStatus(name string) []nadv1.NetworkStatus {
	e.t.Helper()
	p, err := e.cs.CoreV1().Pods(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	raw := p.Annotations[nadv1.NetworkStatusAnnot]
	var st []nadv1.NetworkStatus
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		e.t.Fatalf("pod %s network-status %q: %v", name, raw, err)
	}
	return st
}

// checkPod asserts the pod's interfaces (name → network) inside the
// container and the matching network-status, with exactly one default.
func (e *env) checkPod(p *corev1.Pod, want map[string]*net.IPNet, wantStatus map[string]string) map[string]net.IP {
	e.t.Helper()
	got := e.ifaces(p)
	ips := map[string]net.IP{}
	if len(got) != len(want) {
		e.t.Errorf("pod %s has interfaces %v, want %v", p.Name, got, keys(want))
	}
	for ifname, cidr := range want {
		addrs := got[ifname]
		if len(addrs) != 1 || !cidr.Contains(addrs[0]) {
			e.t.Errorf("pod %s %s: addresses %v, want one in %s", p.Name, ifname, addrs, cidr)
			continue
		}
		ips[ifname] = addrs[0]
	}
	st := e.networkStatus(p.Name)
	defaults := 0
	seen := map[string]string{}
	for _, s := range st {
		if s.Default {
			defaults++
		}
		seen[s.Interface] = s.Name
		if ip, ok := ips[s.Interface]; ok && (len(s.IPs) != 1 || s.IPs[0] != ip.String()) {
			e.t.Errorf("pod %s network-status %s ips %v, interface has %s", p.Name, s.Interface, s.IPs, ip)
		}
	}
	if defaults != 1 {
		e.t.Errorf("pod %s network-status has %d default entries: %+v", p.Name, defaults, st)
	}
	for ifname, name := range wantStatus {
		if seen[ifname] != name {
			e.t.Errorf("pod %s network-status: %s is %q, want %q (all: %+v)", p.Name, ifname, seen[ifname], name, st)
		}
	}
	if wantStatus != nil && len(st) != len(wantStatus) {
		e.t.Errorf("pod %s network-status has %d entries, want %d: %+v", p.Name, len(st), len(wantStatus), st)
	}
	return ips
}

func keys[V any](m map[string]V) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

// ping sends one ICMP echo from the pod's netns (the node's busybox, run
// in the container's network namespace).
func (e *env) ping(from *corev1.Pod, to net.IP) error {
	pns, err := e.nodeOf(from).PodNetNS(from)
	if err != nil {
		return err
	}
	path := pns.Path()
	pns.Close()
	out, err := exec.Command("nsenter", "--net="+path, filepath.Join(testenv.BinDir(e.t), "busybox"), "ping", "-c", "1", "-W", "2", to.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v\n%s", to, from.Name, err, out)
	}
	return nil
}

// leftovers lists what a deleted pod could leave behind: host-local
// leases of every network, genie's attachment records, the agent's
// endpoints in the store and host-side veths of the node.
func (e *env) leftovers() []string {
	var out []string
	for _, a := range testenv.HostLocalAllocations(e.n.NodePath("/var/lib/cni/networks")) {
		out = append(out, "lease "+a)
	}
	for _, d := range []string{"/var/lib/cni/genie", "/var/lib/genie/attachments"} {
		filepath.Walk(e.n.NodePath(d), func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() && strings.HasSuffix(p, ".json") {
				out = append(out, "record "+strings.TrimPrefix(p, e.n.NodePath("/")))
			}
			return nil
		})
	}
	if o, err := e.n.Kubectl("get", "vpcendpoints.genie.cni.io", "-A", "-o", "name"); err == nil && len(strings.TrimSpace(string(o))) > 0 {
		out = append(out, "store endpoints "+strings.TrimSpace(string(o)))
	}
	if n, err := e.agentMetric("genie_ipam_allocations"); err != nil || n != 0 {
		out = append(out, fmt.Sprintf("agent IPAM allocations %v (%v)", n, err))
	}
	e.n.Do(func() error {
		links, _ := netlink.LinkList()
		for _, l := range links {
			if _, ok := l.(*netlink.Veth); ok && l.Attrs().Name != "eth0" && l.Attrs().Name != "eth0p" {
				out = append(out, "veth "+l.Attrs().Name)
			}
		}
		return nil
	})
	return out
}

func (e *env) noLeftovers(what string) {
	e.t.Helper()
	var last []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		last = e.leftovers()
		if len(last) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s left: %v", what, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// agentMetric reads one unlabelled gauge from the agent's /metrics (on the
// node's 127.0.0.1, reached from inside its network namespace).
func (e *env) agentMetric(name string) (float64, error) {
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: e.n.DialContext}}
	resp, err := hc.Get("http://127.0.0.1:9465/metrics")
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return -1, fmt.Errorf("no %s in /metrics", name)
}

// nodeOf returns the node a pod runs on.
func (e *env) nodeOf(p *corev1.Pod) *kubenode.Node {
	if e.w != nil && p.Spec.NodeName == e.w.Name {
		return e.w
	}
	return e.n
}
