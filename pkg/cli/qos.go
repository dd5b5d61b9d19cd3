package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"k8s.io/apimachinery/pkg/api/resource"
)

// printStatusQoS prints the endpoints with a QoS class or limit, and the
// packets each node's ingress limits dropped (when its metrics are known).
func printStatusQoS(g *globals, cs *ClusterStatus) {
	if len(cs.QoS) == 0 {
		return
	}
	fmt.Fprintln(g.out)
	tw := table(g.out, "QOS", "POD", "INTERFACE", "VPC", "IP", "NODE", "EGRESS LIMIT", "INGRESS LIMIT")
	for _, q := range cs.QoS {
		row(tw, orDash(q.Class), orDash(q.Pod), orDash(q.Interface), q.VPC, q.IP, q.Node, rateString(q.EgressRate), rateString(q.IngressRate))
	}
	tw.Flush()
	for _, n := range cs.Nodes {
		if n.QoSIngressDrops > 0 {
			fmt.Fprintf(g.out, "node %s: %d packets dropped over ingress limits\n", n.Name, n.QoSIngressDrops)
		}
	}
}

// rateString formats bits/s as a Kubernetes quantity ("10M"), "-" for 0.
func rateString(r uint64) string {
	if r == 0 {
		return "-"
	}
	return resource.NewQuantity(int64(r), resource.DecimalSI).String() + "bit/s"
}

// effectiveQoS reads the QoS of the sandbox's endpoints from its store, by
// "vpc/ip"; nil when the store cannot be read (the pod list then shows
// what the pods asked for).
func effectiveQoS(ctx context.Context, sb *sandbox.Sandbox) map[string]*vpc.EndpointQoS {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := OpenSandboxStore(ctx, sb)
	if err != nil {
		return nil
	}
	defer st.Close()
	eps, _, err := st.ListEndpoints(ctx, "")
	if err != nil {
		return nil
	}
	out := map[string]*vpc.EndpointQoS{}
	for _, e := range eps {
		out[e.VPC+"/"+e.IP.String()] = e.QoS
	}
	return out
}

// qosString is a pod list's QoS column: "high egress 20M ingress 10M".
func qosString(q *vpc.EndpointQoS) string {
	if q == nil {
		return ""
	}
	out := q.Class
	if q.EgressRate != 0 {
		out += " egress " + resource.NewQuantity(int64(q.EgressRate), resource.DecimalSI).String()
	}
	if q.IngressRate != 0 {
		out += " ingress " + resource.NewQuantity(int64(q.IngressRate), resource.DecimalSI).String()
	}
	return strings.TrimSpace(out)
}
