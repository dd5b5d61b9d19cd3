package kubenode

import (
	"fmt"
	"os"
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

// Processes returns the PIDs of the processes running exe (the first word
// of their command line) inside the node's network namespace, such as a
// DaemonSet's container in the host network.
func (n *Node) Processes(exe string) []int {
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", n.holderPID))
	if err != nil {
		return nil
	}
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if first, _, _ := strings.Cut(string(cmd), "\x00"); first != exe {
			continue
		}
		if l, _ := os.Readlink("/proc/" + d.Name() + "/ns/net"); l == want {
			pids = append(pids, pid)
		}
	}
	return pids
}
