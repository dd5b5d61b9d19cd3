package kubenode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cni-genie/cni-genie/pkg/testutil/proc"
	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// The node's fixed addresses: they exist only inside its network namespace.
const (
	// NodeIP is the node's InternalIP, on its eth0.
	NodeIP = "10.250.0.1"
	// WorkerIP is the InternalIP of the worker AddNode starts.
	WorkerIP = "10.250.0.2"
	// ServiceIP is the kubernetes Service's ClusterIP (first address of
	// ServiceCIDR); kube-apiserver listens on it directly.
	ServiceIP = "10.0.0.1"
	// ServiceCIDR is the cluster's Service range.
	ServiceCIDR = "10.0.0.0/24"
	// APIServerPort is kube-apiserver's port on every address.
	APIServerPort = 443
)

// Binaries the node needs in the bin dir.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl",
	"containerd", "containerd-shim-runc-v2", "ctr", "runc"}

// ErrBinariesMissing is returned by Start when a binary is not built.
var ErrBinariesMissing = errors.New("real-node test binaries missing (run hack/build-test-bins.sh)")

// Options configures Start.
type Options struct {
	// Name is the node's name (default "genie-node").
	Name string
	// BinDir holds Binaries.
	BinDir string
	// CNIBin are files copied into the node's /opt/cni/bin (the
	// cluster's pre-installed plugins).
	CNIBin []string
	// NetConf are files (name → content) in the node's /etc/cni/net.d at
	// start: the cluster's primary network.
	NetConf map[string][]byte
	// Images are docker-save tarballs imported into containerd.
	Images []string
	// SandboxImage is the pinned pause image (default
	// registry.k8s.io/pause:3.10).
	SandboxImage string
	// Logf receives progress lines.
	Logf func(format string, args ...any)
}

// Node is a running single-node cluster.
type Node struct {
	// Name is the node's name; Dir its private temp dir; IP its
	// InternalIP (NodeIP, or WorkerIP for a worker).
	Name, Dir, IP string
	// AdminKubeconfig authenticates as system:masters (server
	// https://NodeIP:443, reachable inside the node's network namespace).
	AdminKubeconfig string
	// Timings of start-up, from the first process: API server ready, node
	// Ready.
	APIReady, NodeReady time.Duration

	opts       Options
	pki        *pki
	control    *Node   // a worker's control-plane node (nil: this is it)
	workers    []*Node // a control-plane node's workers
	holder     *exec.Cmd
	holderPID  int
	netns      ns.NetNS
	cgroupRoot string
	spawner    *proc.Spawner
	mu         sync.Mutex
	procs      map[string]*proc.Proc
	stopped    bool
}

// Start brings the node up and waits until it is Ready. The caller must
// call Stop, also when Start fails part-way (Start cleans up itself then).
func Start(ctx context.Context, opts Options) (*Node, error) {
	if opts.Name == "" {
		opts.Name = "genie-node"
	}
	if opts.SandboxImage == "" {
		opts.SandboxImage = "registry.k8s.io/pause:3.10"
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	for _, b := range Binaries {
		if fi, err := os.Stat(filepath.Join(opts.BinDir, b)); err != nil || fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("%w: %s not found in %s", ErrBinariesMissing, b, opts.BinDir)
		}
	}
	for _, b := range []string{"unshare", "nsenter", "ip", "mount"} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBinariesMissing, b, err)
		}
	}
	dir, err := os.MkdirTemp("", "genie-kubenode-")
	if err != nil {
		return nil, err
	}
	n := &Node{Name: opts.Name, Dir: dir, IP: NodeIP, opts: opts, procs: map[string]*proc.Proc{}, spawner: proc.NewSpawner(),
		cgroupRoot: "genie-kn-" + filepath.Base(dir)[len("genie-kubenode-"):]}
	ok := false
	defer func() {
		if !ok {
			n.Stop()
		}
	}()
	begin := time.Now()
	if err := n.setupNamespaces(); err != nil {
		return nil, err
	}
	if err := n.writeConfig(); err != nil {
		return nil, err
	}
	if err := n.startControlPlane(ctx); err != nil {
		return nil, err
	}
	n.APIReady = time.Since(begin)
	if err := n.StartContainerd(ctx); err != nil {
		return nil, err
	}
	for _, img := range opts.Images {
		if out, err := n.Ctr("images", "import", img); err != nil {
			return nil, fmt.Errorf("import %s: %w\n%s", img, err, out)
		}
	}
	for _, c := range []string{"kube-controller-manager", "kube-scheduler"} {
		if _, err := n.spawn(c, n.componentArgs(c)...); err != nil {
			return nil, err
		}
	}
	if err := n.StartKubelet(ctx); err != nil {
		return nil, err
	}
	if err := n.waitNodeReady(ctx); err != nil {
		return nil, err
	}
	n.NodeReady = time.Since(begin)
	// The controller-manager's service-account controller makes each
	// namespace's "default" account, which admission requires of a pod.
	cs, err := n.Clientset()
	if err != nil {
		return nil, err
	}
	if err := n.poll(ctx, "service account default/default", time.Minute, func() bool {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	}); err != nil {
		return nil, err
	}
	opts.Logf("kubenode: %s ready in %v (API server %v), dir %s", n.Name, n.NodeReady.Round(time.Millisecond), n.APIReady.Round(time.Millisecond), dir)
	ok = true
	return n, nil
}

