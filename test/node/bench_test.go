package node

import (
	"fmt"
	"os"
	"sort"
	"strings"
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
//
// With GENIE_TEST_HELM_SET=cni.logLevel=debug the plugin logs each
// attachment's time, and the benchmark reports where genie's time goes.
func BenchmarkPodStartup(b *testing.B) {
	e := setup(b)
	e.helmInstall()
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
	e.pluginProfile(b)
}

// pluginProfile reports the medians of genie's own timings from its debug
// log on the node: the whole ADD, each attachment by network, and the rest
// (process start, API reads, network-status patch, records).
func (e *env) pluginProfile(b *testing.B) {
	log, err := os.ReadFile(e.n.NodePath("/var/log/genie/genie.log"))
	if err != nil {
		return
	}
	field := func(l, k string) string {
		i := strings.Index(l, " "+k+"=")
		if i < 0 {
			return ""
		}
		v := l[i+len(k)+2:]
		if j := strings.IndexByte(v, ' '); j >= 0 {
			v = v[:j]
		}
		return v
	}
	by := map[string][]time.Duration{}
	for _, l := range strings.Split(string(log), "\n") {
		d, err := time.ParseDuration(field(l, "took"))
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(l, "msg=added") && field(l, "networks") == "3":
			by["ADD total"] = append(by["ADD total"], d)
			if dd, err := time.ParseDuration(field(l, "delegates")); err == nil {
				by["ADD outside attachments"] = append(by["ADD outside attachments"], d-dd)
			}
		case strings.Contains(l, "msg=attach"):
			by["attach "+field(l, "network")] = append(by["attach "+field(l, "network")], d)
		}
	}
	for _, k := range keys(by) {
		b.Logf("genie %s: median %v of %d", k, medianOf(by[k]).Round(100*time.Microsecond), len(by[k]))
	}
}

func medianOf(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
