package genie

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// agentTimeout bounds each request to the node agent.
const agentTimeout = 30 * time.Second

// cacheDir is libcni's result cache, private to genie so that GC of a
// delegate network never sees attachments the runtime made directly.
func cacheDir(c *NetConf) string { return filepath.Join(c.StateDir, "cache") }

// injectCNIArgs sets args.cni on every plugin of a conflist (NPWG cni-args).
func injectCNIArgs(list []byte, cniArgs map[string]any) ([]byte, error) {
	raw := map[string]any{}
	if err := json.Unmarshal(list, &raw); err != nil {
		return nil, err
	}
	plugins, _ := raw["plugins"].([]any)
	for _, p := range plugins {
		pm, ok := p.(map[string]any)
		if !ok {
			continue
		}
		args, _ := pm["args"].(map[string]any)
		if args == nil {
			args = map[string]any{}
		}
		cni, _ := args["cni"].(map[string]any)
		if cni == nil {
			cni = map[string]any{}
		}
		for k, v := range cniArgs {
			cni[k] = v
		}
		args["cni"] = cni
		pm["args"] = args
	}
	return json.Marshal(raw)
}

func (inv *invocation) agent() *agentapi.Client {
	return agentapi.NewClient(inv.conf.AgentSocket, agentTimeout)
}

// runtimeConf is what libcni needs to run a delegate of rec.
func runtimeConf(rec *Record, n *RecordNetwork, netns string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID:    rec.ContainerID,
		NetNS:          netns,
		IfName:         n.IfName,
		Args:           rec.Args,
		CapabilityArgs: n.CapabilityArgs,
	}
}

func recordList(n *RecordNetwork) (*libcni.NetworkConfigList, error) {
	l, err := libcni.NetworkConfFromBytes(n.Config)
	if err != nil {
		return nil, fmt.Errorf("recorded config: %w", err)
	}
	return l, nil
}

// attach runs ADD for one network and returns its result as a 1.x result.
func (inv *invocation) attach(ctx context.Context, rec *Record, n *RecordNetwork) (*current.Result, error) {
	if n.IsVPC() {
		req := &agentapi.AttachRequest{
			ContainerID: rec.ContainerID, IfName: n.IfName, Netns: rec.Netns,
			PodNamespace: rec.PodNamespace, PodName: rec.PodName,
			VPC: n.VPC, Subnet: n.Subnet, IPs: n.IPs, MAC: n.MAC,
			DefaultRoute: len(n.DefaultRoute) > 0, DefaultNetwork: n.Default, Labels: inv.podLabels(), QoS: n.QoS,
		}
		return inv.agent().Attach(ctx, req)
	}
	list, err := recordList(n)
	if err != nil {
		return nil, err
	}
	res, err := inv.cni.AddNetworkList(ctx, list, runtimeConf(rec, n, rec.Netns))
	if err != nil {
		return nil, err
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("converting result: %w", err)
	}
	return cur, nil
}

// detach runs DEL for one network; netns may be empty (it is gone).
func (inv *invocation) detach(ctx context.Context, rec *Record, n *RecordNetwork, netns string) error {
	if n.IsVPC() {
		return inv.agent().Detach(ctx, &agentapi.DetachRequest{ContainerID: rec.ContainerID, IfName: n.IfName, Netns: netns})
	}
	list, err := recordList(n)
	if err != nil {
		return err
	}
	return inv.cni.DelNetworkList(ctx, list, runtimeConf(rec, n, netns))
}

// check runs CHECK for one network. Delegates whose config predates CHECK
// (below 0.4.0) are skipped.
func (inv *invocation) check(ctx context.Context, rec *Record, n *RecordNetwork, netns string) error {
	if n.IsVPC() {
		return inv.agent().Check(ctx, &agentapi.CheckRequest{ContainerID: rec.ContainerID, IfName: n.IfName, Netns: netns})
	}
	list, err := recordList(n)
	if err != nil {
		return err
	}
	if ok, _ := version.GreaterThanOrEqualTo(list.CNIVersion, "0.4.0"); !ok {
		inv.log.Info("delegate config predates CHECK; skipped", "network", n.Name, "cniVersion", list.CNIVersion)
		return nil
	}
	return inv.cni.CheckNetworkList(ctx, list, runtimeConf(rec, n, netns))
}

// detachAll runs DEL for rec's networks from index `from` down to 0, trying
// all, and returns the first error.
func (inv *invocation) detachAll(ctx context.Context, rec *Record, from int, netns string) error {
	var first error
	for i := from; i >= 0; i-- {
		n := &rec.Networks[i]
		if err := inv.detach(ctx, rec, n, netns); err != nil {
			inv.log.Error("delete failed", "container", rec.ContainerID, "network", n.Selection, "ifname", n.IfName, "err", err)
			if first == nil {
				first = stepError(types.ErrInternal, fmt.Sprintf("network %q (%s): delete", n.Selection, n.IfName), err)
			}
		}
	}
	return first
}

// parseGateways parses recorded default-route gateways.
func parseGateways(gws []string) []net.IP {
	var out []net.IP
	for _, g := range gws {
		if ip := net.ParseIP(g); ip != nil {
			out = append(out, ip)
		}
	}
	return out
}
