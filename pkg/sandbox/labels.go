package sandbox

import (
	"context"

	"github.com/cni-genie/cni-genie/pkg/genie"
)

// PodAddLabeled is PodAdd for a pod with labels: genie passes them (CNI_ARGS
// GENIE_LABELS) to the agent, which publishes them on the pod's endpoint
// records, where service selectors match them.
func (s *Sandbox) PodAddLabeled(ctx context.Context, name, node string, nets []string, labels map[string]string) (*Pod, error) {
	var extra [][2]string
	if len(labels) > 0 {
		extra = [][2]string{{"GENIE_LABELS", genie.LabelsArg(labels)}}
	}
	return s.podAdd(ctx, name, node, nets, extra, "")
}
