package sandbox

import (
	"context"
	"fmt"
	"strings"

	"github.com/cni-genie/cni-genie/pkg/genie"
	"github.com/cni-genie/cni-genie/pkg/qos"
)

// PodAddQoS is PodAdd with a QoS class for the pod's VPC attachments
// (CNI_ARGS GENIE_QOS: high, normal or low; "" is none), checked here
// first so that a typo fails before a namespace is made. The agents
// enforce it on the uplink when started with --qos-uplink-rate
// (Options.AgentArgs).
func (s *Sandbox) PodAddQoS(ctx context.Context, name, node string, nets []string, class string) (*Pod, error) {
	return s.PodAddQoSRate(ctx, name, node, nets, class, "")
}

// PodAddQoSRate is PodAddQoS with an egress limit too (CNI_ARGS
// GENIE_EGRESS_BANDWIDTH, a quantity in bits/s such as "20M"; "" none).
func (s *Sandbox) PodAddQoSRate(ctx context.Context, name, node string, nets []string, class, egress string) (*Pod, error) {
	return s.PodAddQoSLabeled(ctx, name, node, nets, class, egress, nil)
}

// PodAddQoSLabeled is PodAddQoSRate for a pod with labels (PodAddLabeled).
func (s *Sandbox) PodAddQoSLabeled(ctx context.Context, name, node string, nets []string, class, egress string, labels map[string]string) (*Pod, error) {
	return s.PodAddWithQoS(ctx, name, node, nets, PodQoS{Class: class, Egress: egress}, labels)
}

// PodQoS is the QoS a sandbox pod asks for, for all its VPC attachments:
// a class (high, normal or low; "" none, or the VPC's default) and rate
// limits, quantities in bits/s such as "20M" ("" none). They go to the
// plugin as CNI_ARGS GENIE_QOS, GENIE_EGRESS_BANDWIDTH and
// GENIE_INGRESS_BANDWIDTH. The egress limit needs the agents' QoS tree
// (Options.AgentArgs --qos-uplink-rate); the ingress limit does not.
type PodQoS struct {
	Class, Egress, Ingress string
}

// String is how the pod list shows it: "low egress 20M ingress 10M".
func (q PodQoS) String() string {
	out := q.Class
	if q.Egress != "" {
		out += " egress " + q.Egress
	}
	if q.Ingress != "" {
		out += " ingress " + q.Ingress
	}
	return strings.TrimSpace(out)
}

// PodAddWithQoS is PodAddLabeled with QoS, checked here first so that a
// typo fails before a namespace is made.
func (s *Sandbox) PodAddWithQoS(ctx context.Context, name, node string, nets []string, q PodQoS, labels map[string]string) (*Pod, error) {
	if q == (PodQoS{}) {
		return s.PodAddLabeled(ctx, name, node, nets, labels)
	}
	if _, err := qos.ParseClass(q.Class); err != nil {
		return nil, fmt.Errorf("pod %q: %w", name, err)
	}
	var extra [][2]string
	if q.Class != "" {
		extra = append(extra, [2]string{qos.EnvArgClass, q.Class})
	}
	for _, r := range []struct{ what, key, v string }{{"egress", qos.EnvArgEgress, q.Egress}, {"ingress", qos.EnvArgIngress, q.Ingress}} {
		if r.v == "" {
			continue
		}
		if _, err := qos.ParseRate(r.v); err != nil {
			return nil, fmt.Errorf("pod %q: %s rate: %w", name, r.what, err)
		}
		extra = append(extra, [2]string{r.key, r.v})
	}
	if len(labels) > 0 {
		extra = append(extra, [2]string{"GENIE_LABELS", genie.LabelsArg(labels)})
	}
	return s.podAdd(ctx, name, node, nets, extra, q.String())
}
