package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/spf13/cobra"
)

// sandboxName resolves which sandbox a command acts on: the flag, else
// the only one up. For up (and down, which must work without state), the
// fallback is the default name.
func (g *globals) sandboxName(orDefault bool) (string, error) {
	if g.sandbox != "" {
		return g.sandbox, sandbox.ValidateName("sandbox", g.sandbox)
	}
	names, err := sandbox.List(g.stateRoot)
	if err != nil {
		return "", err
	}
	switch {
	case len(names) == 1:
		return names[0], nil
	case orDefault:
		return sandbox.DefaultName, nil
	case len(names) == 0:
		return "", errors.New("no sandbox is up (run: geniectl sandbox up)")
	default:
		return "", fmt.Errorf("several sandboxes are up (%s): pass --name (sandbox commands) or --sandbox", strings.Join(names, ", "))
	}
}

func (g *globals) openSandbox() (*sandbox.Sandbox, error) {
	name, err := g.sandboxName(false)
	if err != nil {
		return nil, err
	}
	return sandbox.Open(g.stateRoot, name)
}

func sandboxCommand(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "sandbox",
		Short: "A virtual multi-node cluster in network namespaces on this machine",
	}
	c.PersistentFlags().StringVar(&g.sandbox, "name", "", "sandbox name (default: the only one up, else \"genie\")")
	c.AddCommand(sandboxUp(g), sandboxDown(g), sandboxStatus(g), sandboxPod(g), sandboxExec(g),
		sandboxDemo(g), sandboxServeStore(g), sandboxList(g), sandboxMatrix(g), sandboxNode(g))
	return c
}

type upFlags struct {
	nodes     int
	binDir    string
	cniBinDir string
	noAgents  bool
	underlay  string
	qosRate   string
	agentArgs []string
}

func (f *upFlags) register(c *cobra.Command) {
	c.Flags().IntVar(&f.nodes, "nodes", sandbox.DefaultNodes, "number of nodes")
	c.Flags().StringVar(&f.binDir, "bin-dir", "", "directory of genie, genied and geniectl (default: geniectl's own)")
	c.Flags().StringVar(&f.cniBinDir, "cni-bin-dir", "", "directory of the CNI reference plugins (default $GENIE_TEST_CNI_BINDIR, else _output/cni/bin)")
	c.Flags().BoolVar(&f.noAgents, "no-agents", false, "start no genied (underlay and store only)")
	c.Flags().StringVar(&f.underlay, "underlay", sandbox.UnderlayFlat, "underlay topology: \"flat\" (one L2 segment) or \"routed\" (two segments joined by a router namespace)")
	c.Flags().StringVar(&f.qosRate, "qos-uplink-rate", "", "give every genied --qos-uplink-rate (e.g. 500M): the QoS tree that enforces pod classes and egress limits")
	c.Flags().StringArrayVar(&f.agentArgs, "agent-arg", nil, "extra genied flag for every node, e.g. --agent-arg=--endpoint-mode=directory (repeatable)")
}

func (f *upFlags) options(g *globals, name string) sandbox.Options {
	cni := f.cniBinDir
	if cni == "" {
		cni = os.Getenv("GENIE_TEST_CNI_BINDIR")
	}
	if cni == "" {
		if st, err := os.Stat("_output/cni/bin"); err == nil && st.IsDir() {
			if wd, err := os.Getwd(); err == nil {
				cni = wd + "/_output/cni/bin"
			}
		}
	}
	agentArgs := append([]string(nil), f.agentArgs...)
	if f.qosRate != "" {
		agentArgs = append(agentArgs, "--qos-uplink-rate", f.qosRate)
	}
	return sandbox.Options{Name: name, Nodes: f.nodes, BinDir: f.binDir, CNIBinDir: cni,
		StateRoot: g.stateRoot, NoAgents: f.noAgents, Underlay: f.underlay, Log: g.errOut, AgentArgs: agentArgs}
}

func sandboxUp(g *globals) *cobra.Command {
	var f upFlags
	c := &cobra.Command{
		Use:   "up",
		Short: "Create the sandbox: fabric, nodes, store and one genied per node",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			name, err := g.sandboxName(true)
			if err != nil {
				return err
			}
			if g.sandbox == "" {
				name = sandbox.DefaultName
			}
			if f.nodes < 1 || f.nodes > sandbox.MaxNodes {
				return fmt.Errorf("--nodes %d: want 1 to %d", f.nodes, sandbox.MaxNodes)
			}
			sb, err := sandbox.Up(c.Context(), f.options(g, name))
			if err != nil {
				return err
			}
			return printStatus(g, sb)
		},
	}
	f.register(c)
	return c
}

