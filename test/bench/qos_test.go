package bench

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/qos"
	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// TestPrivilegedQoSBench measures QoS under contention on node1's uplink,
// shaped by the agent's tree to GENIE_BENCH_QOS_RATE (default 500 Mbit/s):
// pods high, normal, low and one with an egress limit on node1 send bulk
// TCP to receivers on node2. Rate limits in both directions: the egress
// limit (HTB), and an ingress limit (the BPF policer) toward a pod on
// node1 from node2 (decapsulated) and from node1 (same node). Baselines in
// the same run: the uplink shaped by a single HTB class of the same rate
// (QoS off, same shaping), no qdisc at all (QoS off, unshaped), and a pod
// without an ingress limit for one whose limit never binds. Only with
// GENIE_BENCH=1.
func TestPrivilegedQoSBench(t *testing.T) {
	if os.Getenv("GENIE_BENCH") != "1" {
		t.Skip("benchmarks run only with GENIE_BENCH=1")
	}
	testenv.RequireRoot(t, "network namespaces")
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("needs iperf3")
	}
	rate := uint64(envInt("GENIE_BENCH_QOS_RATE", 500_000_000))
	rounds := envInt("GENIE_BENCH_ROUNDS", 3)
	secs := envInt("GENIE_BENCH_SECONDS", 5)
	bin := t.TempDir()
	if err := sandbox.BuildBinaries(bin); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cniDir, _ := sandbox.TestCNIBinDir()
	sb, err := sandbox.Up(ctx, sandbox.Options{Name: "qos" + testenv.RandSuffix(), Nodes: 2, BinDir: bin, CNIBinDir: cniDir,
		AgentArgs: []string{"--qos-uplink-rate", strconv.FormatUint(rate, 10)}, Log: sandboxtest.Log(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sb.Down(context.Background()); err != nil {
			t.Errorf("down: %v", err)
		}
	})
	st, err := sb.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateVPC(ctx, vpc.VPC{Name: "q", CIDR: netip.MustParsePrefix("10.71.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: "q", Name: "s", CIDR: netip.MustParsePrefix("10.71.1.0/24")}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	add := func(name, node string, q sandbox.PodQoS) (*sandbox.Pod, sandbox.Endpoint, netip.Addr) {
		p, err := sb.PodAddWithQoS(ctx, name, node, []string{"q/s"}, q, nil)
		if err != nil {
			t.Fatal(err)
		}
		ip, _ := p.IP("")
		return p, sandbox.Endpoint{Netns: p.Netns}, ip
	}
	_, hi, _ := add("hi", "1", sandbox.PodQoS{Class: "high"})
	_, no, _ := add("no", "1", sandbox.PodQoS{Class: "normal"})
	_, lo, _ := add("lo", "1", sandbox.PodQoS{Class: "low"})
	const limit = 50_000_000
	_, lim, _ := add("lim", "1", sandbox.PodQoS{Egress: "50M"})
	_, ilim, ilimIP := add("ilim", "1", sandbox.PodQoS{Ingress: "50M"})
	_, iopen, iopenIP := add("iopen", "1", sandbox.PodQoS{Ingress: "1T"}) // never binds
	_, plain, plainIP := add("plain", "1", sandbox.PodQoS{})
	_, rx, rxIP := add("rx", "2", sandbox.PodQoS{})

	node1 := sb.Nodes()[0].Netns
	var rep strings.Builder
	say := func(format string, a ...any) {
		fmt.Fprintf(&rep, format+"\n", a...)
		t.Logf(format, a...)
	}
	bulkTo := func(to sandbox.Endpoint, toIP netip.Addr, senders map[string]sandbox.Endpoint, extra ...string) map[string]float64 {
		r, err := bulkPorts(ctx, to, toIP, secs, senders, extra...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	bulk := func(senders map[string]sandbox.Endpoint) map[string]float64 { return bulkTo(rx, rxIP, senders) }
	say("QoS bench: uplink tree at %d Mbit/s, %d rounds of %d s", rate/1e6, rounds, secs)

	// The limits count the pod's IP packets; TCP goodput is at most
	// MSS/MTU of that (1398/1450 = 0.964 here, timestamps on). Two
	// figures per limit: the goodput, and the L3 rate the enforcing
	// counter saw in the steady state (from 1.5 s after the start to 1 s
	// before the end, so without the burst of the start): HTB's bytes
	// scaled by 1450/1514 for egress, the policer's passed bytes for
	// ingress (agent metrics).
	// The egress limit first: the pod class lives in the agent's tree,
	// which the baselines below replace.
	steady := func(run func() float64, counter func(map[string]float64) float64) (goodput, l3 float64) {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); goodput = run() }()
		time.Sleep(1500 * time.Millisecond)
		read := func() (float64, time.Time) {
			m, err := sb.Metrics(ctx, "node1")
			if err != nil {
				t.Error(err)
			}
			return counter(m), time.Now()
		}
		v0, t0 := read()
		time.Sleep(time.Duration(secs)*time.Second - 2500*time.Millisecond)
		v1, t1 := read()
		wg.Wait()
		return goodput, (v1 - v0) * 8 / t1.Sub(t0).Seconds()
	}
	// HTB's packet count of encapsulated GSO packets is 0 (see
	// qos.ClassStats): its bytes, full-size segments assumed.
	const podMTU = 1450
	htbL3 := func(m map[string]float64) float64 {
		return m[`genie_qos_class_bytes_total{class="",classid="1:100"}`] * podMTU / (podMTU + qos.WireOverhead)
	}
	policerL3 := func(m map[string]float64) float64 {
		return m[`genie_qos_ingress_bytes_total{class="none",verdict="pass"}`]
	}
	var limRates, limL3 []float64
	for range rounds {
		g, l3 := steady(func() float64 { return bulk(map[string]sandbox.Endpoint{"lim": lim})["lim"] }, htbL3)
		limRates, limL3 = append(limRates, g), append(limL3, l3)
	}
	say("egress limit %.0f Mbit/s: goodput %s Mbit/s, median ratio %.3f; L3 rate in the steady state %s Mbit/s, median ratio %.3f",
		limit/1e6, mbits(limRates), median(limRates)/limit, mbits1(limL3), median(limL3)/limit)
	for _, from := range []struct {
		name string
		ep   sandbox.Endpoint
	}{{"another node (decapsulated)", rx}, {"its own node", hi}} {
		var r, l3s []float64
		for range rounds {
			g, l3 := steady(func() float64 { return bulkTo(ilim, ilimIP, map[string]sandbox.Endpoint{"tx": from.ep})["tx"] }, policerL3)
			r, l3s = append(r, g), append(l3s, l3)
		}
		say("ingress limit %.0f Mbit/s from %s: goodput %s Mbit/s, median ratio %.3f; L3 rate in the steady state %s Mbit/s, median ratio %.3f",
			limit/1e6, from.name, mbits(r), median(r)/limit, mbits1(l3s), median(l3s)/limit)
	}
	// The policer's cost where it never binds: a same-node single flow
	// (several Gbit/s, no qdisc on the way) to a pod with a 1 Tbit/s
	// ingress limit vs to a pod without one, interleaved.
	var open, unl []float64
	for range rounds {
		open = append(open, bulkTo(iopen, iopenIP, map[string]sandbox.Endpoint{"tx": hi})["tx"])
		unl = append(unl, bulkTo(plain, plainIP, map[string]sandbox.Endpoint{"tx": hi})["tx"])
	}
	say("uncontended same-node single flow: to a pod with a non-binding ingress limit %s vs without %s Mbit/s: paired ratio %.3f",
		mbits(open), mbits(unl), pairedRatio(open, unl))

	var hiShare, loShare []float64
	for range rounds {
		r := bulk(map[string]sandbox.Endpoint{"hi": hi, "lo": lo})
		tot := r["hi"] + r["lo"]
		hiShare, loShare = append(hiShare, r["hi"]/tot), append(loShare, r["lo"]/tot)
		say("  high+low: high %.0f low %.0f Mbit/s", r["hi"]/1e6, r["lo"]/1e6)
	}
	say("high vs low, both saturating: high's share median %.3f (%s), low's %.3f", median(hiShare), fmts(hiShare), median(loShare))

	var three [3][]float64
	for range rounds {
		r := bulk(map[string]sandbox.Endpoint{"hi": hi, "no": no, "lo": lo})
		tot := r["hi"] + r["no"] + r["lo"]
		for i, k := range []string{"hi", "no", "lo"} {
			three[i] = append(three[i], r[k]/tot)
		}
	}
	say("high/normal/low all saturating: shares %.3f / %.3f / %.3f (documented 0.80 / 0.15 / 0.05)",
		median(three[0]), median(three[1]), median(three[2]))

	var idle99, load99, idle50, load50 []float64
	for range rounds {
		p50, p99, err := pingPong(ctx, path{from: hi, to: rx, ip: rxIP}, 3000)
		if err != nil {
			t.Fatal(err)
		}
		idle50, idle99 = append(idle50, float64(p50)), append(idle99, float64(p99))
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); bulkPorts(ctx, rx, rxIP, secs, map[string]sandbox.Endpoint{"lo": lo}) }()
		time.Sleep(1500 * time.Millisecond)
		p50, p99, err = pingPong(ctx, path{from: hi, to: rx, ip: rxIP}, 3000)
		if err != nil {
			t.Fatal(err)
		}
		load50, load99 = append(load50, float64(p50)), append(load99, float64(p99))
		wg.Wait()
	}
	say("high's TCP RR while low saturates: p50 %s vs idle %s µs; p99 %s vs idle %s µs; p99 ratio (median of rounds) %.2f",
		usecs(load50), usecs(idle50), usecs(load99), usecs(idle99), pairedRatio(load99, idle99))

	// Low alone, the tree vs QoS off with the same shaping (one HTB class
	// at the rate), interleaved.
	var loTree, loFlat []float64
	for range rounds {
		loTree = append(loTree, bulk(map[string]sandbox.Endpoint{"lo": lo})["lo"])
		setQdisc(t, node1, "flat", rate)
		loFlat = append(loFlat, bulk(map[string]sandbox.Endpoint{"lo": lo})["lo"])
		setQdisc(t, node1, "tree", rate)
	}
	say("low alone: tree %s vs one HTB class at the same rate %s Mbit/s: paired ratio %.3f", mbits(loTree), mbits(loFlat), pairedRatio(loTree, loFlat))

	// Uncontended single flow at line rate: no qdisc vs the tree at a
	// rate above the path's (so it never throttles), interleaved.
	lineRate := uint64(envInt("GENIE_BENCH_QOS_LINE_RATE", 30_000_000_000))
	var none, tree []float64
	for range rounds {
		setQdisc(t, node1, "none", 0)
		none = append(none, bulk(map[string]sandbox.Endpoint{"hi": hi})["hi"])
		setQdisc(t, node1, "tree", lineRate)
		tree = append(tree, bulk(map[string]sandbox.Endpoint{"hi": hi})["hi"])
	}
	say("uncontended single flow: no qdisc %s vs tree at %d Gbit/s %s Mbit/s: paired ratio %.3f",
		mbits(none), lineRate/1e9, mbits(tree), pairedRatio(tree, none))
	if out := os.Getenv("GENIE_BENCH_OUT"); out != "" {
		_ = os.WriteFile(out, []byte(rep.String()), 0o644)
	}
}