// path returns a path inside the node's dir.
func (n *Node) path(p ...string) string { return filepath.Join(append([]string{n.Dir}, p...)...) }

// NodePath returns where a path of the node's file system (as kubelet and
// the pods' hostPath volumes see it, e.g. /etc/cni/net.d) is from the test
// process.
func (n *Node) NodePath(p string) string {
	return filepath.Join("/proc", strconv.Itoa(n.holderPID), "root", p)
}

// setupNamespaces starts the holder and prepares its network and mounts.
func (n *Node) setupNamespaces() error {
	if n.holder == nil {
		if err := n.startHolder(); err != nil {
			return err
		}
	}
	for _, d := range []string{"etc-up", "etc-work", "opt-up/cni/bin", "opt-work", "var-up", "var-work", "run", "sysctl", "etc-up/cni/net.d"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return err
		}
	}
	return n.prepareNamespaces()
}

// startHolder starts the process holding the node's namespaces.
func (n *Node) startHolder() error {
	pidFile := n.path("holder.pid")
	n.holder = exec.Command("unshare", "--net", "--mount", "--propagation", "slave", "--fork", "--kill-child=SIGKILL",
		"sh", "-c", `echo $$ > "$1"; exec sleep infinity`, "sh", pidFile)
	n.holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var err error
	n.spawner.Do(func() { err = n.holder.Start() })
	if err != nil {
		return fmt.Errorf("start namespace holder: %w", err)
	}
	for i := 0; ; i++ {
		b, _ := os.ReadFile(pidFile)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			n.holderPID = pid
			break
		}
		if i > 100 {
			return errors.New("namespace holder did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n.netns, err = ns.GetNS(fmt.Sprintf("/proc/%d/ns/net", n.holderPID)); err != nil {
		return fmt.Errorf("open node netns: %w", err)
	}
	return nil
}

// prepareNamespaces fills the node's file system and configures its
// network and mounts.
func (n *Node) prepareNamespaces() error {
	for _, f := range n.opts.CNIBin {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("cni plugin %s: %w", f, err)
		}
		if err := os.WriteFile(n.path("opt-up/cni/bin", filepath.Base(f)), data, 0o755); err != nil {
			return err
		}
	}
	for name, data := range n.opts.NetConf {
		if err := os.WriteFile(n.path("etc-up/cni/net.d", name), data, 0o644); err != nil {
			return err
		}
	}
	sysctls := map[string]string{"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10", "kernel/panic_on_oops": "1"}
	var script strings.Builder
	script.WriteString("set -e\n")
	if n.control == nil {
		fmt.Fprintf(&script, "ip link set lo up\nip addr add %s/32 dev lo\n", ServiceIP)
		fmt.Fprintf(&script, "ip link add eth0 type veth peer name eth0p\nip addr add %s/24 dev eth0\nip link set eth0 up\nip link set eth0p up\n", NodeIP)
		fmt.Fprintf(&script, "ip route add default via 10.250.0.254 dev eth0 onlink\n")
	} else {
		// A worker's eth0 is the control node's eth0p (moved here before):
		// one segment; the API server and its Service address via it.
		fmt.Fprintf(&script, "ip link set lo up\nip link set eth0p name eth0\nip addr add %s/24 dev eth0\nip link set eth0 up\n", n.IP)
		fmt.Fprintf(&script, "ip route add default via %s dev eth0\n", NodeIP)
	}
	for _, d := range []string{"etc", "opt", "var"} {
		fmt.Fprintf(&script, "mount -t overlay overlay -o lowerdir=/%s,upperdir=%s,workdir=%s /%s\n", d, n.path(d+"-up"), n.path(d+"-work"), d)
	}
	fmt.Fprintf(&script, "mount --bind %s /run\nmkdir -p /run/netns\nmount --bind /run/netns /run/netns\nmount --make-shared /run/netns\n", n.path("run"))
	script.WriteString("mount -t bpf bpf /sys/fs/bpf\n")
	for k, v := range sysctls {
		f := n.path("sysctl", strings.ReplaceAll(k, "/", "_"))
		if err := os.WriteFile(f, []byte(v+"\n"), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&script, "mount --bind %s /proc/sys/%s\n", f, k)
	}
	if out, err := n.nsenterCmd("sh", "-c", script.String()).CombinedOutput(); err != nil {
		return fmt.Errorf("prepare node namespaces: %w\n%s", err, out)
	}
	// kubelet's cgroupRoot, under every v1 controller.
	ctrls, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, c := range ctrls {
		if fi, err := os.Stat(c); err != nil || !fi.IsDir() || filepath.Base(c) == "unified" {
			continue
		}
		if err := os.MkdirAll(filepath.Join(c, n.cgroupRoot), 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", c, err)
		}
	}
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		b, err := os.ReadFile("/sys/fs/cgroup/cpuset/" + f)
		if err == nil {
			err = os.WriteFile(filepath.Join("/sys/fs/cgroup/cpuset", n.cgroupRoot, f), b, 0o644)
		}
		if err != nil {
			return fmt.Errorf("cgroup cpuset %s: %w", f, err)
		}
	}
	return nil
}

