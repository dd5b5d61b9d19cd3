package genie

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cni-genie/cni-genie/pkg/kube"
	"github.com/cni-genie/cni-genie/pkg/qos"
	"github.com/cni-genie/cni-genie/pkg/selection"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Selection sources, in precedence order.
const (
	SourceNPWG    = "npwg"
	SourceClassic = "cni-annotation"
	SourceArgs    = "cni-args"
	SourceDefault = "default"
)

// podArgs are the CNI_ARGS keys genie reads (decoded by the CNI library).
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_UID                types.UnmarshallableString //nolint:revive // CNI_ARGS key
	GENIE_NETWORKS             types.UnmarshallableString //nolint:revive // CNI_ARGS key
	GENIE_QOS                  types.UnmarshallableString //nolint:revive // CNI_ARGS key (qos.EnvArgClass)
	GENIE_EGRESS_BANDWIDTH     types.UnmarshallableString //nolint:revive // CNI_ARGS key (qos.EnvArgEgress)
	GENIE_INGRESS_BANDWIDTH    types.UnmarshallableString //nolint:revive // CNI_ARGS key (qos.EnvArgIngress)
	GENIE_LABELS               types.UnmarshallableString //nolint:revive // CNI_ARGS key (labels.go)
}

func loadPodArgs(s string) (*podArgs, error) {
	a := &podArgs{}
	a.IgnoreUnknown = true
	if err := types.LoadArgs(s, a); err != nil {
		return nil, fmt.Errorf("parsing CNI_ARGS: %w", err)
	}
	return a, nil
}

// delegateArgs are the CNI_ARGS pairs passed on to delegates: all of the
// runtime's, minus genie's own selection key (host-local and others refuse
// unknown keys unless IgnoreUnknown is set).
func delegateArgs(s string) [][2]string {
	var out [][2]string
	for _, pair := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == selection.ArgsKey || k == qos.EnvArgClass || k == qos.EnvArgEgress || k == qos.EnvArgIngress {
			continue
		}
		out = append(out, [2]string{k, v})
	}
	return out
}

// planned is one resolved, named attachment.
type planned struct {
	selection.Attachment
	Network *Network
	// Label is the selection as reported in network-status.
	Label string
}

// invocation carries what every verb needs.
type invocation struct {
	conf  *NetConf
	args  *skel.CmdArgs
	log   *slog.Logger
	cni   *libcni.CNIConfig
	store store
	pod   *podArgs
	kube  *kube.Client
	// podObj is the pod's metadata, read at ADD (Kubernetes mode only).
	podObj *metav1.PartialObjectMetadata
	// start is when the verb began (after process start-up), for logs.
	start time.Time
}

func newInvocation(conf *NetConf, args *skel.CmdArgs, log *slog.Logger) (*invocation, error) {
	pa, err := loadPodArgs(args.Args)
	if err != nil {
		return nil, err
	}
	return &invocation{
		start: time.Now(),
		conf:  conf,
		args:  args,
		log:   log,
		cni:   libcni.NewCNIConfigWithCacheDir(conf.binPaths(), cacheDir(conf), nil),
		store: store{dir: conf.StateDir},
		pod:   pa,
	}, nil
}

// inKubernetes reports whether the selection comes from the pod object.
func (inv *invocation) inKubernetes() bool {
	return inv.pod.K8S_POD_NAME != "" && inv.conf.Kubeconfig != ""
}

// stepError is a CNI error naming the step (and network, when known).
// A *types.Error inside err keeps its code; else code is used.
func stepError(code uint, step string, err error) *types.Error {
	var te *types.Error
	if errors.As(err, &te) && te.Code != 0 {
		code = te.Code
	}
	return &types.Error{Code: code, Msg: step + ": " + err.Error()}
}

