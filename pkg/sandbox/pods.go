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
	"strings"
	"time"

	"github.com/cni-genie/cni-genie/pkg/selection"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// CNIVersion is the spec version the sandbox's runtime speaks.
const CNIVersion = "1.1.0"

// PodIfName is CNI_IFNAME of every attachment, as a runtime passes it; a
// selection element without @ifname gets it if first, net1, net2... after.
const PodIfName = "eth0"

func podNetnsName(sandbox, pod string) string { return nsPrefix(sandbox) + "pod." + pod }

// GenieNetworks turns sandbox network flags ("blue/web@eth1") into the
// GENIE_NETWORKS value ("vpc:blue/web@eth1"). Elements without a '/' or
// already prefixed with "vpc:" are passed through, so delegate networks
// can be mixed in.
func GenieNetworks(nets []string) (string, error) {
	out := make([]string, 0, len(nets))
	for _, n := range nets {
		n = strings.TrimSpace(n)
		if n == "" {
			return "", fmt.Errorf("empty network")
		}
		if strings.ContainsAny(n, ",;=") {
			return "", fmt.Errorf("network %q: ',', ';' and '=' are not allowed", n)
		}
		if strings.Contains(n, "/") && !strings.HasPrefix(n, "vpc:") {
			n = "vpc:" + n
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return "", fmt.Errorf("no network given")
	}
	return strings.Join(out, ","), nil
}

// genieConfList is the configuration a runtime on node n would hand genie.
func (s *Sandbox) genieConfList(n *Node) ([]byte, error) {
	ndir := filepath.Join(s.dir, n.Name)
	confDir, err := s.delegateConfDir()
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{
		"cniVersion": CNIVersion,
		"name":       "genie-sandbox",
		"plugins": []map[string]any{{
			"type":        "genie",
			"confDir":     confDir,
			"stateDir":    filepath.Join(ndir, "genie"),
			"logFile":     filepath.Join(ndir, "genie.log"),
			"logLevel":    "info",
			"agentSocket": n.Socket,
		}},
	})
}

// DelegateNetwork is the plain CNI network every sandbox offers next to
// the VPCs, for pods that mix overlay and delegated interfaces: the
// reference bridge plugin on a per-node bridge with host-local IPAM
// (10.88.<node>.0/24, so node-local only). Select it like any delegate,
// e.g. --net blue/web --net sandbox-bridge@net9.
const DelegateNetwork = "sandbox-bridge"

