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
	if class == "" && egress == "" {
		return s.PodAddLabeled(ctx, name, node, nets, labels)
	}
	if _, err := qos.ParseClass(class); err != nil {
		return nil, fmt.Errorf("pod %q: %w", name, err)
	}
	var extra [][2]string
	if class != "" {
		extra = append(extra, [2]string{qos.EnvArgClass, class})
	}
	if egress != "" {
		if _, err := qos.ParseRate(egress); err != nil {
			return nil, fmt.Errorf("pod %q: egress rate: %w", name, err)
		}
		extra = append(extra, [2]string{qos.EnvArgEgress, egress})
	}
	if len(labels) > 0 {
		extra = append(extra, [2]string{"GENIE_LABELS", genie.LabelsArg(labels)})
	}
	label := class
	if egress != "" {
		label = strings.TrimSpace(label + " egress " + egress)
	}
	return s.podAdd(ctx, name, node, nets, extra, label)
}
