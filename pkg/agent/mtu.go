package agent

import (
	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// podMTUFor is the MTU of v's pod interfaces: the VPC's own, else the
// smallest uplink MTU the cluster's nodes registered minus the
// encapsulation (vpc.VPC.PodMTU), so that a pod's packets fit every
// node's uplink, not just this one's; this node's own figure when no
// node registered an MTU (older agents).
func (a *Agent) podMTUFor(v vpc.VPC) int {
	a.mu.Lock()
	nodes := make([]vpc.Node, 0, len(a.nodes)+1)
	for _, n := range a.nodes {
		nodes = append(nodes, n)
	}
	a.mu.Unlock()
	nodes = append(nodes, a.node)
	return v.PodMTU(nodes, datapath.EncapOverhead, a.podMTU)
}
