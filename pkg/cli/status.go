package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/spf13/cobra"
)

// ClusterStatus is the at-a-glance view of `geniectl status`: what the
// store holds (nodes, VPCs, subnets, blocks, endpoints) and, where the
// agents can be reached (a sandbox, or --agent-socket), their health.
type ClusterStatus struct {
	Nodes     []NodeStatus   `json:"nodes"`
	VPCs      []VPCStatus    `json:"vpcs"`
	Subnets   []SubnetStatus `json:"subnets"`
	Endpoints int            `json:"endpoints"`
	// Services, with their current backends (service.go).
	Services []ServiceStatus `json:"services,omitempty"`
	// QoS are the endpoints with a QoS class or rate limit.
	QoS []EndpointQoSStatus `json:"qos,omitempty"`
}

// EndpointQoSStatus is the QoS of one endpoint, as its agent published it:
// the effective class (its own or the VPC's default) and its rate limits
// in bits/s (0: none).
type EndpointQoSStatus struct {
	VPC         string     `json:"vpc"`
	Pod         string     `json:"pod"`
	Interface   string     `json:"interface"`
	IP          netip.Addr `json:"ip"`
	Node        string     `json:"node"`
	Class       string     `json:"class,omitempty"`
	EgressRate  uint64     `json:"egressRate,omitempty"`
	IngressRate uint64     `json:"ingressRate,omitempty"`
}

// NodeStatus is one node: its store record, what the store attributes to
// it, and its agent's health when known.
type NodeStatus struct {
	Name       string     `json:"name"`
	UnderlayIP netip.Addr `json:"underlayIP"`
	// Endpoints and Blocks are the store's records of the node.
	Endpoints int `json:"endpoints"`
	Blocks    int `json:"blocks"`
	// Agent is "ready", "not ready: <why>", "down", "unreachable: <err>"
	// or "" when no agent of the node can be asked.
	Agent string `json:"agent,omitempty"`
	// Programmed are the local and remote endpoints in the node's data
	// plane and Watches the VPCs it watches, from the agent's metrics
	// (sandbox only; -1 when unknown).
	ProgrammedLocal  int `json:"programmedLocal"`
	ProgrammedRemote int `json:"programmedRemote"`
	Watches          int `json:"watches"`
	// NextHops is the state of the node's underlay next hops to its
	// peers, from the agent's metrics (sandbox only; see nextHops).
	NextHops string `json:"nextHops,omitempty"`
	// QoSIngressDrops are the packets the node's ingress limits dropped,
	// from the agent's metrics (sandbox only; -1 when unknown).
	QoSIngressDrops int `json:"qosIngressDrops"`
}

// VPCStatus is one VPC.
type VPCStatus struct {
	Name      string       `json:"name"`
	VNI       uint32       `json:"vni"`
	CIDR      netip.Prefix `json:"cidr"`
	Subnets   int          `json:"subnets"`
	Endpoints int          `json:"endpoints"`
	// QoSClass is the VPC's default QoS class ("" none).
	QoSClass string `json:"qosClass,omitempty"`
}

// SubnetStatus is one subnet with its IPAM state.
type SubnetStatus struct {
	VPC     string       `json:"vpc"`
	Name    string       `json:"name"`
	CIDR    netip.Prefix `json:"cidr"`
	Gateway netip.Addr   `json:"gateway"`
	// Blocks claimed by nodes, of BlockPrefixLen.
	Blocks         int `json:"blocks"`
	BlockPrefixLen int `json:"blockPrefixLen"`
	// Used addresses (endpoints) and Free assignable ones.
	Used int `json:"used"`
	Free int `json:"free"`
}

