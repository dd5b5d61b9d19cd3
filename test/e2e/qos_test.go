package e2e

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// qosRate is the uplink rate the QoS e2e test shapes to: low enough that
// two loaded cores saturate it many times over.
const qosRate = 200e6

// TestPrivilegedQoS: on a node whose uplink has the QoS tree
// (--qos-uplink-rate), a high and a low pod both sending bulk TCP to
// another node split the link in high's favour without starving low, and a
// pod with egress and ingress limits is held to them in both directions:
// what it sends (HTB), what it receives from another node (the BPF
// policer after decapsulation) and from a pod on its own node (the policer
// before redirect_peer). Margins are wide (CI runs on a loaded 2-core
// machine); the tight figures are in BENCHMARKS.md.
func TestPrivilegedQoS(t *testing.T) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("needs iperf3")
	}
	sb := sandboxtest.New(t, "e2e", sandbox.Options{Nodes: 2, Underlay: suiteUnderlay(),
		AgentArgs: []string{"--qos-uplink-rate", strconv.Itoa(qosRate)}})
	mkVPC(t, sb, "blue", "10.61.0.0/16", "10.61.1.0/24")
	ctx := context.Background()
	add := func(name, node string, q sandbox.PodQoS) *sandbox.Pod {
		p, err := sb.PodAddWithQoS(ctx, name, node, []string{"blue/web"}, q, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	hi := add("hi", "1", sandbox.PodQoS{Class: "high"})
	lo := add("lo", "1", sandbox.PodQoS{Class: "low"})
	lim := add("lim", "1", sandbox.PodQoS{Egress: "20M", Ingress: "20M"})
	rx := add("rx", "2", sandbox.PodQoS{})
	rxIP, limIP := ipOf(t, rx, "eth0"), ipOf(t, lim, "eth0")

	// A bad class fails before anything is created.
	if _, err := sb.PodAddQoS(ctx, "bad", "1", []string{"blue/web"}, "gold"); err == nil || !strings.Contains(err.Error(), "gold") {
		t.Errorf("pod with class gold: %v", err)
	}

	// Both saturate: high gets at least 75% (0.95 when measured quietly),
	// low is not starved; and the bytes went through their classes' leaves
	// (a single FIFO can split in anyone's favour by chance).
	before := classBytes(t, sb.Nodes()[0].Netns)
	rates := bulkConcurrent(t, rxIP, rx, 4, map[string]*sandbox.Pod{"hi": hi, "lo": lo})
	after := classBytes(t, sb.Nodes()[0].Netns)
	for _, c := range []string{"1:10", "1:30"} {
		if d := after[c] - before[c]; d < 1e6 {
			t.Errorf("class %s carried %d bytes, want the pod's flow (> 1 MB)", c, d)
		}
	}
	if d := after["1:20"] - before["1:20"]; d > 1e6 {
		t.Errorf("the default class 1:20 carried %d bytes: classified traffic fell through", d)
	}
	total := rates["hi"] + rates["lo"]
	t.Logf("high %.0f Mbit/s, low %.0f Mbit/s (link %.0f)", rates["hi"]/1e6, rates["lo"]/1e6, qosRate/1e6)
	if share := rates["hi"] / total; share < 0.75 {
		t.Errorf("high's share %.2f, want >= 0.75", share)
	}
	if rates["lo"] < 0.01*qosRate {
		t.Errorf("low starved: %.1f Mbit/s", rates["lo"]/1e6)
	}
	if total > 1.1*qosRate {
		t.Errorf("%.0f Mbit/s through a %.0f Mbit/s tree: not shaped", total/1e6, qosRate/1e6)
	}

	// Low alone gets (nearly) the whole link: work-conserving.
	alone := bulkConcurrent(t, rxIP, rx, 3, map[string]*sandbox.Pod{"lo": lo})["lo"]
	t.Logf("low alone %.0f Mbit/s", alone/1e6)
	if alone < 0.6*qosRate {
		t.Errorf("low alone %.0f Mbit/s, want most of the %.0f Mbit/s link", alone/1e6, qosRate/1e6)
	}

	// The limits count the pod's IP packets (20 Mbit/s of them is about
	// 19.3 of TCP goodput): egress through its HTB class, ingress from
	// another node and from its own node through the BPF policer.
	dropsBefore := qosIngressDrops(t, sb)
	for _, dir := range []struct {
		name string
		to   netip.Addr
		rx   *sandbox.Pod
		tx   *sandbox.Pod
	}{
		{"egress", rxIP, rx, lim},
		{"ingress from another node", limIP, lim, rx},
		{"ingress from its own node", limIP, lim, hi},
	} {
		// 4 s: the policer's 250 ms burst may add 6% on top.
		got := bulkConcurrent(t, dir.to, dir.rx, 4, map[string]*sandbox.Pod{"tx": dir.tx})["tx"]
		t.Logf("limited pod, %s: %.1f Mbit/s (limit 20)", dir.name, got/1e6)
		if got < 14e6 || got > 22e6 {
			t.Errorf("limited pod, %s: %.1f Mbit/s, want about 19.3", dir.name, got/1e6)
		}
	}
	if d := qosIngressDrops(t, sb) - dropsBefore; d == 0 {
		t.Error("no packet counted as dropped over the ingress limit")
	}
	// The store shows the effective QoS (an egress limit puts the pod in
	// the normal class).
	st, err := sb.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eps, _, err := st.ListEndpoints(ctx, "blue")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range eps {
		if e.IP == limIP && (e.QoS == nil || *e.QoS != (vpc.EndpointQoS{Class: "normal", EgressRate: 20e6, IngressRate: 20e6})) {
			t.Errorf("store endpoint of the limited pod: qos %+v", e.QoS)
		}
	}

	// A VPC's default class applies to a pod that asks for none.
	if _, err := st.CreateVPC(ctx, vpc.VPC{Name: "green", CIDR: netip.MustParsePrefix("10.62.0.0/16"), QoSClass: "low"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: "green", Name: "web", CIDR: netip.MustParsePrefix("10.62.1.0/24")}); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.PodAdd(ctx, "dflt", "1", []string{"green/web"}); err != nil {
		t.Fatal(err)
	}
	if eps, _, err := st.ListEndpoints(ctx, "green"); err != nil || len(eps) != 1 || eps[0].QoS == nil || eps[0].QoS.Class != "low" {
		t.Errorf("pod in a vpc with default class low: endpoints %+v, %v", eps, err)
	}

	// The pod's own class goes with the pod.
	if _, ok := classBytes(t, sb.Nodes()[0].Netns)["1:100"]; !ok {
		t.Fatal("no htb class 1:100 for the limited pod")
	}
	if err := sb.PodDel(ctx, "lim"); err != nil {
		t.Fatal(err)
	}
	if _, ok := classBytes(t, sb.Nodes()[0].Netns)["1:100"]; ok {
		t.Error("htb class 1:100 left after the limited pod was deleted")
	}
}

// classBytes reads the bytes sent by each HTB class on the node's uplink
// (iproute2 6.1's JSON output of htb classes is broken: netlink instead).
func classBytes(t *testing.T, netns string) map[string]uint64 {
	t.Helper()
	m := map[string]uint64{}
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		link, err := netlink.LinkByName(sandbox.NodeUplink)
		if err != nil {
			return err
		}
		classes, err := netlink.ClassList(link, netlink.MakeHandle(1, 0))
		if err != nil {
			return err
		}
		for _, c := range classes {
			if st := c.Attrs().Statistics; st != nil && st.Basic != nil {
				h := c.Attrs().Handle
				m[fmt.Sprintf("%x:%x", h>>16, h&0xffff)] = st.Basic.Bytes
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading htb classes: %v", err)
	}
	return m
}

// bulkConcurrent runs one iperf3 TCP flow of secs seconds from every pod
// in senders to rx (a server per sender, distinct ports) at the same time
// and returns the received rates in bit/s by sender name.
func bulkConcurrent(t *testing.T, ip netip.Addr, rx *sandbox.Pod, secs int, senders map[string]*sandbox.Pod) map[string]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+30)*time.Second)
	defer cancel()
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		out  = map[string]float64{}
		errs []error
	)
	port := 5301
	for name, p := range senders {
		srv := exec.CommandContext(ctx, "nsenter", "--net="+rx.Netns, "--", "iperf3", "-s", "-1", "-p", strconv.Itoa(port))
		srv.Stdout, srv.Stderr = io.Discard, io.Discard
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
		wg.Add(1)
		go func(name string, p *sandbox.Pod, port int) {
			defer wg.Done()
			bps, err := sandboxtest.IperfClient(ctx, p.Netns, ip, port, secs)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			out[name] = bps
		}(name, p, port)
		port++
	}
	wg.Wait()
	for _, err := range errs {
		t.Fatal(err)
	}
	return out
}

// qosIngressDrops sums the QOS_INGRESS drops of the sandbox's nodes.
func qosIngressDrops(t *testing.T, sb *sandbox.Sandbox) float64 {
	t.Helper()
	var sum float64
	for _, n := range sb.Nodes() {
		m, err := sb.Metrics(context.Background(), n.Name)
		if err != nil {
			t.Fatal(err)
		}
		sum += m[`genie_datapath_drops_total{reason="QOS_INGRESS"}`]
	}
	return sum
}
