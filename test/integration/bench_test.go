package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

// samples holds each sub-benchmark's per-iteration ADD+DEL durations, so the
// genie run can report its overhead against the direct run of the same
// process.
var samples = map[string][]time.Duration{}

// childrenCPU is the user+system CPU time of every reaped child process
// (and the descendants they reaped) so far: the plugins a runtime runs.
func childrenCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// BenchmarkAddDel compares one ADD+DEL of a bridge+host-local network called
// directly through libcni (as a runtime would) with the same network reached
// through genie (runtime -> genie -> bridge -> host-local), in the same run
// and the same namespaces. Run direct first:
//
//	go test ./test/integration -run '^$' -bench BenchmarkAddDel -benchtime 200x -count 1
func BenchmarkAddDel(b *testing.B) {
	n := newNode(b, "1.1.0", map[string]any{"defaultNetworks": []string{"br-a"}, "logLevel": "warn"})
	pod := testenv.NewNS(b)
	cniPath := filepath.SplitList(n.cniPath)
	// The runtime's libcni cache goes to a temp dir, not /var/lib/cni.
	cni := libcni.NewCNIConfigWithCacheDir(cniPath, b.TempDir(), nil)
	lists := map[string]*libcni.NetworkConfigList{}
	// floor: the same bridge config behind passthru, the least an exec-based
	// meta-plugin can cost (one more process); genie's own cost is the rest.
	br, err := os.ReadFile(filepath.Join(n.confDir, "10-br-a.conf"))
	if err != nil {
		b.Fatal(err)
	}
	floor := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"floor","plugins":[{"type":"passthru","delegate":%s}]}`, br)
	if lists["floor"], err = parseList([]byte(floor)); err != nil {
		b.Fatal(err)
	}
	for name, file := range map[string]string{"direct": "10-br-a.conf", "genie": "00-genie.conflist"} {
		data, err := os.ReadFile(filepath.Join(n.confDir, file))
		if err != nil {
			b.Fatal(err)
		}
		l, err := parseList(data)
		if err != nil {
			b.Fatal(err)
		}
		lists[name] = l
	}
	ctx := context.Background()
	i := 0
	// cpu holds each mode's per-iteration plugin CPU time (paired only).
	cpu := map[string][]time.Duration{}
	// addDel runs one ADD+DEL of mode and returns its wall time; it records
	// the CPU time the plugin processes used in cpu[mode].
	addDel := func(b *testing.B, mode string) time.Duration {
		rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("bench-%s-%d", mode, i), NetNS: pod.Path(),
			IfName: "eth0", Args: [][2]string{{"IgnoreUnknown", "1"}}}
		i++
		cpu0 := childrenCPU(b)
		start := time.Now()
		defer func() { cpu[mode] = append(cpu[mode], childrenCPU(b)-cpu0) }()
		err := n.host.Do(func(ns.NetNS) error {
			if _, err := cni.AddNetworkList(ctx, lists[mode], rt); err != nil {
				return fmt.Errorf("add: %w", err)
			}
			return cni.DelNetworkList(ctx, lists[mode], rt)
		})
		if err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	report := func(b *testing.B, prefix string, d []time.Duration) {
		b.ReportMetric(float64(quantile(d, 0.5).Microseconds())/1000, prefix+"median-ms")
		b.ReportMetric(float64(quantile(d, 0.99).Microseconds())/1000, prefix+"p99-ms")
	}
	overhead := func(b *testing.B, direct, genie []time.Duration) {
		b.ReportMetric(100*(float64(quantile(genie, 0.5))/float64(quantile(direct, 0.5))-1), "median-overhead-%")
		b.ReportMetric(100*(float64(quantile(genie, 0.99))/float64(quantile(direct, 0.99))-1), "p99-overhead-%")
	}
	for _, mode := range []string{"direct", "genie"} {
		b.Run(mode, func(b *testing.B) {
			var durs []time.Duration
			for b.Loop() {
				durs = append(durs, addDel(b, mode))
			}
			samples[mode] = durs
			report(b, "", durs)
			if d := samples["direct"]; mode == "genie" && len(d) > 0 {
				overhead(b, d, durs)
			}
		})
	}
	// paired rotates direct, floor and genie iteration by iteration, so load
	// from other processes on the machine hits all alike: the fairest
	// overhead figure on a shared machine. It also reports the CPU time of
	// the plugin processes per ADD+DEL (cpu-median-ms), which load inflates
	// far less than wall time: on 2 busy cores every CPU millisecond genie
	// adds costs several of wall time.
	b.Run("paired", func(b *testing.B) {
		modes := []string{"direct", "floor", "genie"}
		clear(cpu)
		d := map[string][]time.Duration{}
		k := 0
		for b.Loop() {
			for j := range modes {
				m := modes[(j+k)%len(modes)]
				d[m] = append(d[m], addDel(b, m))
			}
			k++
		}
		for _, m := range modes {
			report(b, m+"-", d[m])
			b.ReportMetric(float64(quantile(cpu[m], 0.5).Microseconds())/1000, m+"-cpu-median-ms")
		}
		overhead(b, d["direct"], d["genie"])
		b.ReportMetric(100*(float64(quantile(d["floor"], 0.5))/float64(quantile(d["direct"], 0.5))-1), "floor-median-overhead-%")
		b.ReportMetric(100*(float64(quantile(d["genie"], 0.5))/float64(quantile(d["floor"], 0.5))-1), "genie-vs-floor-median-%")
	})
	if a := n.allocations(); len(a) != 0 {
		b.Fatalf("allocations left: %v", a)
	}
}

func parseList(data []byte) (*libcni.NetworkConfigList, error) {
	if l, err := libcni.NetworkConfFromBytes(data); err == nil && len(l.Plugins) > 0 {
		return l, nil
	}
	pc, err := libcni.NetworkPluginConfFromBytes(data)
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromConf(pc) //nolint:staticcheck // up-converting a .conf, as runtimes do
}

// BenchmarkProcessStart isolates what genie adds per CNI call: starting one
// more process. It runs the VERSION verb (no work beyond start-up) of genie
// and of the bridge plugin, alternating, and reports both medians.
func BenchmarkProcessStart(b *testing.B) {
	cniBin, _ := tools(b)
	bins := map[string]string{"bridge": filepath.Join(cniBin, "bridge"), "genie": filepath.Join(genieBinary(b), "genie")}
	run := func(path string) time.Duration {
		cmd := exec.Command(path)
		cmd.Env = append(os.Environ(), "CNI_COMMAND=VERSION")
		start := time.Now()
		if out, err := cmd.Output(); err != nil {
			b.Fatalf("%s VERSION: %v %s", path, err, out)
		}
		return time.Since(start)
	}
	var d = map[string][]time.Duration{}
	for b.Loop() {
		for _, name := range []string{"bridge", "genie"} {
			d[name] = append(d[name], run(bins[name]))
		}
	}
	for _, name := range []string{"bridge", "genie"} {
		b.ReportMetric(float64(quantile(d[name], 0.5).Microseconds())/1000, name+"-median-ms")
	}
}
