package genie

import (
	"slices"
	"strings"
)

// podLabels returns the pod's labels for the endpoint records of its VPC
// attachments (service selectors match them): the pod object's labels in
// Kubernetes mode, else CNI_ARGS GENIE_LABELS ("k:v,k2:v2"; CNI_ARGS
// values cannot hold '='). Malformed pairs are skipped.
func (inv *invocation) podLabels() map[string]string {
	if inv.podObj != nil {
		return inv.podObj.Labels
	}
	return ParseLabelsArg(string(inv.pod.GENIE_LABELS))
}

// ParseLabelsArg parses a GENIE_LABELS value, "k:v,k2:v2".
func ParseLabelsArg(s string) map[string]string {
	var out map[string]string
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), ":")
		if !ok || k == "" {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

// LabelsArg formats labels as a GENIE_LABELS value (sorted keys).
func LabelsArg(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ":" + labels[k]
	}
	return strings.Join(parts, ",")
}
