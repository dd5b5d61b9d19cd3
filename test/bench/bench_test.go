package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

// path is one measured pair of namespaces.
type path struct {
	name     string
	from, to sandbox.Endpoint
	ip       netip.Addr
}

type result struct {
	gbps     []float64
	rtx      []float64 // TCP retransmitted segments per iperf3 run
	p50, p99 []time.Duration
}

func median[T int64 | float64 | time.Duration](v []T) T {
	s := append([]T(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// TestPrivilegedDataPlaneBench measures the overlay against its baselines
// in one sandbox. It only runs with GENIE_BENCH=1 (hack/bench.sh).
// GENIE_BENCH_BASELINES_ONLY=1 measures the baselines without agents.
func TestPrivilegedDataPlaneBench(t *testing.T) {
	if os.Getenv("GENIE_BENCH") != "1" {
		t.Skip("benchmarks run only with GENIE_BENCH=1 (hack/bench.sh)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("needs iperf3")
	}
	cniDir, ok := sandbox.TestCNIBinDir()
	if !ok {
		t.Skipf("needs the CNI reference plugins in %s (hack/build-test-bins.sh)", cniDir)
	}
	overlay := os.Getenv("GENIE_BENCH_BASELINES_ONLY") != "1"
	if overlay {
		if err := sandbox.CheckBPFFS(sandbox.DefaultBPFRoot); err != nil {
			t.Skipf("needs bpffs: %v", err)
		}
	}
	rounds := envInt("GENIE_BENCH_ROUNDS", 7)
	secs := envInt("GENIE_BENCH_SECONDS", 3)
	rtts := envInt("GENIE_BENCH_RTTS", 20000)

	bin := t.TempDir()
	if err := sandbox.BuildBinaries(bin); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	name := "bench" + testenv.RandSuffix()
	sb, err := sandbox.Up(ctx, sandbox.Options{Name: name, Nodes: 2, BinDir: bin, CNIBinDir: cniDir,
		NoAgents: !overlay, Log: sandboxtest.Log(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sb.Down(context.Background()); err != nil {
			t.Errorf("down: %v", err)
		}
	})

	ep := func(ref string) sandbox.Endpoint {
		p, err := sb.Netns(ref)
		if err != nil {
			t.Fatal(err)
		}
		return sandbox.Endpoint{Netns: p}
	}
	podIP := func(p *sandbox.Pod) netip.Addr {
		ip, ok := p.IP("")
		if !ok {
			t.Fatalf("pod %s has no IPv4 address: %+v", p.Name, p.Interfaces)
		}
		return ip
	}

	var paths []path
	// Baselines.
	brA, err := sb.BridgePod(ctx, "br-a", "node1", "10.99.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	brB, err := sb.BridgePod(ctx, "br-b", "node1", "10.99.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	flA, flB, err := sb.FlannelPair("node1", "node2", "fl-a", "fl-b")
	if err != nil {
		t.Fatal(err)
	}
	n1, n2 := sb.Nodes()[0], sb.Nodes()[1]
	vhNs, vhCleanup, err := vethHopFloor(sb, n1, n2, "vh-a", netip.MustParseAddr("10.98.1.2"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := vhCleanup(); err != nil {
			t.Errorf("veth-hop floor cleanup: %v", err)
		}
	})
	bridge := path{"bridge same-node", ep(brA.Name), ep(brB.Name), podIP(brB)}
	underlay := path{"underlay node-to-node", ep("node1"), ep("node2"), n2.UnderlayIP}
	floor := path{"veth-hop floor cross-node", sandbox.Endpoint{Netns: vhNs}, ep("node2"), n2.UnderlayIP}
	flannel := path{"flannel-style cross-node", ep(flA.Name), ep(flB.Name), podIP(flB)}
	if overlay {
		st, err := etcdstore.New(ctx, []string{sb.StoreEndpoint()}, etcdstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.CreateVPC(ctx, vpc.VPC{Name: "bench", CIDR: netip.MustParsePrefix("10.20.0.0/16")}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: "bench", Name: "pods", CIDR: netip.MustParsePrefix("10.20.1.0/24")}); err != nil {
			t.Fatal(err)
		}
		ovA, err := sb.PodAdd(ctx, "ov-a", "node1", []string{"bench/pods"})
		if err != nil {
			t.Fatal(err)
		}
		ovB, err := sb.PodAdd(ctx, "ov-b", "node1", []string{"bench/pods"})
		if err != nil {
			t.Fatal(err)
		}
		ovC, err := sb.PodAdd(ctx, "ov-c", "node2", []string{"bench/pods"})
		if err != nil {
			t.Fatal(err)
		}
		// Each overlay path runs right after its baselines, so a burst of
		// background load tends to hit both sides of a ratio.
		paths = []path{bridge,
			{"overlay same-node", ep(ovA.Name), ep(ovB.Name), podIP(ovB)},
			underlay,
			floor,
			{"overlay cross-node", ep(ovA.Name), ep(ovC.Name), podIP(ovC)},
			flannel}
	} else {
		paths = []path{bridge, underlay, floor, flannel}
	}
	// Every path must carry traffic before it is measured.
	for _, p := range paths {
		if err := sandbox.ProbeTCP(ctx, p.from, p.to, p.ip, 7000, 5*time.Second); err != nil {
			t.Fatalf("%s: no connectivity: %v", p.name, err)
		}
	}

	res := map[string]*result{}
	for _, p := range paths {
		res[p.name] = &result{}
	}
	latPaths := map[string]bool{"underlay node-to-node": true, "veth-hop floor cross-node": true,
		"overlay cross-node": true, "flannel-style cross-node": true}
	for r := 0; r < rounds; r++ {
		for _, p := range paths {
			bps, rtx, err := iperf3(ctx, p, secs)
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			res[p.name].gbps = append(res[p.name].gbps, bps/1e9)
			res[p.name].rtx = append(res[p.name].rtx, float64(rtx))
			t.Logf("round %d %-26s %6.2f Gbit/s %6d retransmits", r+1, p.name, bps/1e9, rtx)
		}
		for _, p := range paths {
			if !latPaths[p.name] {
				continue
			}
			p50, p99, err := pingPong(ctx, p, rtts)
			if err != nil {
				t.Fatalf("%s latency: %v", p.name, err)
			}
			res[p.name].p50 = append(res[p.name].p50, p50)
			res[p.name].p99 = append(res[p.name].p99, p99)
			t.Logf("round %d %-26s p50 %v p99 %v", r+1, p.name, p50, p99)
		}
	}

	var ready []readiness
	if overlay {
		ready = measureReadiness(t, sb, ep("ov-a"), envInt("GENIE_BENCH_PODS", 10))
	}

	var b strings.Builder
	fmt.Fprintf(&b, "Data-plane benchmarks: %d rounds; per round each path gets one %ds iperf3 TCP run and, cross-node, %d TCP 1-byte round trips.\n", rounds, secs, rtts)
	fmt.Fprintf(&b, "Background load only ever lowers throughput, so \"best\" estimates capacity; \"paired\" is the median over rounds of the ratio of back-to-back runs, \"IQR\" the interquartile range of those per-round ratios (the noise).\n")
	fmt.Fprintf(&b, "The veth-hop floor is a pod on node1 attached by a plain routed veth (no BPF, no encapsulation) talking to node2's underlay address: the underlay plus the one veth hop per direction that any veth-attached pod pays.\n")
	fmt.Fprintf(&b, "Retransmits are TCP segments resent per run; on veths they are spurious, caused by reordering between the two CPUs' backlog queues.\n\n")
	fmt.Fprintf(&b, "| path | TCP median | TCP best | retransmits (median) | latency p50 | latency p99 |\n|---|---|---|---|---|---|\n")
	for _, p := range paths {
		r := res[p.name]
		p50, p99 := "-", "-"
		if len(r.p50) > 0 {
			p50, p99 = median(r.p50).String(), median(r.p99).String()
		}
		fmt.Fprintf(&b, "| %s | %.2f Gbit/s | %.2f Gbit/s | %.0f | %s | %s |\n", p.name, median(r.gbps), best(r.gbps), median(r.rtx), p50, p99)
	}
	if overlay {
		tput := func(r *result) []float64 { return r.gbps }
		p50 := func(r *result) []float64 { return durs(r.p50) }
		p99 := func(r *result) []float64 { return durs(r.p99) }
		row := func(what, a, base string, q func(*result) []float64, target string, withBest bool) {
			bst := "-"
			if withBest {
				bst = fmt.Sprintf("%.2fx", best(q(res[a]))/best(q(res[base])))
			}
			lo, hi := pairedIQR(q(res[a]), q(res[base]))
			fmt.Fprintf(&b, "| %s | %.2fx | %.2f..%.2f | %s | %s |\n", what, pairedRatio(q(res[a]), q(res[base])), lo, hi, bst, target)
		}
		fmt.Fprintf(&b, "\n| ratio | paired median | IQR | best / best | target |\n|---|---|---|---|---|\n")
		row("same-node overlay / bridge plugin, throughput", "overlay same-node", "bridge same-node", tput, ">= 1.00x", true)
		row("cross-node overlay / underlay, throughput", "overlay cross-node", "underlay node-to-node", tput, ">= 0.95x", true)
		row("cross-node overlay / flannel-style, throughput", "overlay cross-node", "flannel-style cross-node", tput, ">= 1.05x", true)
		row("cross-node overlay / veth-hop floor, throughput", "overlay cross-node", "veth-hop floor cross-node", tput, "-", true)
		row("veth-hop floor / underlay, throughput (a veth's cost)", "veth-hop floor cross-node", "underlay node-to-node", tput, "-", true)
		row("cross-node overlay / underlay, latency p50", "overlay cross-node", "underlay node-to-node", p50, "<= 1.05x", false)
		row("cross-node overlay / veth-hop floor, latency p50", "overlay cross-node", "veth-hop floor cross-node", p50, "-", false)
		row("veth-hop floor / underlay, latency p50 (a veth's cost)", "veth-hop floor cross-node", "underlay node-to-node", p50, "-", false)
		row("cross-node overlay / underlay, latency p99", "overlay cross-node", "underlay node-to-node", p99, "-", false)
		row("flannel-style / underlay, latency p50 (for scale)", "flannel-style cross-node", "underlay node-to-node", p50, "-", false)
	}
	if len(ready) > 0 {
		var adds, lags []time.Duration
		first := 0
		for _, r := range ready {
			adds = append(adds, r.add)
			lags = append(lags, r.lag)
			if r.tries == 1 {
				first++
			}
		}
		sort.Slice(adds, func(i, j int) bool { return adds[i] < adds[j] })
		sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
		fmt.Fprintf(&b, "\n| readiness (%d pods added on node2, probed from node1) | p50 | max |\n|---|---|---|\n", len(ready))
		fmt.Fprintf(&b, "| CNI ADD through genie and genied | %v | %v |\n", median(adds).Round(time.Microsecond), adds[len(adds)-1].Round(time.Microsecond))
		fmt.Fprintf(&b, "| ADD returned -> first UDP round trip from a remote pod | %v | %v |\n", median(lags).Round(time.Microsecond), lags[len(lags)-1].Round(time.Microsecond))
		fmt.Fprintf(&b, "| first packet after ADD answered | %d of %d pods | |\n", first, len(ready))
	}
	t.Log("\n" + b.String())
	if out := os.Getenv("GENIE_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// iperf3 runs a one-off iperf3 server in p.to and a client in p.from and
// returns the received throughput in bit/s and the sender's retransmitted
// segments.
func iperf3(ctx context.Context, p path, secs int) (float64, int, error) {
	port := "5201"
	srv := exec.CommandContext(ctx, "nsenter", "--net="+p.to.Netns, "--", "iperf3", "-s", "-1", "-p", port)
	srv.Stdout, srv.Stderr = io.Discard, io.Discard
	if err := srv.Start(); err != nil {
		return 0, 0, fmt.Errorf("iperf3 server: %w", err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	type report struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
		} `json:"end"`
		Error string `json:"error"`
	}
	var r report
	for try := 0; ; try++ {
		cli := exec.CommandContext(ctx, "nsenter", "--net="+p.from.Netns, "--", "iperf3", "-c", p.ip.String(), "-p", port,
			"-t", strconv.Itoa(secs), "-J")
		out, err := cli.Output()
		r = report{}
		if jerr := json.Unmarshal(out, &r); jerr != nil {
			return 0, 0, fmt.Errorf("iperf3 client: %v: output %q", err, out)
		}
		// The server may not listen yet: retry "unable to connect" for 5s.
		if r.Error != "" && strings.Contains(r.Error, "connect") && try < 50 {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if r.Error != "" {
			return 0, 0, fmt.Errorf("iperf3: %s", r.Error)
		}
		if err != nil {
			return 0, 0, fmt.Errorf("iperf3 client: %w", err)
		}
		break
	}
	return r.End.SumReceived.BitsPerSecond, r.End.SumSent.Retransmits, nil
}

// pingPong measures n TCP round trips of one byte between p.from and p.to
// (after a warm-up) and returns the p50 and p99 of the round-trip times.
func pingPong(ctx context.Context, p path, n int) (time.Duration, time.Duration, error) {
	l, err := sandbox.ListenTCP(p.to, ":7001")
	if err != nil {
		return 0, 0, err
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := sandbox.DialTCP(ctx, p.from, netip.AddrPortFrom(p.ip, 7001).String())
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	buf := []byte{1}
	warm := n / 10
	rtt := make([]time.Duration, 0, n)
	for i := 0; i < n+warm; i++ {
		t0 := time.Now()
		if _, err := c.Write(buf); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return 0, 0, err
		}
		if i >= warm {
			rtt = append(rtt, time.Since(t0))
		}
	}
	sort.Slice(rtt, func(i, j int) bool { return rtt[i] < rtt[j] })
	return rtt[len(rtt)/2], rtt[len(rtt)*99/100], nil
}

func best(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func durs(v []time.Duration) []float64 {
	out := make([]float64, len(v))
	for i, d := range v {
		out[i] = float64(d)
	}
	return out
}

// pairedRatio is the median over rounds of a[i]/base[i].
func pairedRatio(a, base []float64) float64 {
	var r []float64
	for i := range min(len(a), len(base)) {
		if base[i] > 0 {
			r = append(r, a[i]/base[i])
		}
	}
	return median(r)
}

// pairedIQR is the interquartile range of the per-round ratios a[i]/base[i]:
// how much the paired ratio moves with background load.
func pairedIQR(a, base []float64) (float64, float64) {
	var r []float64
	for i := range min(len(a), len(base)) {
		if base[i] > 0 {
			r = append(r, a[i]/base[i])
		}
	}
	if len(r) == 0 {
		return 0, 0
	}
	sort.Float64s(r)
	return r[len(r)/4], r[len(r)-1-len(r)/4]
}

type readiness struct {
	add, lag time.Duration
	// tries is the number of probes sent until the first answer (1 = the
	// very first packet after ADD got through).
	tries int
}

// measureReadiness adds n pods on node2, one at a time, and measures how
// long the CNI ADD takes and how long after it returns a pod on node1
// first gets a UDP answer from the new pod (1ms probe interval). A lag of
// one interval means the pod was reachable the moment ADD returned.
func measureReadiness(t *testing.T, sb *sandbox.Sandbox, from sandbox.Endpoint, n int) []readiness {
	ctx := context.Background()
	var out []readiness
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("rd-%d", i)
		t0 := time.Now()
		p, err := sb.PodAdd(ctx, name, "node2", []string{"bench/pods"})
		if err != nil {
			t.Fatal(err)
		}
		add := time.Since(t0)
		ip, _ := p.IP("")
		srv := sandboxtest.EchoUDP(t, sandbox.Endpoint{Netns: p.Netns}, ":7100")
		cli, err := sandbox.ListenUDP(from, ":0")
		if err != nil {
			t.Fatal(err)
		}
		dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 7100))
		t1 := time.Now()
		var lag time.Duration
		tries := 0
		buf := make([]byte, 64)
		for time.Since(t1) < 10*time.Second {
			tries++
			cli.WriteTo([]byte("ready?"), dst)
			cli.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, _, err := cli.ReadFrom(buf); err == nil {
				lag = time.Since(t1)
				break
			}
		}
		cli.Close()
		srv.Close()
		if lag == 0 {
			t.Fatalf("pod %s (%s) not reachable from node1 10s after ADD", name, ip)
		}
		out = append(out, readiness{add, lag, tries})
		t.Logf("pod %s: ADD %v, reachable %v later (probe %d)", name, add.Round(time.Microsecond), lag.Round(time.Microsecond), tries)
		if err := sb.PodDel(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	return out
}