// resolve reads the selection, resolves every network and plans interface
// names. It has no side effect on the pod: bad input fails here.
func (inv *invocation) resolve(ctx context.Context) ([]planned, string, error) {
	cd, err := loadConfDir(inv.conf.ConfDir, inv.log)
	if err != nil {
		return nil, "", stepError(types.ErrIOFailure, "load conf dir", err)
	}
	var (
		elems  []selection.Element
		source = SourceDefault
		ns     = string(inv.pod.K8S_POD_NAMESPACE)
	)
	if inv.inKubernetes() {
		kc, err := kube.NewFromKubeconfig(inv.conf.Kubeconfig)
		if err != nil {
			return nil, "", stepError(types.ErrInvalidNetworkConfig, "kubernetes client", err)
		}
		inv.kube = kc
		pod, err := kc.GetPod(ctx, ns, string(inv.pod.K8S_POD_NAME))
		if err != nil {
			return nil, "", stepError(types.ErrTryAgainLater, "read pod", err)
		}
		inv.podObj = pod
		if v := strings.TrimSpace(pod.Annotations[selection.NetworksAnnotation]); v != "" {
			source = SourceNPWG
			if elems, err = selection.ParseNetworks(v); err != nil {
				return nil, "", stepError(types.ErrDecodingFailure, "parse annotation "+selection.NetworksAnnotation, err)
			}
		} else if v := strings.TrimSpace(pod.Annotations[selection.ClassicAnnotation]); v != "" {
			source = SourceClassic
			if elems, err = selection.ParseClassic(v); err != nil {
				return nil, "", stepError(types.ErrDecodingFailure, "parse annotation "+selection.ClassicAnnotation, err)
			}
		}
	} else if v := strings.TrimSpace(string(inv.pod.GENIE_NETWORKS)); v != "" {
		source = SourceArgs
		if elems, err = selection.ParseClassic(v); err != nil {
			return nil, "", stepError(types.ErrInvalidEnvironmentVariables, "parse CNI_ARGS "+selection.ArgsKey, err)
		}
	}

	var nets []*Network
	var labels []string
	// NPWG selections add to the default network(s); the classic and
	// CNI_ARGS forms replace them.
	if source == SourceDefault || source == SourceNPWG {
		defs, err := cd.defaults(inv.conf.DefaultNetworks)
		if err != nil {
			return nil, "", stepError(types.ErrInvalidNetworkConfig, "resolve default network", err)
		}
		defElems := make([]selection.Element, len(defs))
		for i, d := range defs {
			defElems[i].Name = d.Name
			nets = append(nets, d)
			labels = append(labels, d.Name)
		}
		elems = append(defElems, elems...)
	}
	for i := len(nets); i < len(elems); i++ {
		e := &elems[i]
		n, label, err := inv.resolveElement(ctx, cd, e, source, ns)
		if err != nil {
			return nil, "", stepError(types.ErrInvalidNetworkConfig, fmt.Sprintf("resolve network %q", e.String()), err)
		}
		nets = append(nets, n)
		labels = append(labels, label)
	}

	plan, err := selection.Plan(inv.args.IfName, elems)
	if err != nil {
		return nil, "", stepError(types.ErrInvalidNetworkConfig, "plan", err)
	}
	out := make([]planned, len(plan))
	for i := range plan {
		out[i] = planned{Attachment: plan[i], Network: nets[i], Label: labels[i]}
		if err := inv.preflight(&out[i]); err != nil {
			return nil, "", stepError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("network %q (%s)", out[i].Label, out[i].IfName), err)
		}
	}
	return out, source, nil
}

func (inv *invocation) resolveElement(ctx context.Context, cd *confDir, e *selection.Element, source, podNS string) (*Network, string, error) {
	if e.IsVPC() {
		return vpcNetwork(e.VPC, e.Subnet), e.Name, nil
	}
	if source != SourceNPWG {
		n, err := cd.lookup(e.Name)
		return n, e.Name, err
	}
	ns := e.Namespace
	if ns == "" {
		ns = podNS
	}
	label := ns + "/" + e.Name
	nad, err := inv.kube.GetNAD(ctx, ns, e.Name)
	if err != nil {
		if kube.IsNotFound(err) {
			return nil, label, fmt.Errorf("unknown network: %w", err)
		}
		return nil, label, err
	}
	if strings.TrimSpace(nad.Spec.Config) == "" {
		if n := cd.byName(e.Name); n != nil {
			return n, label, nil
		}
		return nil, label, fmt.Errorf("network-attachment-definition %s has no spec.config and conf dir %s has no network named %q", label, cd.dir, e.Name)
	}
	n, err := ParseNetwork([]byte(nad.Spec.Config), e.Name, "network-attachment-definition "+label)
	return n, label, err
}