// nsenterCmd returns a command run in the node's namespaces.
func (n *Node) nsenterCmd(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(n.holderPID), "-m", "-n", "--", name}, args...)...)
}

// Command returns a command that runs in the node's namespaces (to start
// in the background).
func (n *Node) Command(name string, args ...string) *exec.Cmd { return n.nsenterCmd(name, args...) }

// KubectlCommand returns a kubectl command run as the admin inside the
// node (to start in the background).
func (n *Node) KubectlCommand(args ...string) *exec.Cmd {
	return n.nsenterCmd(n.bin("kubectl"), append([]string{"--kubeconfig", n.AdminKubeconfig}, args...)...)
}

// Exec runs a command in the node's namespaces and returns its output.
func (n *Node) Exec(name string, args ...string) ([]byte, error) {
	return n.nsenterCmd(name, args...).CombinedOutput()
}

// Kubectl runs kubectl as the admin inside the node.
func (n *Node) Kubectl(args ...string) ([]byte, error) {
	return n.Exec(n.bin("kubectl"), append([]string{"--kubeconfig", n.AdminKubeconfig}, args...)...)
}

// Ctr runs containerd's ctr in the k8s.io namespace.
func (n *Node) Ctr(args ...string) ([]byte, error) {
	return n.Exec(n.bin("ctr"), append([]string{"-a", n.containerdSocket(), "-n", "k8s.io"}, args...)...)
}

// Do runs f in the node's network namespace (on a locked thread).
func (n *Node) Do(f func() error) error {
	return n.netns.Do(func(ns.NetNS) error { return f() })
}

func (n *Node) bin(name string) string { return filepath.Join(n.opts.BinDir, name) }

func (n *Node) containerdSocket() string { return n.path("containerd", "containerd.sock") }

