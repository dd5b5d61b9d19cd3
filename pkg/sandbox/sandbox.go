package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Defaults of Options.
const (
	DefaultName      = "genie"
	DefaultNodes     = 3
	DefaultStateRoot = "/run/genie-sandbox"
	DefaultBPFRoot   = "/sys/fs/bpf"
	// MaxNodes bounds Options.Nodes (one underlay /24).
	MaxNodes = 200
	// NodeUplink is the name of every node's underlay interface.
	NodeUplink = "eth0"
	// AgentMetricsAddr is where each node's genied serves metrics, inside
	// the node's namespace.
	AgentMetricsAddr = "127.0.0.1:9465"
)

// UnderlayPrefix is the fabric's private address range. It exists only
// inside the sandbox's own namespaces; node i (1-based) is .10+i.
var UnderlayPrefix = netip.MustParsePrefix("172.30.0.0/24")

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$`)

// ValidateName checks a sandbox or pod name: a DNS-1123 label of at most 20
// characters (names end up in netns and bpffs paths).
func ValidateName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%s name %q: want 1-20 lowercase letters, digits or '-', starting and ending alphanumeric", kind, name)
	}
	return nil
}

// Options configures Up.
type Options struct {
	// Name identifies the sandbox; several may run side by side.
	Name string
	// Nodes is the number of node namespaces (default 3).
	Nodes int
	// BinDir holds genie, genied and geniectl (default: the directory of
	// the running executable).
	BinDir string
	// CNIBinDir holds the reference plugins (bridge, host-local, ...);
	// default $GENIE_TEST_CNI_BINDIR.
	CNIBinDir string
	// StateRoot is the parent of every sandbox's state dir (default
	// /run/genie-sandbox).
	StateRoot string
	// BPFRoot is the bpffs mount (default /sys/fs/bpf).
	BPFRoot string
	// NoAgents builds the fabric, the nodes and the store but starts no
	// genied: enough for underlay and reference-plugin baselines.
	NoAgents bool
	// AgentArgs are extra genied flags.
	AgentArgs []string
	// Underlay is the underlay topology: UnderlayFlat (default, one L2
	// segment) or UnderlayRouted (segments joined by a router).
	Underlay string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

func (o *Options) defaults() error {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if err := ValidateName("sandbox", o.Name); err != nil {
		return err
	}
	if o.Nodes == 0 {
		o.Nodes = DefaultNodes
	}
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		return fmt.Errorf("sandbox %q: %d nodes: want 1 to %d", o.Name, o.Nodes, MaxNodes)
	}
	if o.Underlay == "" {
		o.Underlay = UnderlayFlat
	}
	if err := validateUnderlay(o.Underlay); err != nil {
		return fmt.Errorf("sandbox %q: %w", o.Name, err)
	}
	if o.StateRoot == "" {
		o.StateRoot = DefaultStateRoot
	}
	if o.BPFRoot == "" {
		o.BPFRoot = DefaultBPFRoot
	}
	if o.BinDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("sandbox %q: finding binaries: %w", o.Name, err)
		}
		o.BinDir = filepath.Dir(exe)
	}
	if o.CNIBinDir == "" {
		o.CNIBinDir = os.Getenv("GENIE_TEST_CNI_BINDIR")
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	// Processes started elsewhere (agents, genie) must find these.
	var err error
	if o.BinDir, err = filepath.Abs(o.BinDir); err != nil {
		return fmt.Errorf("sandbox %q: bin dir: %w", o.Name, err)
	}
	if o.CNIBinDir != "" {
		var dirs []string
		for _, d := range filepath.SplitList(o.CNIBinDir) {
			if d, err = filepath.Abs(d); err != nil {
				return fmt.Errorf("sandbox %q: cni bin dir: %w", o.Name, err)
			}
			dirs = append(dirs, d)
		}
		o.CNIBinDir = strings.Join(dirs, string(filepath.ListSeparator))
	}
	return nil
}

// Node is one virtual node: a namespace with an uplink on the fabric.
type Node struct {
	// Name is "node1", "node2", ...
	Name string `json:"name"`
	// Netns is the node namespace's path.
	Netns string `json:"netns"`
	// UnderlayIP is the address of the node's eth0 on the fabric.
	UnderlayIP netip.Addr `json:"underlayIP"`
	// Socket, PinDir, StateDir and LogFile are the agent's.
	Socket   string `json:"socket"`
	PinDir   string `json:"pinDir"`
	StateDir string `json:"stateDir"`
	LogFile  string `json:"logFile"`
	// AgentPID is genied's process id (0: not started).
	AgentPID int `json:"agentPID,omitempty"`
}

// PodInterface is one interface of a pod, from its CNI result.
type PodInterface struct {
	Name string `json:"name"`
	MAC  string `json:"mac,omitempty"`
	// Network is the selection element that created it ("vpc:blue/web"),
	// when known.
	Network string `json:"network,omitempty"`
	// VPC and Subnet are set for overlay interfaces.
	VPC    string `json:"vpc,omitempty"`
	Subnet string `json:"subnet,omitempty"`
	// IPs are the interface's addresses in CIDR form.
	IPs []netip.Prefix `json:"ips,omitempty"`
}

// Pod is a pod namespace attached through a CNI plugin.
type Pod struct {
	Name        string `json:"name"`
	Node        string `json:"node"`
	Netns       string `json:"netns"`
	ContainerID string `json:"containerID"`
	// Nets are the networks asked for ("blue/web@eth1").
	Nets []string `json:"nets,omitempty"`
	// ConfList is the CNI configuration list the pod was attached with;
	// DEL uses the same one. Empty for hand-wired pods.
	ConfList json.RawMessage `json:"confList,omitempty"`
	// Args are the CNI_ARGS of the attachment.
	Args [][2]string `json:"args,omitempty"`
	// IfName is CNI_IFNAME of the attachment.
	IfName     string          `json:"ifName,omitempty"`
	Interfaces []*PodInterface `json:"interfaces,omitempty"`
	// QoS is what the pod was added with (PodQoS.String: the class and
	// limits it asked for; the effective ones, with the VPC's default, are
	// on its store endpoints).
	QoS string `json:"qos,omitempty"`
}

// IP returns the first IPv4 address of the pod's interface ifname ("" =
// the first interface with one).
func (p *Pod) IP(ifname string) (netip.Addr, bool) {
	for _, i := range p.Interfaces {
		if ifname != "" && i.Name != ifname {
			continue
		}
		for _, a := range i.IPs {
			if a.Addr().Is4() {
				return a.Addr(), true
			}
		}
	}
	return netip.Addr{}, false
}

// state is what sandbox.json holds.
type state struct {
	Name          string    `json:"name"`
	Created       time.Time `json:"created"`
	BinDir        string    `json:"binDir"`
	CNIBinDir     string    `json:"cniBinDir"`
	StoreEndpoint string    `json:"storeEndpoint"`
	StorePID      int       `json:"storePID,omitempty"`
	Fabric        string    `json:"fabric"`
	// Underlay is Options.Underlay; Router the router namespace's path
	// (routed only).
	Underlay string          `json:"underlay,omitempty"`
	Router   string          `json:"router,omitempty"`
	Nodes    []*Node         `json:"nodes"`
	Pods     map[string]*Pod `json:"pods"`
	// AgentArgs are the extra genied flags of Options, kept so that
	// RestartAgent starts the agent with them again.
	AgentArgs []string `json:"agentArgs,omitempty"`
}

// Sandbox is a handle on a running sandbox. Its methods may be called from
// several processes at once (the CLI, tests): each mutation reloads and
// saves the state file under an exclusive lock.
type Sandbox struct {
	dir     string
	pinRoot string
	log     io.Writer
	st      state
	// children are processes started by this process, reaped when they
	// exit so killed agents leave no zombie behind in long-lived callers.
	children map[int]chan struct{}
	// ext is the external namespace, once AddExternal built it (external.go).
	ext *External
}

// Name returns the sandbox's name.
func (s *Sandbox) Name() string { return s.st.Name }

// Dir returns the sandbox's state directory.
func (s *Sandbox) Dir() string { return s.dir }

// StoreEndpoint returns the etcd endpoint ("unix:///...") of the sandbox's store.
func (s *Sandbox) StoreEndpoint() string { return s.st.StoreEndpoint }

// FabricNetns returns the path of the fabric namespace.
func (s *Sandbox) FabricNetns() string { return s.st.Fabric }

// Nodes returns the nodes in order.
func (s *Sandbox) Nodes() []*Node { return s.st.Nodes }

// Pods returns the pods sorted by name.
func (s *Sandbox) Pods() []*Pod {
	out := make([]*Pod, 0, len(s.st.Pods))
	for _, p := range s.st.Pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Pod returns the named pod.
func (s *Sandbox) Pod(name string) (*Pod, error) {
	p, ok := s.st.Pods[name]
	if !ok {
		return nil, fmt.Errorf("sandbox %q: pod %q not found", s.st.Name, name)
	}
	return p, nil
}

// Node resolves a node by name ("node2") or 1-based index ("2").
func (s *Sandbox) Node(ref string) (*Node, error) {
	if i, err := strconv.Atoi(ref); err == nil {
		if i < 1 || i > len(s.st.Nodes) {
			return nil, fmt.Errorf("sandbox %q: node %d: want 1 to %d", s.st.Name, i, len(s.st.Nodes))
		}
		return s.st.Nodes[i-1], nil
	}
	for _, n := range s.st.Nodes {
		if n.Name == ref {
			return n, nil
		}
	}
	return nil, fmt.Errorf("sandbox %q: node %q not found", s.st.Name, ref)
}

// nsPrefix is the prefix of every namespace of sandbox name. The dot
// cannot appear in a name, so "a" never matches the namespaces of "a-b".
func nsPrefix(name string) string { return "gsb." + name + "." }

func stateDir(root, name string) string { return filepath.Join(root, name) }
func pinRoot(bpfRoot, name string) string {
	return filepath.Join(bpfRoot, "genie-sb-"+name)
}

// Up builds a sandbox: the fabric namespace with the underlay bridge, the
// node namespaces, the store process and one genied per node. On failure
// it tears down what it built.
func Up(ctx context.Context, opts Options) (_ *Sandbox, err error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("sandbox %q: needs root (network namespaces and bpffs)", opts.Name)
	}
	if !opts.NoAgents {
		if err := CheckBPFFS(opts.BPFRoot); err != nil {
			return nil, fmt.Errorf("sandbox %q: %w", opts.Name, err)
		}
	}
	dir := stateDir(opts.StateRoot, opts.Name)
	if _, err := os.Stat(dir); err == nil {
		return nil, fmt.Errorf("sandbox %q is already up (state in %s); run down first", opts.Name, dir)
	}
	if left, _ := listNetns(nsPrefix(opts.Name)); len(left) > 0 {
		return nil, fmt.Errorf("sandbox %q: leftover namespaces %v; run down first", opts.Name, left)
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return nil, fmt.Errorf("sandbox %q: nsenter not found (install util-linux): %w", opts.Name, err)
	}
	bins := []string{"geniectl"}
	if !opts.NoAgents {
		bins = append(bins, "genie", "genied")
	}
	for _, b := range bins {
		if _, err := os.Stat(filepath.Join(opts.BinDir, b)); err != nil {
			return nil, fmt.Errorf("sandbox %q: binary %s not found in %s (build with make build, or pass --bin-dir)", opts.Name, b, opts.BinDir)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sandbox %q: state dir: %w", opts.Name, err)
	}
	s := &Sandbox{dir: dir, pinRoot: pinRoot(opts.BPFRoot, opts.Name), log: opts.Log, children: map[int]chan struct{}{}}
	s.st = state{Name: opts.Name, Created: time.Now().UTC(), BinDir: opts.BinDir, CNIBinDir: opts.CNIBinDir, Pods: map[string]*Pod{},
		AgentArgs: opts.AgentArgs, Underlay: opts.Underlay}
	defer func() {
		if err != nil {
			fmt.Fprintf(opts.Log, "up failed, tearing down: %v\n", err)
			s.Down(context.Background())
		}
	}()
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()

	fmt.Fprintf(s.log, "creating %s fabric and %d nodes\n", opts.Underlay, opts.Nodes)
	if err := s.buildFabric(opts.Nodes); err != nil {
		return nil, err
	}
	if err := s.save(); err != nil {
		return nil, err
	}
	fmt.Fprintf(s.log, "starting store\n")
	if err := s.startStore(ctx); err != nil {
		return nil, err
	}
	if err := s.save(); err != nil {
		return nil, err
	}
	if !opts.NoAgents {
		for _, n := range s.st.Nodes {
			if err := s.startAgent(n, opts.AgentArgs); err != nil {
				return nil, err
			}
			if err := s.save(); err != nil {
				return nil, err
			}
		}
		for _, n := range s.st.Nodes {
			fmt.Fprintf(s.log, "waiting for genied on %s\n", n.Name)
			if err := s.waitAgent(ctx, n); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

func (s *Sandbox) buildFabric(nodes int) error {
	prefix := nsPrefix(s.st.Name)
	fabric, err := createNetns(prefix + "fabric")
	if err != nil {
		return err
	}
	s.st.Fabric = fabric
	if err := addBridge(fabric, "br0"); err != nil {
		return fmt.Errorf("sandbox %q: fabric: %w", s.st.Name, err)
	}
	if s.st.Underlay == UnderlayRouted {
		if err := s.buildRouter(); err != nil {
			return err
		}
	}
	for i := 1; i <= nodes; i++ {
		name := fmt.Sprintf("node%d", i)
		path, err := createNetns(prefix + name)
		if err != nil {
			return err
		}
		ndir := filepath.Join(s.dir, name)
		seg := s.nodeSegment(i)
		n := &Node{
			Name:       name,
			Netns:      path,
			UnderlayIP: nthAddr(segmentPrefix(seg), 10+i),
			Socket:     filepath.Join(ndir, "agent.sock"),
			PinDir:     filepath.Join(s.pinRoot, name),
			StateDir:   filepath.Join(ndir, "state"),
			LogFile:    filepath.Join(ndir, "genied.log"),
		}
		s.st.Nodes = append(s.st.Nodes, n)
		if err := os.MkdirAll(n.StateDir, 0o755); err != nil {
			return fmt.Errorf("node %s: %w", name, err)
		}
		port := fmt.Sprintf("p%d", i)
		if err := vethBetween(fabric, port, path, NodeUplink, 0); err != nil {
			return fmt.Errorf("node %s: uplink: %w", name, err)
		}
		if err := setMaster(fabric, port, fmt.Sprintf("br%d", seg)); err != nil {
			return fmt.Errorf("node %s: uplink: %w", name, err)
		}
		cidr := netip.PrefixFrom(n.UnderlayIP, UnderlayPrefix.Bits()).String()
		if err := addAddr(path, NodeUplink, cidr); err != nil {
			return fmt.Errorf("node %s: uplink: %w", name, err)
		}
		if s.st.Underlay == UnderlayRouted {
			if err := s.routeViaRouter(n, seg); err != nil {
				return err
			}
		}
	}
	return nil
}

func nthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Open returns a handle on the running sandbox name under stateRoot
// ("" = DefaultStateRoot).
func Open(stateRoot, name string) (*Sandbox, error) {
	if stateRoot == "" {
		stateRoot = DefaultStateRoot
	}
	if err := ValidateName("sandbox", name); err != nil {
		return nil, err
	}
	s := &Sandbox{dir: stateDir(stateRoot, name), log: io.Discard, children: map[int]chan struct{}{}}
	if err := s.load(); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("sandbox %q is not up (no state in %s)", name, s.dir)
		}
		return nil, err
	}
	if len(s.st.Nodes) > 0 {
		s.pinRoot = filepath.Dir(s.st.Nodes[0].PinDir)
	} else {
		s.pinRoot = pinRoot(DefaultBPFRoot, name)
	}
	return s, nil
}

// SetLog directs progress lines to w.
func (s *Sandbox) SetLog(w io.Writer) {
	if w == nil {
		w = io.Discard
	}
	s.log = w
}

// List returns the names of the sandboxes with state under stateRoot.
func List(stateRoot string) ([]string, error) {
	if stateRoot == "" {
		stateRoot = DefaultStateRoot
	}
	ents, err := os.ReadDir(stateRoot)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	var out []string
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(stateRoot, e.Name(), "sandbox.json")); err == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func (s *Sandbox) statePath() string { return filepath.Join(s.dir, "sandbox.json") }

func (s *Sandbox) load() error {
	data, err := os.ReadFile(s.statePath())
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("sandbox state %s: %w", s.statePath(), err)
	}
	if st.Pods == nil {
		st.Pods = map[string]*Pod{}
	}
	s.st = st
	return nil
}

func (s *Sandbox) save() error {
	data, err := json.MarshalIndent(&s.st, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding sandbox state: %w", err)
	}
	tmp := s.statePath() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("writing sandbox state: %w", err)
	}
	if err := os.Rename(tmp, s.statePath()); err != nil {
		return fmt.Errorf("writing sandbox state: %w", err)
	}
	return nil
}

// lock takes the sandbox's exclusive lock (a flock on a file in its state
// dir) and reloads the state if it exists.
func (s *Sandbox) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("sandbox %q: lock: %w", s.st.Name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("sandbox %q: lock: %w", s.st.Name, err)
	}
	if _, err := os.Stat(s.statePath()); err == nil {
		if err := s.load(); err != nil {
			f.Close()
			return nil, err
		}
	}
	return func() { f.Close() }, nil
}

// NodeStatus is one node's row in Status.
type NodeStatus struct {
	Node       *Node
	AgentAlive bool
	// AgentReady is the agent's own readiness over its socket.
	AgentReady bool
	Message    string
}

// Status is a snapshot of a sandbox.
type Status struct {
	Name          string
	Dir           string
	StoreEndpoint string
	StoreAlive    bool
	Nodes         []NodeStatus
	Pods          []*Pod
}

// Status reports the liveness of the store and the agents, and the pods.
func (s *Sandbox) Status(ctx context.Context) (*Status, error) {
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("sandbox %q: %w", s.st.Name, err)
	}
	st := &Status{Name: s.st.Name, Dir: s.dir, StoreEndpoint: s.st.StoreEndpoint,
		StoreAlive: processAlive(s.st.StorePID), Pods: s.Pods()}
	for _, n := range s.st.Nodes {
		ns := NodeStatus{Node: n, AgentAlive: processAlive(n.AgentPID)}
		if ns.AgentAlive {
			r, err := agentStatus(ctx, n.Socket)
			if err != nil {
				ns.Message = err.Error()
			} else {
				ns.AgentReady, ns.Message = r.Ready, r.Message
			}
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st, nil
}

// sortedKeys is a helper for stable output.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// CheckBPFFS reports an error unless path is a mounted bpffs.
func CheckBPFFS(path string) error {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(path, &fs); err != nil {
		return fmt.Errorf("bpffs %s: %w", path, err)
	}
	const bpfFSMagic = 0xcafe4a11
	if fs.Type != bpfFSMagic {
		return fmt.Errorf("bpffs is not mounted at %s (run: mount -t bpf bpf %s, or make deps)", path, path)
	}
	return nil
}
