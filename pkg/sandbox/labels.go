package sandbox

import (
	"context"
	"fmt"

	"github.com/cni-genie/cni-genie/pkg/genie"
)

// PodAddLabeled is PodAdd for a pod with labels: genie passes them (CNI_ARGS
// GENIE_LABELS) to the agent, which publishes them on the pod's endpoint
// records, where service selectors match them.
func (s *Sandbox) PodAddLabeled(ctx context.Context, name, node string, nets []string, labels map[string]string) (*Pod, error) {
	if len(labels) == 0 {
		return s.PodAdd(ctx, name, node, nets)
	}
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
	args := [][2]string{{"IgnoreUnknown", "1"}, {"GENIE_NETWORKS", sel}, {"GENIE_LABELS", genie.LabelsArg(labels)}}
	p, err := s.podAddLocked(ctx, name, n, conf, args)
	if err != nil {
		return nil, err
	}
	p.Nets = nets
	labelInterfaces(p, sel)
	return p, s.save()
}
