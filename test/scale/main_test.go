package scale

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func TestMain(m *testing.M) { sandboxtest.Main(m) }

// tb is what the helpers need from *testing.T and *testing.B.
type tb = testing.TB

// newSandbox brings up a sandbox with a random name; its teardown must
// leave nothing behind. GENIE_SCALE_AGENT_ARGS adds genied flags, e.g.
// "--pod-attach tc".
func newSandbox(t tb, prefix string, nodes int, agentArgs ...string) *sandbox.Sandbox {
	t.Helper()
	agentArgs = append(agentArgs, strings.Fields(os.Getenv("GENIE_SCALE_AGENT_ARGS"))...)
	return sandboxtest.New(t, prefix, sandbox.Options{Nodes: nodes, AgentArgs: agentArgs})
}

// runner calls a CNI configuration list from inside one node's
// namespace through libcni, exactly as the sandbox's PodAdd does, but
// without the sandbox's state lock, so that many calls run concurrently.
type runner struct {
	node *sandbox.Node
	list *libcni.NetworkConfigList
	cni  *libcni.CNIConfig
	args [][2]string
}

// genieRunner returns a runner calling the real genie binary for the VPC
// subnet sel ("vpc/subnet") on node.
func genieRunner(t tb, sb *sandbox.Sandbox, node *sandbox.Node, sel string) *runner {
	t.Helper()
	confDir := filepath.Join(sb.Dir(), "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ndir := filepath.Join(sb.Dir(), node.Name)
	conf, err := json.Marshal(map[string]any{
		"cniVersion": sandbox.CNIVersion,
		"name":       "genie-scale",
		"plugins": []map[string]any{{
			"type":        "genie",
			"confDir":     confDir,
			"stateDir":    filepath.Join(ndir, "genie"),
			"logFile":     filepath.Join(ndir, "genie.log"),
			"logLevel":    "warn",
			"agentSocket": node.Socket,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return newRunner(t, sb, node, conf, [][2]string{{"IgnoreUnknown", "1"}, {"GENIE_NETWORKS", "vpc:" + sel}})
}

// bridgeRunner returns a runner calling the reference bridge plugin with
// host-local IPAM on node (the baseline of the ADD latency benchmark).
func bridgeRunner(t tb, sb *sandbox.Sandbox, node *sandbox.Node, subnet string) *runner {
	t.Helper()
	conf, err := json.Marshal(map[string]any{
		"cniVersion": sandbox.CNIVersion,
		"name":       "baseline-bridge",
		"plugins": []map[string]any{{
			"type":      "bridge",
			"bridge":    "cni-br0",
			"isGateway": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": subnet}}},
				"dataDir": filepath.Join(sb.Dir(), node.Name, "host-local"),
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return newRunner(t, sb, node, conf, nil)
}

func newRunner(t tb, sb *sandbox.Sandbox, node *sandbox.Node, conf []byte, args [][2]string) *runner {
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		t.Fatal(err)
	}
	cniDir, ok := sandbox.TestCNIBinDir()
	path := []string{sandboxtest.BinDir()}
	if ok {
		path = append(path, cniDir)
	}
	return &runner{node: node, list: list, args: args,
		cni: libcni.NewCNIConfigWithCacheDir(path, filepath.Join(sb.Dir(), "scale-cni-cache"), nil)}
}

func (r *runner) rt(p *sandbox.Pod) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.ContainerID, NetNS: p.Netns, IfName: sandbox.PodIfName, Args: r.args}
}

// add runs CNI ADD for pod p and returns the address of its eth0.
func (r *runner) add(ctx context.Context, p *sandbox.Pod) (netip.Prefix, error) {
	var res *current.Result
	err := sandbox.InNetns(r.node.Netns, func() error {
		out, err := r.cni.AddNetworkList(ctx, r.list, r.rt(p))
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(out)
		return err
	})
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("pod %s on %s: cni add: %w", p.Name, r.node.Name, err)
	}
	for _, ip := range res.IPs {
		if ip.Interface != nil && *ip.Interface < len(res.Interfaces) && res.Interfaces[*ip.Interface].Name == sandbox.PodIfName {
			a, _ := netip.AddrFromSlice(ip.Address.IP.To4())
			bits, _ := ip.Address.Mask.Size()
			return netip.PrefixFrom(a, bits), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("pod %s on %s: cni add: no address on %s in %+v", p.Name, r.node.Name, sandbox.PodIfName, res)
}

// del runs CNI DEL for pod p.
func (r *runner) del(ctx context.Context, p *sandbox.Pod) error {
	err := sandbox.InNetns(r.node.Netns, func() error { return r.cni.DelNetworkList(ctx, r.list, r.rt(p)) })
	if err != nil {
		return fmt.Errorf("pod %s on %s: cni del: %w", p.Name, r.node.Name, err)
	}
	return nil
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

// quantile returns the q-quantile (0..1) of d (nearest rank); d is sorted
// in place.
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(float64(len(d))*q+0.5) - 1
	return d[max(0, min(i, len(d)-1))]
}

// say logs a result line and also prints it on stdout: go test truncates
// a benchmark's log output after a few lines.
func say(t tb, format string, args ...any) {
	t.Helper()
	t.Logf(format, args...)
	fmt.Printf(format+"\n", args...)
}
