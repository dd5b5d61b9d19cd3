package scale

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// mkVPC creates a VPC with one subnet "pods" and returns its VNI.
func mkVPC(t tb, sb *sandbox.Sandbox, name, cidr, subnet string) uint32 {
	t.Helper()
	ctx := context.Background()
	st, err := sb.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, err := st.CreateVPC(ctx, vpc.VPC{Name: name, CIDR: netip.MustParsePrefix(cidr)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: name, Name: "pods", CIDR: netip.MustParsePrefix(subnet)}); err != nil {
		t.Fatal(err)
	}
	return v.VNI
}

// timedAdds creates n bare pods on r's node and ADDs them with the given
// concurrency; only the CNI ADD calls are timed. It returns the latencies
// and the pods (to delete with dropPods).
func timedAdds(t tb, sb *sandbox.Sandbox, r *runner, prefix string, n, conc int) ([]time.Duration, []*sandbox.Pod) {
	t.Helper()
	ctx := context.Background()
	pods := make([]*sandbox.Pod, n)
	for i := range pods {
		p, err := sb.PodAddBare(fmt.Sprintf("%s-%d", prefix, i), r.node.Name)
		if err != nil {
			t.Fatal(err)
		}
		pods[i] = p
	}
	lat := make([]time.Duration, n)
	err := parallel(n, conc, func(i int) error {
		start := time.Now()
		_, err := r.add(ctx, pods[i])
		lat[i] = time.Since(start)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return lat, pods
}

func dropPods(t tb, sb *sandbox.Sandbox, r *runner, pods []*sandbox.Pod) {
	t.Helper()
	ctx := context.Background()
	if err := parallel(len(pods), 4, func(i int) error {
		if err := r.del(ctx, pods[i]); err != nil {
			return err
		}
		return sb.PodDel(ctx, pods[i].Name)
	}); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkAddLatency compares the CNI ADD of a VPC attachment (libcni ->
// genie -> genied over its socket) with an ADD of the reference bridge
// plugin with host-local IPAM through the same libcni path on the same
// node, sequentially and 20 at a time, in rounds that alternate the two so
// background load hits both. Only the ADD calls are timed (namespace
// creation and DEL are not). Run with -benchtime=1x; GENIE_SCALE_ADD_PODS
// (default 100) ADDs per mode and side.
//
// It runs once per way genied attaches the pod program (--pod-attach tcx,
// and tc, the default), each with its own sandbox and bridge baseline.
func BenchmarkAddLatency(b *testing.B) {
	sandboxtest.RequirePrivileged(b)
	if _, ok := sandbox.TestCNIBinDir(); !ok {
		b.Skip("needs the CNI reference plugins (hack/build-test-bins.sh)")
	}
	for _, mode := range []string{"tcx", "tc"} {
		b.Run("attach="+mode, func(b *testing.B) { benchAddLatency(b, mode) })
	}
}

func benchAddLatency(b *testing.B, attach string) {
	total := envInt("GENIE_SCALE_ADD_PODS", 100)
	const conc, rounds = 20, 5
	sb := newSandbox(b, "addlat", 1, "--pod-attach", attach)
	mkVPC(b, sb, "lat", "10.60.0.0/16", "10.60.0.0/16")
	node := sb.Nodes()[0]
	genie := genieRunner(b, sb, node, "lat/pods")
	bridge := bridgeRunner(b, sb, node, "10.99.0.0/16")
	// Warm both paths (the bridge device, the VPC's watch and block).
	for _, r := range []*runner{genie, bridge} {
		_, pods := timedAdds(b, sb, r, fmt.Sprintf("warm%p", r), 2, 1)
		dropPods(b, sb, r, pods)
	}
	// A pod that stays keeps the VPC hosted, as on a busy node.
	_, keep := timedAdds(b, sb, genie, "keep", 1, 1)
	defer dropPods(b, sb, genie, keep)

	lat := map[string][]time.Duration{}
	per := max(total/rounds, conc)
	for r := range rounds {
		for _, mode := range []struct {
			name string
			c    int
		}{{"seq", 1}, {"conc20", conc}} {
			for _, side := range []struct {
				name string
				r    *runner
			}{{"genie", genie}, {"bridge", bridge}} {
				l, pods := timedAdds(b, sb, side.r, fmt.Sprintf("%s-%s-%d", side.name, mode.name, r), per, mode.c)
				lat[side.name+"/"+mode.name] = append(lat[side.name+"/"+mode.name], l...)
				dropPods(b, sb, side.r, pods)
			}
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, mode := range []string{"seq", "conc20"} {
		g, br := lat["genie/"+mode], lat["bridge/"+mode]
		g50, g99, b50, b99 := quantile(g, .5), quantile(g, .99), quantile(br, .5), quantile(br, .99)
		say(b, "attach=%s %-6s genie p50 %v p99 %v | bridge+host-local p50 %v p99 %v | ratio p50 %.2fx p99 %.2fx (%d ADDs each)",
			attach, mode, g50.Round(time.Microsecond), g99.Round(time.Microsecond), b50.Round(time.Microsecond), b99.Round(time.Microsecond),
			float64(g50)/float64(b50), float64(g99)/float64(b99), len(g))
		b.ReportMetric(ms(g50), mode+"-genie-p50-ms")
		b.ReportMetric(ms(g99), mode+"-genie-p99-ms")
		b.ReportMetric(ms(b50), mode+"-bridge-p50-ms")
		b.ReportMetric(ms(b99), mode+"-bridge-p99-ms")
		b.ReportMetric(float64(g50)/float64(b50), mode+"-ratio-p50")
		b.ReportMetric(float64(g99)/float64(b99), mode+"-ratio-p99")
	}
}

// BenchmarkReadiness measures, for GENIE_SCALE_READY_PODS (default 100)
// pods added one after another on node2, the time from the CNI ADD
// returning until a pod on node1 gets a UDP reply from the new pod. The
// new pod's echo socket is opened in its namespace before the ADD (a
// wildcard bind needs no address), and the prober sends a datagram every
// 100µs from the moment ADD returns, so the figure is the network's
// readiness, not the application's. Also reported: the ADD latency, and
// when node1's map got the entry (polled from the pinned map).
func BenchmarkReadiness(b *testing.B) {
	sandboxtest.RequirePrivileged(b)
	n := envInt("GENIE_SCALE_READY_PODS", 100)
	sb := newSandbox(b, "ready", 3)
	vni := mkVPC(b, sb, "rdy", "10.70.0.0/16", "10.70.0.0/16")
	nodes := sb.Nodes()
	r1, r2 := genieRunner(b, sb, nodes[0], "rdy/pods"), genieRunner(b, sb, nodes[1], "rdy/pods")
	_, probers := timedAdds(b, sb, r1, "prober", 1, 1)
	defer dropPods(b, sb, r1, probers)
	m1, err := endpointsMap(nodes[0])
	if err != nil {
		b.Fatal(err)
	}
	defer m1.Close()
	cli, err := sandbox.ListenUDP(sandbox.Endpoint{Netns: probers[0].Netns}, ":0")
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	var adds, lags, mapLags []time.Duration
	first := 0
	for i := range n {
		p, err := sb.PodAddBare(fmt.Sprintf("rd-%d", i), nodes[1].Name)
		if err != nil {
			b.Fatal(err)
		}
		srv := sandboxtest.EchoUDP(b, sandbox.Endpoint{Netns: p.Netns}, ":7100")
		start := time.Now()
		ip, err := r2.add(ctx, p)
		returned := time.Now()
		if err != nil {
			b.Fatal(err)
		}
		adds = append(adds, returned.Sub(start))
		// Prober: one datagram every 100µs until the first reply.
		dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip.Addr(), 7100))
		got := make(chan time.Time, 1)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			cli.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				k, _, err := cli.ReadFrom(buf)
				if err != nil {
					close(got)
					return
				}
				if string(buf[:k]) == fmt.Sprint(i) {
					got <- time.Now()
					return
				}
			}
		}()
		stop := make(chan struct{})
		go func() {
			for {
				cli.WriteTo([]byte(fmt.Sprint(i)), dst)
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Microsecond):
				}
			}
		}()
		mapSeen, mapErr := waitEntry(m1, vni, ip.Addr(), true, 10*time.Second)
		replied, ok := <-got
		close(stop)
		wg.Wait()
		srv.Close()
		if !ok || mapErr != nil {
			b.Fatalf("pod %s (%s) not reachable from node1 10s after ADD (map: %v)", p.Name, ip, mapErr)
		}
		lags = append(lags, replied.Sub(returned))
		mapLag := mapSeen.Sub(returned)
		if mapLag < 100*time.Microsecond {
			first++ // present at the first look: programmed before ADD returned
		}
		mapLags = append(mapLags, mapLag)
		if err := r2.del(ctx, p); err != nil {
			b.Fatal(err)
		}
		if err := sb.PodDel(ctx, p.Name); err != nil {
			b.Fatal(err)
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	say(b, "readiness over %d pods on node2 probed from node1: ADD p50 %v p99 %v; ADD returned -> first UDP reply p50 %v p99 %v max %v; -> node1 map entry p50 %v p99 %v (%d of %d already there when ADD returned)",
		n, quantile(adds, .5), quantile(adds, .99), quantile(lags, .5), quantile(lags, .99), quantile(lags, 1),
		quantile(mapLags, .5), quantile(mapLags, .99), first, n)
	b.ReportMetric(ms(quantile(adds, .5)), "add-p50-ms")
	b.ReportMetric(ms(quantile(adds, .99)), "add-p99-ms")
	b.ReportMetric(ms(quantile(lags, .5)), "ready-p50-ms")
	b.ReportMetric(ms(quantile(lags, .99)), "ready-p99-ms")
	b.ReportMetric(ms(quantile(mapLags, .99)), "remote-map-p99-ms")
}