// delegateConfDir writes genie's delegate conf dir (once) and returns it.
// The bridge lives in each node's namespace; host-local's data dir is
// shared, so addresses are unique across the sandbox.
func (s *Sandbox) delegateConfDir() (string, error) {
	dir := filepath.Join(s.dir, "net.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	f := filepath.Join(dir, "10-"+DelegateNetwork+".conflist")
	if _, err := os.Stat(f); err == nil {
		return dir, nil
	}
	conf, err := json.MarshalIndent(map[string]any{
		"cniVersion": CNIVersion,
		"name":       DelegateNetwork,
		"plugins": []map[string]any{{
			"type":      "bridge",
			"bridge":    "sb-br0",
			"isGateway": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": "10.88.0.0/24"}}},
				"dataDir": filepath.Join(s.dir, "host-local-delegate"),
			},
		}},
	}, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(f, conf, 0o644); err != nil {
		return "", fmt.Errorf("writing delegate network conf: %w", err)
	}
	return dir, nil
}

// cniConfig returns libcni's handle: genie first in CNI_PATH, then the
// reference plugins, with the result cache in the sandbox's state dir.
func (s *Sandbox) cniConfig() *libcni.CNIConfig {
	path := []string{s.st.BinDir}
	if s.st.CNIBinDir != "" {
		path = append(path, filepath.SplitList(s.st.CNIBinDir)...)
	}
	return libcni.NewCNIConfigWithCacheDir(path, filepath.Join(s.dir, "cni-cache"), nil)
}

// PodAdd creates pod name on node (a name or 1-based index) and attaches
// it to nets ("vpc/subnet[@ifname]", first is the default) through the
// real genie binary, called from inside the node's namespace with CNI env
// and stdin config exactly as a runtime would.
func (s *Sandbox) PodAdd(ctx context.Context, name, node string, nets []string) (*Pod, error) {
	return s.podAdd(ctx, name, node, nets, nil, "")
}

// podAdd is PodAdd with extra CNI_ARGS and the pod's QoS label.
func (s *Sandbox) podAdd(ctx context.Context, name, node string, nets []string, extra [][2]string, qosLabel string) (*Pod, error) {
	sel, err := GenieNetworks(nets)
	if err != nil {
		return nil, fmt.Errorf("pod %q: %w", name, err)
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	n, err := s.Node(node)
	if err != nil {
		return nil, fmt.Errorf("pod %q: %w", name, err)
	}
	conf, err := s.genieConfList(n)
	if err != nil {
		return nil, fmt.Errorf("pod %q: %w", name, err)
	}
	args := [][2]string{{"IgnoreUnknown", "1"}, {"GENIE_NETWORKS", sel}}
	args = append(args, extra...)
	p, err := s.podAddLocked(ctx, name, n, conf, args)
	if err != nil {
		return nil, err
	}
	p.Nets, p.QoS = nets, qosLabel
	labelInterfaces(p, sel)
	return p, s.save()
}

// labelInterfaces records which selection element made each interface,
// planning interface names exactly as genie does.
func labelInterfaces(p *Pod, sel string) {
	elems, err := selection.ParseClassic(sel)
	if err != nil {
		return
	}
	plan, err := selection.Plan(PodIfName, elems)
	if err != nil {
		return
	}
	for _, a := range plan {
		for _, ifc := range p.Interfaces {
			if ifc.Name == a.IfName {
				ifc.Network = a.Element.Name
				if a.Element.IsVPC() {
					ifc.VPC, ifc.Subnet = a.Element.VPC, a.Element.Subnet
				}
			}
		}
	}
}

// PodAddConf creates pod name on node and attaches it with an arbitrary
// CNI configuration list (e.g. the reference bridge plugin), from inside
// the node's namespace. It serves the baselines the overlay is measured
// against.
func (s *Sandbox) PodAddConf(ctx context.Context, name, node string, confList []byte, args [][2]string) (*Pod, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	n, err := s.Node(node)
	if err != nil {
		return nil, fmt.Errorf("pod %q: %w", name, err)
	}
	p, err := s.podAddLocked(ctx, name, n, confList, args)
	if err != nil {
		return nil, err
	}
	return p, s.save()
}

// PodAddBare creates pod name's namespace on node without attaching any
// network: the caller wires it (hand-built baselines). Down deletes it.
func (s *Sandbox) PodAddBare(name, node string) (*Pod, error) {
	if err := ValidateName("pod", name); err != nil {
		return nil, err
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	n, err := s.Node(node)
	if err != nil {
		return nil, fmt.Errorf("pod %q: %w", name, err)
	}
	if _, ok := s.st.Pods[name]; ok {
		return nil, fmt.Errorf("sandbox %q: pod %q already exists", s.st.Name, name)
	}
	path, err := createNetns(podNetnsName(s.st.Name, name))
	if err != nil {
		return nil, fmt.Errorf("pod %q: %w", name, err)
	}
	p := &Pod{Name: name, Node: n.Name, Netns: path, ContainerID: "gsb-" + s.st.Name + "-" + name}
	s.st.Pods[name] = p
	return p, s.save()
}

func (s *Sandbox) podAddLocked(ctx context.Context, name string, n *Node, confList []byte, args [][2]string) (_ *Pod, err error) {
	if err := ValidateName("pod", name); err != nil {
		return nil, err
	}
	if _, ok := s.st.Pods[name]; ok {
		return nil, fmt.Errorf("sandbox %q: pod %q already exists", s.st.Name, name)
	}
	list, err := libcni.ConfListFromBytes(confList)
	if err != nil {
		return nil, fmt.Errorf("pod %q: cni config: %w", name, err)
	}
	path, err := createNetns(podNetnsName(s.st.Name, name))
	if err != nil {
		return nil, fmt.Errorf("pod %q: %w", name, err)
	}
	p := &Pod{Name: name, Node: n.Name, Netns: path, ContainerID: "gsb-" + s.st.Name + "-" + name,
		ConfList: confList, Args: args, IfName: PodIfName}
	defer func() {
		if err != nil {
			deleteNetns(podNetnsName(s.st.Name, name))
		}
	}()
	rt := p.runtimeConf()
	cni := s.cniConfig()
	var res types.Result
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err = inNetns(n.Netns, func() error {
		var err error
		res, err = cni.AddNetworkList(ctx, list, rt)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pod %q on %s: cni add: %w", name, n.Name, err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		inNetns(n.Netns, func() error { return cni.DelNetworkList(context.Background(), list, rt) })
		return nil, fmt.Errorf("pod %q: cni result: %w", name, err)
	}
	p.Interfaces = podInterfaces(cur)
	s.st.Pods[name] = p
	return p, nil
}

func (p *Pod) runtimeConf() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.ContainerID, NetNS: p.Netns, IfName: p.IfName, Args: p.Args}
}

// podInterfaces extracts the pod-side interfaces and their IPs.
func podInterfaces(r *current.Result) []*PodInterface {
	var out []*PodInterface
	byIdx := map[int]*PodInterface{}
	for i, ifc := range r.Interfaces {
		if ifc.Sandbox == "" {
			continue
		}
		pi := &PodInterface{Name: ifc.Name, MAC: ifc.Mac}
		byIdx[i] = pi
		out = append(out, pi)
	}
	for _, ip := range r.IPs {
		if ip.Interface == nil {
			continue
		}
		if pi, ok := byIdx[*ip.Interface]; ok {
			pfx, ok := netip.AddrFromSlice(ip.Address.IP)
			if !ok {
				continue
			}
			bits, _ := ip.Address.Mask.Size()
			pi.IPs = append(pi.IPs, netip.PrefixFrom(pfx.Unmap(), bits))
		}
	}
	return out
}

// PodDel detaches the pod (CNI DEL through the plugin it was attached
// with) and deletes its namespace. A missing pod is an error; a failed DEL
// still removes the namespace and is reported.
func (s *Sandbox) PodDel(ctx context.Context, name string) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	p, ok := s.st.Pods[name]
	if !ok {
		return fmt.Errorf("sandbox %q: pod %q not found", s.st.Name, name)
	}
	err = s.podDelLocked(ctx, p)
	delete(s.st.Pods, name)
	if serr := s.save(); serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

func (s *Sandbox) podDelLocked(ctx context.Context, p *Pod) error {
	var errs []error
	if len(p.ConfList) > 0 {
		list, err := libcni.ConfListFromBytes(p.ConfList)
		if err != nil {
			errs = append(errs, fmt.Errorf("pod %q: cni config: %w", p.Name, err))
		} else {
			n, err := s.Node(p.Node)
			if err != nil {
				errs = append(errs, err)
			} else {
				ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				cni := s.cniConfig()
				if err := inNetns(n.Netns, func() error { return cni.DelNetworkList(ctx, list, p.runtimeConf()) }); err != nil {
					errs = append(errs, fmt.Errorf("pod %q: cni del: %w", p.Name, err))
				}
				cancel()
			}
		}
	}
	if err := deleteNetns(podNetnsName(s.st.Name, p.Name)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Command returns a command that runs argv inside the pod's network
// namespace (through nsenter --net, which keeps the host's /sys).
func (s *Sandbox) Command(ctx context.Context, pod string, argv ...string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("exec in pod %q: no command", pod)
	}
	path, err := s.netnsOf(pod)
	if err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + path, "--"}, argv...)...), nil
}

// Exec runs argv in the pod's (or node's, by node name) network namespace
// with the given stdio.
func (s *Sandbox) Exec(ctx context.Context, pod string, stdin io.Reader, stdout, stderr io.Writer, argv ...string) error {
	cmd, err := s.Command(ctx, pod, argv...)
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("exec in %q: %s: %w", pod, argv[0], err)
	}
	return nil
}

// netnsOf resolves a pod name, or a node name, to its namespace path.
func (s *Sandbox) netnsOf(ref string) (string, error) {
	if p, ok := s.st.Pods[ref]; ok {
		return p.Netns, nil
	}
	for _, n := range s.st.Nodes {
		if n.Name == ref {
			return n.Netns, nil
		}
	}
	return "", fmt.Errorf("sandbox %q: no pod or node %q", s.st.Name, ref)
}

// Netns returns the namespace path of a pod or node by name.
func (s *Sandbox) Netns(ref string) (string, error) { return s.netnsOf(ref) }
