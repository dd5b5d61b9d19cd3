package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
)

// errTraceDone ends a trace after --count events.
var errTraceDone = errors.New("trace done")

func traceCommand(g *globals) *cobra.Command {
	var (
		socket, node, output string
		req                  agentapi.TraceRequest
		count                int
	)
	c := &cobra.Command{
		Use:   "trace",
		Short: "Stream the packets the data plane drops on one node, with reason, VPC, pod, addresses and ports",
		Long: `trace connects to the node agent and prints every packet its data plane
drops, live, until interrupted: the reason (as in the genie_datapath_drops_total
metric), where it came in (a pod's veth or the uplink), the VPC, the pod, the
(inner) addresses and ports. The data plane reports drops only while a trace
runs; otherwise tracing costs nothing.

On a node, or in the agent's pod:
  kubectl -n kube-system exec ds/cni-genie -c genied -- geniectl trace --vpc blue
In a sandbox: --node N (or --pod with a sandbox pod's name).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output %q: want text or json", output)
			}
			if node != "" || (g.sandbox != "" && !cmd.Flags().Changed("socket")) {
				var err error
				if socket, req.Pod, err = g.sandboxTraceTarget(node, req.Pod); err != nil {
					return err
				}
			}
			cl := agentapi.NewClient(socket, 0)
			n := 0
			err := cl.Trace(cmd.Context(), &req, func(m *agentapi.TraceMessage) error {
				switch {
				case m.Event != nil:
					if output == "json" {
						b, _ := json.Marshal(m.Event)
						fmt.Fprintln(g.out, string(b))
					} else {
						fmt.Fprintln(g.out, formatTraceEvent(m.Event))
					}
					if n++; count > 0 && n >= count {
						return errTraceDone
					}
				case m.Lost > 0:
					fmt.Fprintf(g.errOut, "geniectl: %d drops not shown (trace buffer full)\n", m.Lost)
				default:
					fmt.Fprintf(g.errOut, "tracing drops at %s (Ctrl-C to stop)\n", socket)
				}
				return nil
			})
			if errors.Is(err, errTraceDone) || errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&socket, "socket", agentapi.DefaultSocket, "the node agent's socket")
	f.StringVar(&node, "node", "", "sandbox node whose agent to trace (name or 1-based index)")
	f.StringVar(&req.VPC, "vpc", "", "only drops in this VPC")
	f.StringVar(&req.Pod, "pod", "", "only drops of this pod: namespace/name, container ID (or a prefix of 6+ characters), or a sandbox pod's name")
	f.StringSliceVar(&req.Reasons, "reason", nil, "only drops for these reasons (e.g. SPOOFED_IP,NO_ROUTE)")
	f.StringVarP(&output, "output", "o", "text", "text, or json (one event per line)")
	f.IntVar(&count, "count", 0, "exit after this many drops (0: run until interrupted)")
	return c
}

// sandboxTraceTarget returns the socket of a sandbox node's agent: node's,
// or that of the node of pod if pod names a sandbox pod (whose container
// ID then replaces it).
func (g *globals) sandboxTraceTarget(node, pod string) (string, string, error) {
	sb, err := g.openSandbox()
	if err != nil {
		return "", "", err
	}
	if pod != "" {
		if p, err := sb.Pod(pod); err == nil {
			if node == "" {
				node = p.Node
			}
			pod = p.ContainerID
		}
	}
	if node == "" {
		return "", "", errors.New("trace in a sandbox: pass --node or --pod")
	}
	n, err := sb.Node(node)
	if err != nil {
		return "", "", err
	}
	return n.Socket, pod, nil
}

// formatTraceEvent prints one drop on a line:
//
//	07:31:02.123456 node1 SPOOFED_IP from-pod gv1a2b3c4d5e vpc=blue vni=101 pod=default/web-0/net1 udp 10.10.1.250:40000 -> 10.10.1.3:8002 len=60
func formatTraceEvent(e *agentapi.TraceEvent) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %s %s", e.Time.Local().Format("15:04:05.000000"), e.Node, e.Reason, e.Direction, e.Interface)
	if e.VPC != "" {
		fmt.Fprintf(&b, " vpc=%s", e.VPC)
	}
	if e.VNI != 0 {
		fmt.Fprintf(&b, " vni=%d", e.VNI)
	}
	if p := e.Pod; p != nil {
		id := p.Namespace + "/" + p.Name
		if p.Name == "" {
			id = p.ContainerID
			if len(id) > 12 {
				id = id[:12]
			}
		}
		fmt.Fprintf(&b, " pod=%s/%s", id, p.Interface)
	}
	if e.OuterSrc != "" {
		fmt.Fprintf(&b, " from-node=%s", e.OuterSrc)
	}
	fmt.Fprintf(&b, " %s", e.Protocol)
	src, dst := e.Src, e.Dst
	if e.SrcPort != 0 || e.DstPort != 0 {
		src, dst = fmt.Sprintf("%s:%d", src, e.SrcPort), fmt.Sprintf("%s:%d", dst, e.DstPort)
	}
	if e.Src != "" {
		fmt.Fprintf(&b, " %s -> %s", src, dst)
	} else if e.SrcMAC != "" {
		fmt.Fprintf(&b, " %s -> %s", e.SrcMAC, e.DstMAC)
	}
	if e.ICMPType != nil {
		fmt.Fprintf(&b, " type=%d code=%d", *e.ICMPType, *e.ICMPCode)
	}
	fmt.Fprintf(&b, " len=%d", e.Length)
	return b.String()
}