// setQdisc puts node netns's uplink root in mode: "tree" (qos.Install at
// rate), "flat" (one HTB class at rate, QoS off but shaped) or "none".
func setQdisc(t *testing.T, netns, mode string, rate uint64) {
	t.Helper()
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		link, err := netlink.LinkByName(sandbox.NodeUplink)
		if err != nil {
			return err
		}
		qs, _ := netlink.QdiscList(link)
		for _, q := range qs {
			if q.Attrs().Parent == netlink.HANDLE_ROOT && q.Type() == "htb" {
				if err := netlink.QdiscDel(q); err != nil {
					return err
				}
			}
		}
		switch mode {
		case "tree":
			tr, err := qos.Install(link, rate)
			if err != nil {
				return err
			}
			tr.Close()
		case "flat":
			q := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(2, 0), Parent: netlink.HANDLE_ROOT})
			q.Defcls = 1
			if err := netlink.QdiscAdd(q); err != nil {
				return err
			}
			c := netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(2, 1), Parent: q.Handle},
				netlink.HtbClassAttrs{Rate: rate, Ceil: rate, Buffer: 128 << 10, Cbuffer: 128 << 10, Quantum: qos.Quantum})
			return netlink.ClassAdd(c)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("qdisc %s: %v", mode, err)
	}
}

