package node

import (
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/install"
)

// BenchmarkPodStartup measures pod create → Running through the same
// kubelet in interleaved pairs: the bridge plugin alone (genie's conflist
// moved aside, which containerd picks up live), then a pod with genie's
// default network (the same bridge, wrapped) plus a bridge NAD and a VPC.
//
//	go test ./test/node -run '^$' -bench PodStartup -benchtime 10x
func BenchmarkPodStartup(b *testing.B) {
	e := setup(b)
	e.install()
	e.networks()
	conf := e.n.NodePath("/etc/cni/net.d/" + install.ConfName)
	off := conf + ".off"
	var bridge, genie []time.Duration
	ann := map[string]string{"k8s.v1.cni.cncf.io/networks": "nad-bridge,nad-blue"}
	// containerd reloads the conf dir on change; give it a moment and
	// check the pod's network-status to know which path it took.
	settle := func() { time.Sleep(500 * time.Millisecond) }
	for i := 0; i < b.N; i++ {
		if err := os.Rename(conf, off); err != nil {
			b.Fatal(err)
		}
		settle()
		p, d := e.runPod(fmt.Sprintf("bb-%d", i), nil)
		if _, ok := p.Annotations["k8s.v1.cni.cncf.io/network-status"]; ok {
			b.Fatal("bridge-only pod went through genie")
		}
		bridge = append(bridge, d)
		if err := os.Rename(off, conf); err != nil {
			b.Fatal(err)
		}
		settle()
		_, d = e.runPod(fmt.Sprintf("bg-%d", i), ann)
		if st := e.networkStatus(fmt.Sprintf("bg-%d", i)); len(st) != 3 {
			b.Fatalf("genie pod network-status %+v", st)
		}
		genie = append(genie, d)
		e.deletePods(fmt.Sprintf("bb-%d", i), fmt.Sprintf("bg-%d", i))
	}
	mb, mg := medianOf(bridge), medianOf(genie)
	b.ReportMetric(float64(mb.Milliseconds()), "bridge-ms")
	b.ReportMetric(float64(mg.Milliseconds()), "genie-ms")
	b.ReportMetric(float64(mg)/float64(mb), "ratio")
	if pid := e.agentPID(); pid > 0 {
		b.ReportMetric(float64(rssMiB(pid)), "genied-MiB")
	}
	b.Logf("bridge alone %v; genie default+NAD+VPC %v", bridge, genie)
}

func medianOf(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
