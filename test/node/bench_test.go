package node

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/install"
)

// BenchmarkPodStartup measures pod create → Running through the same
// kubelet in interleaved triples: the bridge plugin alone (genie's
// conflist moved aside, which containerd picks up live), then a pod with
// genie's default network (the same bridge, wrapped) plus a bridge NAD and
// a VPC, once with attachParallelism 4 (the two extra networks attached
// at once, after the default one) and once with attachParallelism 1 (the
// default: all three in order), in alternating order. Both arms set it
// explicitly: when the default became 1 the installed conflist left
// "parallel" sequential too, and both arms measured the same thing.
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
	installed, err := os.ReadFile(conf)
	if err != nil {
		b.Fatal(err)
	}
	parConf := withAttachParallelism(b, installed, 4)
	seqConf := withAttachParallelism(b, installed, 1)
	// put replaces genie's conflist atomically (a .tmp name containerd
	// does not load, then a rename).
	put := func(data []byte) {
		if err := os.WriteFile(conf+".tmp", data, 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(conf+".tmp", conf); err != nil {
			b.Fatal(err)
		}
	}
	var bridge, genie, genieSeq []time.Duration
	ann := map[string]string{"k8s.v1.cni.cncf.io/networks": "nad-bridge,nad-blue"}
	// containerd reloads the conf dir on change; give it a moment and
	// check the pod's network-status to know which path it took.
	settle := func() { time.Sleep(500 * time.Millisecond) }
	runGenie := func(name string, data []byte, into *[]time.Duration) {
		put(data)
		settle()
		_, d := e.runPod(name, ann)
		if st := e.networkStatus(name); len(st) != 3 {
			b.Fatalf("genie pod network-status %+v", st)
		}
		*into = append(*into, d)
	}
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
		if i%2 == 0 {
			runGenie(fmt.Sprintf("bg-%d", i), parConf, &genie)
			runGenie(fmt.Sprintf("bs-%d", i), seqConf, &genieSeq)
		} else {
			runGenie(fmt.Sprintf("bs-%d", i), seqConf, &genieSeq)
			runGenie(fmt.Sprintf("bg-%d", i), parConf, &genie)
		}
		e.deletePods(fmt.Sprintf("bb-%d", i), fmt.Sprintf("bg-%d", i), fmt.Sprintf("bs-%d", i))
	}
	put(installed)
	mb, mg, ms := medianOf(bridge), medianOf(genie), medianOf(genieSeq)
	b.ReportMetric(float64(mb.Milliseconds()), "bridge-ms")
	b.ReportMetric(float64(mg.Milliseconds()), "genie-ms")
	b.ReportMetric(float64(mg)/float64(mb), "ratio")
	b.ReportMetric(float64(ms.Milliseconds()), "genie-seq-ms")
	b.ReportMetric(float64(ms)/float64(mb), "ratio-seq")
	if pid := e.agentPID(); pid > 0 {
		b.ReportMetric(float64(rssMiB(pid)), "genied-MiB")
	}
	b.Logf("bridge alone %v; genie default+NAD+VPC %v; the same, attachParallelism 1 %v", bridge, genie, genieSeq)
	e.pluginProfile(b)
}

// withAttachParallelism returns genie's conflist with attachParallelism
// set on its genie plugin.
func withAttachParallelism(b *testing.B, conflist []byte, p int) []byte {
	var c map[string]any
	if err := json.Unmarshal(conflist, &c); err != nil {
		b.Fatal(err)
	}
	plugins, _ := c["plugins"].([]any)
	found := false
	for _, pl := range plugins {
		if m, ok := pl.(map[string]any); ok && m["type"] == "genie" {
			m["attachParallelism"], found = p, true
		}
	}
	if !found {
		b.Fatalf("no genie plugin in %s", conflist)
	}
	out, err := json.Marshal(c)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// pluginProfile reports the medians of genie's own timings from its debug
// log on the node: the whole ADD (after process start-up), the wall time of
// its attachments (the first alone, the others at once) and each of them
// by network, the rest (API reads, network-status patch, records), and the
// phases: resolved and planned (since the ADD began), the status patch.
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
	// The lines of one ADD come before its "added" line, which says its
	// attachParallelism (pods are started one at a time).
	pending := map[string][]time.Duration{}
	for _, l := range strings.Split(string(log), "\n") {
		d, err := time.ParseDuration(field(l, "took"))
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(l, "msg=added") && field(l, "networks") == "3":
			p := " (attachParallelism " + field(l, "attachParallelism") + ")"
			for k, v := range pending {
				by[k+p] = append(by[k+p], v...)
			}
			clear(pending)
			by["ADD total"+p] = append(by["ADD total"+p], d)
			if dd, err := time.ParseDuration(field(l, "attaching")); err == nil {
				by["ADD attaching, wall"+p] = append(by["ADD attaching, wall"+p], dd)
				by["ADD outside attachments"+p] = append(by["ADD outside attachments"+p], d-dd)
			}
		case strings.Contains(l, "msg=attach "):
			pending["attach "+field(l, "network")] = append(pending["attach "+field(l, "network")], d)
		case phaseOf(l) != "":
			k := phaseOf(l)
			pending["phase "+k] = append(pending["phase "+k], d)
		}
	}
	for _, k := range keys(by) {
		b.Logf("genie %s: median %v of %d", k, medianOf(by[k]).Round(100*time.Microsecond), len(by[k]))
	}
}

// phases are genie's debug lines that time a phase of ADD: the message
// and how the profile names it.
var phases = [][2]string{
	{"msg=\"pod read\"", "pod read (since the ADD began)"},
	{"msg=\"nads read\"", "NADs read (since the ADD began)"},
	{"msg=resolved ", "resolved (since the ADD began)"},
	{"msg=planned ", "planned, record written (since the ADD began)"},
	{"msg=\"network-status written\"", "network-status patch"},
}

func phaseOf(l string) string {
	for _, p := range phases {
		if strings.Contains(l, p[0]) {
			return p[1]
		}
	}
	return ""
}

func medianOf(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