func (n *Node) apiURL() string { return fmt.Sprintf("https://%s:%d", NodeIP, APIServerPort) }

// cp is the node running the control plane (n itself, or a worker's).
func (n *Node) cp() *Node {
	if n.control != nil {
		return n.control
	}
	return n
}

// RESTConfig returns an admin client config whose connections are made
// inside the node's network namespace.
func (n *Node) RESTConfig() *rest.Config {
	if n.control != nil {
		return n.control.RESTConfig()
	}
	cert, key := n.path("pki", "admin-client.crt"), n.path("pki", "admin-client.key")
	return &rest.Config{
		Host:            n.apiURL(),
		TLSClientConfig: rest.TLSClientConfig{CAFile: n.pki.caFile(), CertFile: cert, KeyFile: key},
		Dial:            n.DialContext,
		QPS:             100, Burst: 200, Timeout: 30 * time.Second,
	}
}

// DialContext dials from inside the node's network namespace.
func (n *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	var derr error
	if err := n.netns.Do(func(ns.NetNS) error {
		c, derr = (&net.Dialer{}).DialContext(ctx, network, addr)
		return nil
	}); err != nil {
		return nil, err
	}
	return c, derr
}

// Clientset returns an admin clientset.
func (n *Node) Clientset() (*kubernetes.Clientset, error) {
	return kubernetes.NewForConfig(n.RESTConfig())
}