func sandboxDown(g *globals) *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:   "down",
		Short: "Tear the sandbox down, leaving no namespace, link, pin or process",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var names []string
			if all {
				var err error
				if names, err = sandbox.List(g.stateRoot); err != nil {
					return err
				}
			} else {
				name, err := g.sandboxName(true)
				if err != nil {
					return err
				}
				names = []string{name}
			}
			var errs []error
			for _, n := range names {
				if err := sandbox.Down(c.Context(), g.stateRoot, "", n, g.errOut); err != nil {
					errs = append(errs, fmt.Errorf("sandbox %q: %w", n, err))
					continue
				}
				fmt.Fprintf(g.out, "sandbox %q is down\n", n)
			}
			return errors.Join(errs...)
		},
	}
	c.Flags().BoolVar(&all, "all", false, "tear down every sandbox")
	return c
}

func sandboxList(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the sandboxes that are up",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			names, err := sandbox.List(g.stateRoot)
			if err != nil {
				return err
			}
			for _, n := range names {
				fmt.Fprintln(g.out, n)
			}
			return nil
		},
	}
}

func sandboxStatus(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show nodes, agents, store and pods",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			sb, err := g.openSandbox()
			if err != nil {
				return err
			}
			return printStatus(g, sb)
		},
	}
}

func printStatus(g *globals, sb *sandbox.Sandbox) error {
	st, err := sb.Status(context.Background())
	if err != nil {
		return err
	}
	alive := map[bool]string{true: "running", false: "down"}
	fmt.Fprintf(g.out, "sandbox %s  (state %s)\nstore   %s  %s\n\n", st.Name, st.Dir, st.StoreEndpoint, alive[st.StoreAlive])
	tw := table(g.out, "NODE", "UNDERLAY", "AGENT", "READY", "PIN DIR")
	for _, n := range st.Nodes {
		ready := "-"
		agent := fmt.Sprintf("%s pid %d", alive[n.AgentAlive], n.Node.AgentPID)
		if n.Node.AgentPID == 0 {
			agent = "none"
		}
		if n.AgentAlive {
			ready = fmt.Sprint(n.AgentReady)
			if n.Message != "" && !n.AgentReady {
				ready += " (" + n.Message + ")"
			}
		}
		row(tw, n.Node.Name, n.Node.UnderlayIP, agent, ready, n.Node.PinDir)
	}
	tw.Flush()
	if len(st.Pods) > 0 {
		fmt.Fprintln(g.out)
		printPods(g, st.Pods, effectiveQoS(context.Background(), sb))
	}
	return nil
}

// printPods lists pods with their interfaces. eff is the effective QoS of
// the VPC attachments from the store (nil: unknown, the pod's request is
// shown).
func printPods(g *globals, pods []*sandbox.Pod, eff map[string]*vpc.EndpointQoS) {
	tw := table(g.out, "POD", "NODE", "INTERFACE", "NETWORK", "IP", "MAC", "QOS")
	for _, p := range pods {
		if len(p.Interfaces) == 0 {
			row(tw, p.Name, p.Node, "-", strings.Join(p.Nets, ","), "-", "-", orDash(p.QoS))
		}
		for i, ifc := range p.Interfaces {
			netw := ifc.Network
			if netw == "" && i < len(p.Nets) {
				netw = p.Nets[i]
			}
			ips := make([]string, len(ifc.IPs))
			for j, a := range ifc.IPs {
				ips[j] = a.String()
			}
			q := p.QoS
			if ifc.VPC == "" {
				q = "" // GENIE_QOS applies to VPC attachments only
			} else if eff != nil && len(ifc.IPs) > 0 {
				q = qosString(eff[ifc.VPC+"/"+ifc.IPs[0].Addr().String()]) // qos.go
			}
			row(tw, p.Name, p.Node, ifc.Name, orDash(netw), orDash(strings.Join(ips, ",")), orDash(ifc.MAC), orDash(q))
		}
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sandboxPod(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "pod", Short: "Add, delete and list sandbox pods"}
	var node string
	var nets, podLabels []string
	var srcRoutes bool
	var qosClass, egressRate, ingressRate string
	add := &cobra.Command{
		Use:   "add NAME --node K --net VPC/SUBNET[@IF] [--net ...]",
		Short: "Create a pod namespace and attach it through the genie CNI plugin",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if len(nets) == 0 {
				return errors.New("pod add: at least one --net VPC/SUBNET[@IF] is required")
			}
			sb, err := g.openSandbox()
			if err != nil {
				return err
			}
			labels, err := parseLabels("--label", podLabels) // service.go
			if err != nil {
				return err
			}
			p, err := sb.PodAddWithQoS(c.Context(), args[0], node, nets, sandbox.PodQoS{Class: qosClass, Egress: egressRate, Ingress: ingressRate}, labels)
			if err != nil {
				return err
			}
			if srcRoutes {
				if err := sb.SourceRoutes(p.Name); err != nil {
					return err
				}
			}
			printPods(g, []*sandbox.Pod{p}, effectiveQoS(c.Context(), sb))
			return nil
		},
	}
	add.Flags().StringVar(&node, "node", "1", "node name or 1-based index")
	add.Flags().StringVar(&qosClass, "qos", "", "QoS class of the pod's VPC attachments: high, normal or low (CNI_ARGS GENIE_QOS)")
	add.Flags().StringVar(&egressRate, "egress-rate", "", "egress rate limit of the pod's VPC attachments in bits/s, e.g. 20M (CNI_ARGS GENIE_EGRESS_BANDWIDTH; needs sandbox up --qos-uplink-rate)")
	add.Flags().StringVar(&ingressRate, "ingress-rate", "", "ingress rate limit of the pod's VPC attachments in bits/s, e.g. 20M (CNI_ARGS GENIE_INGRESS_BANDWIDTH)")
	add.Flags().StringArrayVar(&podLabels, "label", nil, "pod label KEY=VALUE for service selectors (repeatable)")
	add.Flags().BoolVar(&srcRoutes, "source-routes", false, "give each interface its own routing table, selected by source address (pods in VPCs with overlapping CIDRs)")
	add.Flags().StringArrayVar(&nets, "net", nil, "network VPC/SUBNET[@IF], or a delegate network such as "+sandbox.DelegateNetwork+"[@IF] (repeatable; the first is the default)")
	del := &cobra.Command{
		Use:   "del NAME",
		Short: "Detach a pod (CNI DEL) and delete its namespace",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			sb, err := g.openSandbox()
			if err != nil {
				return err
			}
			if err := sb.PodDel(c.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "pod %q deleted\n", args[0])
			return nil
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List pods",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			sb, err := g.openSandbox()
			if err != nil {
				return err
			}
			printPods(g, sb.Pods(), effectiveQoS(c.Context(), sb))
			return nil
		},
	}
	c.AddCommand(add, del, list)
	return c
}

