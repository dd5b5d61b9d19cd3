package kubenode

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
)

// PodNetNS opens the network namespace of a running pod's first container
// (through the container's task PID, as containerd reports it). The caller
// closes it.
func (n *Node) PodNetNS(p *corev1.Pod) (ns.NetNS, error) {
	if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].ContainerID == "" {
		return nil, fmt.Errorf("pod %s/%s has no container yet", p.Namespace, p.Name)
	}
	id := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")
	out, err := n.Ctr("tasks", "ls")
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			if err != nil {
				break
			}
			return ns.GetNS(fmt.Sprintf("/proc/%d/ns/net", pid))
		}
	}
	return nil, fmt.Errorf("pod %s/%s: no task for container %s", p.Namespace, p.Name, id)
}