// bulkPorts runs one iperf3 flow per sender to rx at once (a server per
// sender) and returns the received rates in bit/s.
func bulkPorts(ctx context.Context, rx sandbox.Endpoint, ip netip.Addr, secs int, senders map[string]sandbox.Endpoint, extra ...string) (map[string]float64, error) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		out  = map[string]float64{}
		errs []string
	)
	port := 5401
	for name, from := range senders {
		srv := exec.CommandContext(ctx, "nsenter", "--net="+rx.Netns, "--", "iperf3", "-s", "-1", "-p", strconv.Itoa(port))
		srv.Stdout, srv.Stderr = io.Discard, io.Discard
		if err := srv.Start(); err != nil {
			return nil, err
		}
		defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
		wg.Add(1)
		go func(name string, from sandbox.Endpoint, port int) {
			defer wg.Done()
			bps, err := sandboxtest.IperfClient(ctx, from.Netns, ip, port, secs, extra...)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, name+": "+err.Error())
			}
			out[name] = bps
		}(name, from, port)
		port++
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return out, nil
}

// mbits1 is mbits with one decimal.
func mbits1(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x/1e6, 'f', 1, 64)
	}
	return strings.Join(s, "/")
}

func mbits(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x/1e6, 'f', 0, 64)
	}
	return strings.Join(s, "/")
}

func usecs(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x/1e3, 'f', 0, 64)
	}
	return strings.Join(s, "/")
}

func fmts(v []float64) string {
	c := append([]float64(nil), v...)
	sort.Float64s(c)
	s := make([]string, len(c))
	for i, x := range c {
		s[i] = strconv.FormatFloat(x, 'f', 3, 64)
	}
	return strings.Join(s, ", ")
}