func sandboxExec(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "exec POD -- CMD [ARGS...]",
		Short: "Run a command in a pod's (or node's) network namespace",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			sb, err := g.openSandbox()
			if err != nil {
				return err
			}
			cmd, err := sb.Command(c.Context(), args[0], args[1:]...)
			if err != nil {
				return err
			}
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, g.out, g.errOut
			if err := cmd.Run(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return exitError{code: ee.ExitCode()}
				}
				return fmt.Errorf("exec in %q: %w", args[0], err)
			}
			return nil
		},
	}
}

func sandboxServeStore(g *globals) *cobra.Command {
	var dataDir, sock, ready string
	c := &cobra.Command{
		Use:    "serve-store",
		Short:  "Run a sandbox's embedded etcd (started by sandbox up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(g.errOut, nil))
			return sandbox.ServeStore(c.Context(), dataDir, sock, ready, log)
		},
	}
	c.Flags().StringVar(&dataDir, "data-dir", "", "etcd data dir")
	c.Flags().StringVar(&sock, "socket", "", "client unix socket")
	c.Flags().StringVar(&ready, "ready-file", "", "file written once the store serves")
	c.MarkFlagRequired("data-dir")
	c.MarkFlagRequired("socket")
	return c
}

func sandboxMatrix(g *globals) *cobra.Command {
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "matrix [POD...]",
		Short: "Probe every pair of overlay interfaces (TCP, UDP, ping) and print who reaches whom",
		Long: `Probes every ordered pair of overlay interfaces of the given pods (default: all),
with TCP, UDP and ICMP, each counting only if it reaches the target pod's own
namespace. Pairs in the same VPC are expected to connect, all others to be
isolated. Exits 1 if any pair differs. Pods in several VPCs with overlapping
CIDRs need per-source routes (the demo sets them up).`,
		RunE: func(c *cobra.Command, args []string) error {
			sb, err := g.openSandbox()
			if err != nil {
				return err
			}
			targets, err := sb.Targets(args...)
			if err != nil {
				return err
			}
			if len(targets) < 2 {
				return errors.New("matrix: fewer than two overlay interfaces to probe")
			}
			if bad := sandbox.PrintMatrix(g.out, sandbox.Matrix(c.Context(), targets, timeout)); bad > 0 {
				return exitError{code: 1, msg: fmt.Sprintf("%d pairs differ from the expectation", bad)}
			}
			return nil
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 1500*time.Millisecond, "how long a probe waits before calling a pair isolated")
	return c
}

func sandboxNode(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "node", Short: "Inject node faults: stop/start a node's agent, partition/heal its uplink"}
	var kill bool
	stop := &cobra.Command{
		Use:   "stop NODE",
		Short: "Stop the node's genied (the pinned data plane keeps forwarding)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			sb, err := g.openSandbox()
			if err != nil {
				return err
			}
			return sb.StopAgent(args[0], kill)
		},
	}
	stop.Flags().BoolVar(&kill, "kill", false, "SIGKILL instead of SIGTERM (a crash)")
	start := &cobra.Command{
		Use:   "start NODE",
		Short: "Start the node's genied and wait until it is ready",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			sb, err := g.openSandbox()
			if err != nil {
				return err
			}
			return sb.StartAgent(c.Context(), args[0])
		},
	}
	link := func(use, short string, up bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NODE",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				sb, err := g.openSandbox()
				if err != nil {
					return err
				}
				return sb.SetUplink(args[0], up)
			},
		}
	}
	c.AddCommand(stop, start,
		link("partition", "Cut the node off the underlay (its fabric port goes down)", false),
		link("heal", "Reconnect a partitioned node", true))
	return c
}