func (n *Node) startControlPlane(ctx context.Context) error {
	if _, err := n.spawn("etcd", "--name", "default", "--data-dir", n.path("etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380", "--unsafe-no-fsync", "--log-level", "warn"); err != nil {
		return err
	}
	if _, err := n.spawn("kube-apiserver", n.componentArgs("kube-apiserver")...); err != nil {
		return err
	}
	cfg := n.RESTConfig()
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: tr, Timeout: 3 * time.Second}
	return n.poll(ctx, "kube-apiserver /readyz", 3*time.Minute, func() bool {
		resp, err := hc.Get(n.apiURL() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// StartContainerd starts containerd and waits for its socket.
func (n *Node) StartContainerd(ctx context.Context) error {
	if _, err := n.spawn("containerd", "--config", n.path("conf", "containerd.toml")); err != nil {
		return err
	}
	return n.poll(ctx, "containerd socket", time.Minute, func() bool {
		_, err := n.Ctr("version")
		return err == nil
	})
}

// StartKubelet starts kubelet (it registers the node on first start).
func (n *Node) StartKubelet(ctx context.Context) error {
	_, err := n.spawn("kubelet", "--config", n.path("conf", "kubelet.yaml"), "--kubeconfig", filepath.Join(n.pki.dir, n.kubeletPKI("kubelet")+".kubeconfig"),
		"--root-dir", n.path("kubelet"), "--cert-dir", n.path("kubelet", "pki"), "--hostname-override", n.Name,
		"--node-ip", n.IP, "--v=2")
	return err
}

// StopProcess stops one component (SIGTERM, then SIGKILL after 10s).
func (n *Node) StopProcess(name string) {
	n.mu.Lock()
	p := n.procs[name]
	delete(n.procs, name)
	n.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// RestartContainerd stops and restarts containerd (running containers
// and their shims stay, as on a real node).
func (n *Node) RestartContainerd(ctx context.Context) error {
	n.StopProcess("containerd")
	return n.StartContainerd(ctx)
}

// RestartKubelet stops and restarts kubelet and waits for the node to be
// Ready again.
func (n *Node) RestartKubelet(ctx context.Context) error {
	n.StopProcess("kubelet")
	if err := n.StartKubelet(ctx); err != nil {
		return err
	}
	return n.waitNodeReady(ctx)
}

// PID returns a component's process id (0 if not running).
func (n *Node) PID(name string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.procs[name]; p != nil {
		return p.Pid()
	}
	return 0
}

// LogTail returns the last lines of a component's log.
func (n *Node) LogTail(name string, lines int) string {
	return proc.Tail(n.path("logs", name+".log"), lines)
}

func (n *Node) waitNodeReady(ctx context.Context) error {
	cs, err := n.Clientset()
	if err != nil {
		return err
	}
	return n.poll(ctx, "node Ready", 3*time.Minute, func() bool {
		node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	})
}

// poll calls ready every 100ms until it is true, a component exits, or
// the timeout passes.
func (n *Node) poll(ctx context.Context, what string, timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ready() {
			return nil
		}
		n.mu.Lock()
		for name, p := range n.procs {
			select {
			case <-p.Done():
				n.mu.Unlock()
				return fmt.Errorf("waiting for %s: %s exited: %v\n--- %s log ---\n%s", what, name, p.Err(), name, n.LogTail(name, 30))
			default:
			}
		}
		n.mu.Unlock()
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: timed out after %v", what, timeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop tears the node down: pods' processes, shims, components, holder,
// cgroups and the temp dir (kept with GENIE_KUBENODE_KEEP=1). Idempotent.
func (n *Node) Stop() {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return
	}
	n.stopped = true
	procs := n.procs
	n.procs = map[string]*proc.Proc{}
	workers := n.workers
	n.mu.Unlock()
	for _, w := range workers {
		w.Stop()
	}
	for _, name := range []string{"kubelet", "kube-scheduler", "kube-controller-manager"} {
		if p := procs[name]; p != nil {
			p.Kill()
		}
	}
	n.killCgroupTree()
	n.killOwned() // shims: their command lines name our containerd socket
	for _, name := range []string{"containerd", "kube-apiserver", "etcd"} {
		if p := procs[name]; p != nil {
			p.Kill()
		}
	}
	n.killCgroupTree()
	n.killOwned()
	if n.netns != nil {
		n.netns.Close()
	}
	n.returnLink()
	if n.holder != nil && n.holder.Process != nil {
		syscall.Kill(-n.holder.Process.Pid, syscall.SIGKILL)
		n.holder.Wait()
	}
	n.spawner.Close()
	n.removeCgroups()
	if os.Getenv("GENIE_KUBENODE_KEEP") == "1" {
		n.opts.Logf("kubenode: keeping %s", n.Dir)
		return
	}
	// The overlays' work dirs hold root-only entries; RemoveAll copes.
	os.RemoveAll(n.Dir)
}

// killCgroupTree SIGKILLs every process in kubelet's cgroupRoot (the
// pods' containers) and waits for them to go.
func (n *Node) killCgroupTree() {
	root := filepath.Join("/sys/fs/cgroup/pids", n.cgroupRoot)
	for range 50 {
		pids := cgroupPIDs(root)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func cgroupPIDs(root string) []int {
	var pids []int
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == "cgroup.procs" {
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
		}
		return nil
	})
	return pids
}

// killOwned SIGKILLs processes whose command line names this node's dir
// (containerd's shims, started by containerd with our socket path).
func (n *Node) killOwned() {
	for range 50 {
		found := false
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == n.holderPID {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil || !strings.Contains(string(b), n.Dir) || !strings.Contains(string(b), "containerd-shim") {
				continue
			}
			found = true
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if !found {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroups removes the cgroupRoot trees, deepest first.
func (n *Node) removeCgroups() {
	ctrls, _ := filepath.Glob("/sys/fs/cgroup/*/" + n.cgroupRoot)
	for _, c := range ctrls {
		var dirs []string
		filepath.Walk(c, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			for try := 0; try < 20; try++ {
				if err := syscall.Rmdir(dirs[i]); err == nil || errors.Is(err, syscall.ENOENT) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
}

// spawn starts a component from the bin dir inside the node, logging to
// logs/<name>.log.
func (n *Node) spawn(name string, args ...string) (*proc.Proc, error) {
	if err := os.MkdirAll(n.path("logs"), 0o755); err != nil {
		return nil, err
	}
	cmd := n.nsenterCmd("env", append([]string{"PATH=" + n.opts.BinDir + ":/usr/sbin:/usr/bin:/sbin:/bin", n.bin(name)}, args...)...)
	p, err := n.spawner.Start(name, cmd, n.path("logs", name+".log"))
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.procs[name] = p
	n.mu.Unlock()
	return p, nil
}