// CollectStatus reads the cluster's state from st. agents, if not nil,
// fills the agent columns of a node (by name).
func CollectStatus(ctx context.Context, st store.Store, agents func(name string, n *NodeStatus)) (*ClusterStatus, error) {
	nodes, _, err := st.ListNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	vpcs, err := st.ListVPCs(ctx)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	subnets, err := st.ListSubnets(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	blocks, err := st.ListBlocks(ctx, "", "")
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	eps, _, err := st.ListEndpoints(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	svcs, err := collectServices(ctx, st, "")
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	out := &ClusterStatus{Endpoints: len(eps), Services: svcs}
	epsByNode, epsByVPC, epsBySubnet := map[string]int{}, map[string]int{}, map[string]int{}
	for _, e := range eps {
		epsByNode[e.Node]++
		epsByVPC[e.VPC]++
		epsBySubnet[e.VPC+"/"+e.Subnet]++
		if q := e.QoS; q != nil {
			pod := e.PodName
			if e.PodNamespace != "" {
				pod = e.PodNamespace + "/" + pod
			}
			out.QoS = append(out.QoS, EndpointQoSStatus{VPC: e.VPC, Pod: pod, Interface: e.Interface, IP: e.IP, Node: e.Node,
				Class: q.Class, EgressRate: q.EgressRate, IngressRate: q.IngressRate})
		}
	}
	blocksByNode, blocksBySubnet := map[string]int{}, map[string]int{}
	for _, b := range blocks {
		blocksByNode[b.Node]++
		blocksBySubnet[b.VPC+"/"+b.Subnet]++
	}
	subnetsByVPC := map[string]int{}
	for _, s := range subnets {
		subnetsByVPC[s.VPC]++
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		seen[n.Name] = true
		ns := NodeStatus{Name: n.Name, UnderlayIP: n.UnderlayIP, Endpoints: epsByNode[n.Name], Blocks: blocksByNode[n.Name],
			ProgrammedLocal: -1, ProgrammedRemote: -1, Watches: -1, QoSIngressDrops: -1}
		if agents != nil {
			agents(n.Name, &ns)
		}
		out.Nodes = append(out.Nodes, ns)
	}
	// Endpoints of nodes the store no longer lists are worth a row.
	var orphans []string
	for n := range epsByNode {
		if !seen[n] {
			orphans = append(orphans, n)
		}
	}
	sort.Strings(orphans)
	for _, n := range orphans {
		out.Nodes = append(out.Nodes, NodeStatus{Name: n, Endpoints: epsByNode[n], Blocks: blocksByNode[n],
			Agent: "node not registered", ProgrammedLocal: -1, ProgrammedRemote: -1, Watches: -1, QoSIngressDrops: -1})
	}
	for _, v := range vpcs {
		out.VPCs = append(out.VPCs, VPCStatus{Name: v.Name, VNI: v.VNI, CIDR: v.CIDR, Subnets: subnetsByVPC[v.Name], Endpoints: epsByVPC[v.Name],
			QoSClass: v.QoSClass})
	}
	for _, s := range subnets {
		s = s.WithDefaults()
		key := s.VPC + "/" + s.Name
		assignable := 0
		if s.CIDR.Addr().Is4() {
			// Network, broadcast and gateway are never handed out.
			assignable = (1 << (32 - s.CIDR.Bits())) - 3
		}
		out.Subnets = append(out.Subnets, SubnetStatus{VPC: s.VPC, Name: s.Name, CIDR: s.CIDR, Gateway: s.Gateway,
			Blocks: blocksBySubnet[key], BlockPrefixLen: s.BlockPrefixLen, Used: epsBySubnet[key], Free: max(0, assignable-epsBySubnet[key])})
	}
	return out, nil
}

// sandboxAgents asks the sandbox's agents for their health (over their
// sockets) and their data plane counts (metrics).
func sandboxAgents(ctx context.Context, sb *sandbox.Sandbox) (func(string, *NodeStatus), error) {
	st, err := sb.Status(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]sandbox.NodeStatus{}
	for _, n := range st.Nodes {
		byName[n.Node.Name] = n
	}
	return func(name string, ns *NodeStatus) {
		n, ok := byName[name]
		if !ok {
			return
		}
		switch {
		case !n.AgentAlive:
			ns.Agent = "down"
			return
		case n.AgentReady:
			ns.Agent = "ready"
		default:
			ns.Agent = "not ready: " + n.Message
		}
		m, err := sb.Metrics(ctx, name)
		if err != nil {
			return
		}
		ns.ProgrammedLocal = int(m[`genie_endpoints{scope="local"}`])
		ns.ProgrammedRemote = int(m[`genie_endpoints{scope="remote"}`])
		ns.Watches = int(m["genie_vpc_watches"])
		ns.NextHops = nextHops(m) // underlay.go
		ns.QoSIngressDrops = int(m[`genie_datapath_drops_total{reason="QOS_INGRESS"}`])
	}, nil
}

// socketAgent asks the agent on socket for its health; it is node's agent.
func socketAgent(ctx context.Context, node, socket string) func(string, *NodeStatus) {
	return func(name string, ns *NodeStatus) {
		if node != "" && name != node {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		r, err := agentapi.NewClient(socket, 3*time.Second).Status(cctx)
		switch {
		case err != nil:
			ns.Agent = "unreachable: " + err.Error()
		case r.Ready:
			ns.Agent = "ready"
		default:
			ns.Agent = "not ready: " + r.Message
		}
	}
}

func statusCommand(g *globals) *cobra.Command {
	var asJSON bool
	var socket, node, graph string
	c := &cobra.Command{
		Use:   "status",
		Short: "Nodes, VPCs, subnets, endpoints and agent health at a glance",
		Long: `Show what the store holds (nodes with their endpoints and IPAM blocks, VPCs
with their VNI, subnets with blocks and used/free addresses, the endpoint
count) and the agents' health: every agent of the sandbox (over its socket,
plus the endpoints programmed in its data plane, its VPC watches and the
state of its underlay next hops to the other nodes), or the
agent on --agent-socket (whose node is --node, default every node).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			if graph != "" && graph != "dot" && graph != "svg" {
				return fmt.Errorf("status: --graph %q: want dot or svg", graph)
			}
			st, err := g.openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			var agents func(string, *NodeStatus)
			switch {
			case socket != "":
				agents = socketAgent(ctx, node, socket)
			case g.sandboxStore():
				// The store is the sandbox's: its agents can be asked.
				if sb, err := g.openSandbox(); err == nil {
					if agents, err = sandboxAgents(ctx, sb); err != nil {
						return err
					}
				}
			}
			cs, err := CollectStatus(ctx, st, agents)
			if err != nil {
				return err
			}
			if graph != "" {
				eps, _, err := st.ListEndpoints(ctx, "")
				if err != nil {
					return fmt.Errorf("status: %w", err)
				}
				gr := BuildGraph(cs, eps)
				if graph == "svg" {
					return gr.WriteSVG(g.out)
				}
				return gr.WriteDOT(g.out)
			}
			if asJSON {
				enc := json.NewEncoder(g.out)
				enc.SetIndent("", "  ")
				return enc.Encode(cs)
			}
			printClusterStatus(g, cs)
			printStatusRing(ctx, g, st)          // directory.go
			printStatusServices(g, cs.Services)  // service.go
			return printStatusEgress(ctx, g, st) // egress.go
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().StringVar(&graph, "graph", "", "draw nodes, pods and VPCs instead: dot (Graphviz) or svg")
	c.Flags().StringVar(&socket, "agent-socket", "", "also ask the agent on this unix socket for its health")
	c.Flags().StringVar(&node, "node", "", "the node of --agent-socket (default: shown for every node)")
	return c
}

func printClusterStatus(g *globals, cs *ClusterStatus) {
	dash := func(n int) string {
		if n < 0 {
			return "-"
		}
		return fmt.Sprint(n)
	}
	tw := table(g.out, "NODE", "UNDERLAY", "AGENT", "ENDPOINTS", "BLOCKS", "PROGRAMMED LOCAL/REMOTE", "VPC WATCHES", "NEXT HOPS")
	for _, n := range cs.Nodes {
		agent := n.Agent
		if agent == "" {
			agent = "-"
		}
		hops := n.NextHops
		if hops == "" {
			hops = "-"
		}
		row(tw, n.Name, n.UnderlayIP, agent, n.Endpoints, n.Blocks, dash(n.ProgrammedLocal)+"/"+dash(n.ProgrammedRemote), dash(n.Watches), hops)
	}
	tw.Flush()
	fmt.Fprintln(g.out)
	tw = table(g.out, "VPC", "VNI", "CIDR", "SUBNETS", "ENDPOINTS", "QOS")
	for _, v := range cs.VPCs {
		row(tw, v.Name, v.VNI, v.CIDR, v.Subnets, v.Endpoints, orDash(v.QoSClass))
	}
	tw.Flush()
	fmt.Fprintln(g.out)
	tw = table(g.out, "SUBNET", "CIDR", "GATEWAY", "BLOCKS", "USED", "FREE")
	for _, s := range cs.Subnets {
		row(tw, s.VPC+"/"+s.Name, s.CIDR, s.Gateway, fmt.Sprintf("%d x /%d", s.Blocks, s.BlockPrefixLen), s.Used, s.Free)
	}
	tw.Flush()
	printStatusQoS(g, cs) // qos.go
	fmt.Fprintf(g.out, "\n%d endpoints in %d VPCs on %d nodes\n", cs.Endpoints, len(cs.VPCs), len(cs.Nodes))
}