// preflight checks what can be checked before anything is attached: names
// libcni will refuse and missing plugin binaries.
func (inv *invocation) preflight(p *planned) error {
	if err := utils.ValidateInterfaceName(p.IfName); err != nil {
		return fmt.Errorf("interface name: %s", err.Msg)
	}
	if p.Network.IsVPC() {
		return nil
	}
	if err := utils.ValidateNetworkName(p.Network.Name); err != nil {
		return fmt.Errorf("network name: %s", err.Msg)
	}
	for _, pl := range p.Network.List.Plugins {
		if _, err := invoke.FindInPath(pl.Network.Type, inv.conf.binPaths()); err != nil {
			return fmt.Errorf("missing plugin binary: %w", err)
		}
		if ipam := pl.Network.IPAM.Type; ipam != "" {
			if _, err := invoke.FindInPath(ipam, inv.conf.binPaths()); err != nil {
				return fmt.Errorf("missing ipam plugin binary: %w", err)
			}
		}
	}
	return nil
}

// binariesPresent reports whether every plugin of n is installed.
func (inv *invocation) binariesPresent(n *Network) bool {
	for _, pl := range n.List.Plugins {
		if _, err := invoke.FindInPath(pl.Network.Type, inv.conf.binPaths()); err != nil {
			return false
		}
	}
	return true
}

// recordNetwork turns a planned attachment into its record entry: the exact
// config and runtimeConfig the delegate gets.
func (inv *invocation) recordNetwork(i int, p *planned) (RecordNetwork, error) {
	rn := RecordNetwork{
		Name: p.Network.Name, Selection: p.Label, IfName: p.IfName, Default: p.Default,
		VPC: p.Network.VPC, Subnet: p.Network.Subnet,
		IPs: p.IPRequest, MAC: p.MacRequest,
	}
	for _, gw := range p.GatewayRequest {
		rn.DefaultRoute = append(rn.DefaultRoute, gw.String())
	}
	if p.Network.IsVPC() {
		var err error
		rn.QoS, err = inv.vpcQoS(i, p)
		return rn, err
	}
	caps := map[string]any{}
	if i == 0 {
		// The runtime's capability arguments belong to the default network.
		for k, v := range inv.conf.RuntimeConfig {
			caps[k] = v
		}
	}
	if len(p.IPRequest) > 0 {
		caps["ips"] = p.IPRequest
	}
	if p.MacRequest != "" {
		caps["mac"] = p.MacRequest
	}
	if p.BandwidthRequest != nil {
		caps["bandwidth"] = p.BandwidthRequest
	}
	if p.InfinibandGUIDRequest != "" {
		caps["infinibandGUID"] = p.InfinibandGUIDRequest
	}
	if len(p.PortMappingsRequest) > 0 {
		caps["portMappings"] = p.PortMappingsRequest
	}
	declared := map[string]bool{}
	for _, pl := range p.Network.List.Plugins {
		for c, ok := range pl.Network.Capabilities {
			declared[c] = declared[c] || ok
		}
	}
	for c := range caps {
		if !declared[c] && i != 0 {
			inv.log.Warn("delegate does not declare capability; request dropped", "network", p.Label, "capability", c)
		}
	}
	if len(caps) > 0 {
		rn.CapabilityArgs = caps
	}
	cfg := p.Network.List.Bytes
	if p.CNIArgs != nil && len(*p.CNIArgs) > 0 {
		var err error
		if cfg, err = injectCNIArgs(cfg, *p.CNIArgs); err != nil {
			return rn, fmt.Errorf("injecting cni-args: %w", err)
		}
	}
	rn.Config = cfg
	return rn, nil
}
