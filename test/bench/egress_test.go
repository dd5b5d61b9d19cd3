package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/cni-genie/cni-genie/pkg/egress"
	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// TestPrivilegedEgressBench measures the egress gateway in one 3-node
// sandbox (flat underlay), every baseline in the same run, modes
// interleaved per round:
//   - throughput (iperf3, pod sends): a pod on node1 through gateway node2
//     (Geneve to node2, decap + SNAT in BPF, FIB out) to the external
//     namespace, against node2's own traffic to it, and against a
//     hand-built nftables path: a pod on node1 on a plain routed veth,
//     forwarded by node1's kernel to node2, whose kernel forwards it with
//     an nft masquerade rule, and the same behind a tunnel: a
//     flannel-style pod (bridge, kernel VXLAN) whose traffic node1 routes
//     through the VXLAN to node2, which masquerades it;
//   - new connections per second (connect, 1-byte request and reply,
//     close; sequential) from the pod through the gateway against node2's
//     own;
//   - failover: a second VPC's gateways are node2 and node3; node2 is
//     killed (agent SIGKILL, uplink down) and the pod dials every 50 ms:
//     the time to the first new connection that succeeds, and to the
//     first of 10 in a row (from then on every new connection works).
//
// Only with GENIE_BENCH=1.
func TestPrivilegedEgressBench(t *testing.T) {
	if os.Getenv("GENIE_BENCH") != "1" {
		t.Skip("benchmarks run only with GENIE_BENCH=1")
	}
	testenv.RequireRoot(t, "network namespaces")
	for _, tool := range []string{"iperf3", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (hack/install-deps.sh)", tool)
		}
	}
	cniDir, ok := sandbox.TestCNIBinDir()
	if !ok {
		t.Skipf("needs the CNI reference plugins in %s", cniDir)
	}
	rounds := envInt("GENIE_BENCH_ROUNDS", 5)
	secs := envInt("GENIE_BENCH_SECONDS", 3)
	kills := envInt("GENIE_BENCH_KILLS", 3)
	bin := t.TempDir()
	if err := sandbox.BuildBinaries(bin); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sb, err := sandbox.Up(ctx, sandbox.Options{Name: "egb" + testenv.RandSuffix(), Nodes: 3, BinDir: bin, CNIBinDir: cniDir,
		Underlay: sandbox.UnderlayFlat, Log: sandboxtest.Log(t)})
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
	defer st.Close()
	es := st.(store.EgressStore)
	n1, n2 := sb.Nodes()[0], sb.Nodes()[1]
	ext, err := sb.AddExternal("node2", "node3")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"blue", "red"} {
		if _, err := st.CreateVPC(ctx, vpc.VPC{Name: name, CIDR: netip.MustParsePrefix("10.10.0.0/16")}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: name, Name: "web", CIDR: netip.MustParsePrefix("10.10.1.0/24")}); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []egress.Gateway{
		// A dedicated egress address: the full port range (1024-65535;
		// the node's own address has 4,536 ports).
		{VPC: "blue", Name: "out", Destinations: []netip.Prefix{sandbox.ExternalPrefix}, Nodes: []string{"node2"},
			EgressIPs: map[string]netip.Addr{"node2": netip.MustParseAddr("172.30.0.202")}},
		{VPC: "red", Name: "out", Destinations: []netip.Prefix{sandbox.ExternalPrefix}, Nodes: []string{"node2", "node3"}},
	} {
		if _, err := es.CreateEgressGateway(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	pods := map[string]*sandbox.Pod{}
	for _, name := range []string{"blue", "red"} {
		p, err := sb.PodAdd(ctx, name+"-pod", "node1", []string{name + "/web"})
		if err != nil {
			t.Fatal(err)
		}
		if err := sb.PodRoute(p, "eth0", sandbox.ExternalPrefix); err != nil {
			t.Fatal(err)
		}
		pods[name] = p
	}

	// The nftables baseline: a routed-veth pod on node1, node1 routes the
	// outside to node2, node2 forwards and masquerades.
	nftNs, nftCleanup, err := vethHopFloor(sb, n1, n2, "nft-a", netip.MustParseAddr("10.97.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nftCleanup() })
	n1ns, _ := sb.Netns("node1")
	n2ns, _ := sb.Netns("node2")
	for _, c := range [][]string{
		{"nsenter", "--net=" + n1ns, "--", "ip", "route", "add", sandbox.ExternalPrefix.String(), "via", n2.UnderlayIP.String()},
		{"nsenter", "--net=" + n2ns, "--", "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"nsenter", "--net=" + n2ns, "--", "nft", "add table ip genie_bench; add chain ip genie_bench post { type nat hook postrouting priority srcnat; }; add rule ip genie_bench post ip saddr 10.97.0.0/24 oifname eth0 masquerade"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}

	// The same behind a tunnel, what a kernel overlay's egress node does: a
	// flannel-style pod on node1 (bridge, kernel VXLAN), node1 routes its
	// traffic to the outside through the VXLAN to node2, which forwards
	// and masquerades it. Against this one the gateway differs only in
	// doing the tunnel and the SNAT in BPF.
	flPod, _, err := sb.FlannelPair("node1", "node2", "fl-egress", "fl-gw")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"nsenter", "--net=" + n1ns, "--", "ip", "rule", "add", "from", "10.244.1.0/24", "to", sandbox.ExternalPrefix.String(), "lookup", "244", "pref", "100"},
		{"nsenter", "--net=" + n1ns, "--", "ip", "route", "add", sandbox.ExternalPrefix.String(), "via", "10.244.2.0", "dev", "fl-vx", "onlink", "table", "244"},
		{"nsenter", "--net=" + n2ns, "--", "nft", "add rule ip genie_bench post ip saddr 10.244.0.0/16 oifname eth0 masquerade"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}

	// Servers in the external namespace: iperf3 and a 1-byte echo.
	srv := exec.Command("nsenter", "--net="+ext.Netns, "--", "iperf3", "-s", "-p", "5301")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	// One echo port per mode (7002 also serves failover): modes that
	// share an address (node2's: its own connections and the nft
	// masquerade's) would otherwise meet each other's TIME_WAIT at the
	// server, with unrelated timestamps, and be answered with old ACKs.
	echo := startEcho(t, ext, 7002)

	blueEP := sandbox.Endpoint{Netns: pods["blue"].Netns}
	// Wait for the agents to program the gateway.
	if err := waitConn(ctx, blueEP, echo, 15*time.Second); err != nil {
		t.Fatalf("the pod never reached the outside: %v", err)
	}

	type mode struct {
		name   string
		netns  string
		gbps   []float64
		connps []float64 // sequential
		parps  []float64 // 8 clients in parallel
		echo   netip.AddrPort
	}
	modes := []*mode{
		{name: "pod via gateway (BPF SNAT)", netns: pods["blue"].Netns, echo: startEcho(t, ext, 7010)},
		{name: "gateway node's own", netns: n2ns, echo: startEcho(t, ext, 7011)},
		{name: "pod via nft masquerade", netns: nftNs, echo: startEcho(t, ext, 7012)},
		{name: "pod via gateway, + XDP", netns: pods["blue"].Netns, echo: startEcho(t, ext, 7013)},
		{name: "pod via VXLAN + nft", netns: flPod.Netns, echo: startEcho(t, ext, 7014)},
	}
	xdpMode := modes[3]
	for r := range rounds {
		for i := range modes {
			m := modes[(i+r)%len(modes)]
			var detach func()
			if m == xdpMode {
				// What an XDP program on the gateway's veth uplink costs
				// (the question whether the gateway's paths should be
				// XDP): a program that only passes, attached natively.
				if detach, err = attachXDPPass(n2ns, sandbox.NodeUplink); err != nil {
					t.Fatal(err)
				}
			}
			bps, err := sandboxtest.IperfClient(ctx, m.netns, ext.IP, 5301, secs)
			if err != nil {
				t.Fatalf("%s: %v", m.name, err)
			}
			m.gbps = append(m.gbps, bps/1e9)
			pps, err := connRateParallel(ctx, sandbox.Endpoint{Netns: m.netns}, m.echo, 8, 2*time.Second)
			if err != nil {
				t.Fatalf("%s: parallel connections: %v", m.name, err)
			}
			m.parps = append(m.parps, pps)
			{
				cps, err := connRate(ctx, sandbox.Endpoint{Netns: m.netns}, m.echo, 2*time.Second)
				if err != nil {
					for _, n := range []string{"node1", "node2"} {
						mm, _ := sb.Metrics(ctx, n)
						for k, v := range mm {
							if strings.Contains(k, "drops_total") && v > 0 {
								t.Logf("%s %s %v", n, k, v)
							}
						}
					}
					t.Fatalf("%s: %v", m.name, err)
				}
				m.connps = append(m.connps, cps)
			}
			if detach != nil {
				detach()
			}
		}
	}
	for _, m := range modes {
		t.Logf("%-28s throughput %v Gbit/s (median %.2f)  conn/s sequential %v (median %.0f), 8 parallel %v (median %.0f)",
			m.name, rounded(m.gbps), median(m.gbps), rounded(m.connps), median(m.connps), rounded(m.parps), median(m.parps))
	}
	t.Logf("failed connections (all modes): %d", connFailures.Load())
	pod, own, nft, vxnft := modes[0], modes[1], modes[2], modes[4]
	t.Logf("RESULT throughput pod via gateway / gateway's own = %.2f (target >= 0.90)", median(pod.gbps)/median(own.gbps))
	t.Logf("RESULT throughput pod via gateway / nft masquerade = %.2f (target >= 1.05)", median(pod.gbps)/median(nft.gbps))
	t.Logf("RESULT new connections/s pod via gateway / gateway's own = %.2f sequential, %.2f with 8 parallel clients (target >= 0.90)",
		median(pod.connps)/median(own.connps), median(pod.parps)/median(own.parps))
	t.Logf("RESULT new connections/s pod via gateway / pod via nft masquerade = %.2f sequential, %.2f with 8 parallel clients",
		median(pod.connps)/median(nft.connps), median(pod.parps)/median(nft.parps))
	t.Logf("RESULT throughput pod via gateway / VXLAN + nft masquerade = %.2f (target >= 1.05)", median(pod.gbps)/median(vxnft.gbps))
	t.Logf("RESULT new connections/s pod via gateway / VXLAN + nft masquerade = %.2f sequential, %.2f with 8 parallel clients",
		median(pod.connps)/median(vxnft.connps), median(pod.parps)/median(vxnft.parps))
	t.Logf("RESULT with an XDP pass program on the gateway's uplink / without: throughput %.2f, connections %.2f sequential, %.2f parallel",
		median(xdpMode.gbps)/median(pod.gbps), median(xdpMode.connps)/median(pod.connps), median(xdpMode.parps)/median(pod.parps))

	// Failover, from the red pod (gateways node2 and node3).
	redEP := sandbox.Endpoint{Netns: pods["red"].Netns}
	streamSrv := startStreamEcho(t, ext, 7003)
	for k := range kills {
		// The moonshot, measured: what an established connection through
		// the killed gateway sees.
		var stream *gatewayStream
		if k == 0 {
			if stream, err = streamVia(ctx, redEP, streamSrv, n2.UnderlayIP); err != nil {
				t.Fatal(err)
			}
			stream.watch()
		}
		first, stable, err := killAndMeasure(ctx, sb, redEP, ext, "node2", n2.UnderlayIP)
		if err != nil {
			t.Fatal(err)
		}
		if stream != nil {
			t.Logf("RESULT kill %d: an established connection through the killed gateway: %s", k+1, stream.outcome())
		}
		t.Logf("RESULT kill %d: first new connection after %v, every new connection after %v (target <= 2s)", k+1, first.Round(time.Millisecond), stable.Round(time.Millisecond))
		if k+1 < kills {
			if err := sb.SetUplink("node2", true); err != nil {
				t.Fatal(err)
			}
			if err := sb.StartAgent(ctx, "node2"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(3 * time.Second) // node2 beats again, every node sees it
		}
	}
}

// startStreamEcho serves, on port of the external namespace, connections
// that first get the address the server sees them from (a line), then an
// echo of every byte, until the test ends.
func startStreamEcho(t *testing.T, ext *sandbox.External, port uint16) netip.AddrPort {
	t.Helper()
	sandboxtest.ServeTCP(t, ext.Endpoint(), fmt.Sprintf(":%d", port), func(c net.Conn) {
		if _, err := fmt.Fprintf(c, "%s\n", c.RemoteAddr()); err == nil {
			_, _ = io.Copy(c, c)
		}
	})
	return netip.AddrPortFrom(ext.IP, port)
}

// gatewayStream is an established connection through one gateway, pinged
// every 50 ms from watch on.
type gatewayStream struct {
	c     net.Conn
	start time.Time
	done  chan struct{}
	res   string
}

// streamVia opens connections from e to the stream echo at dst until one
// leaves through the gateway whose egress address is via (the server
// names the address it sees).
func streamVia(ctx context.Context, e sandbox.Endpoint, dst netip.AddrPort, via netip.Addr) (*gatewayStream, error) {
	for range 32 {
		c, err := sandbox.DialTCP(ctx, e, dst.String())
		if err != nil {
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("stream echo: %w", err)
		}
		if ap, err := netip.ParseAddrPort(strings.TrimSpace(line)); err == nil && ap.Addr() == via {
			return &gatewayStream{c: c, done: make(chan struct{})}, nil
		}
		c.Close()
	}
	return nil, fmt.Errorf("no connection of 32 left through %s", via)
}

// watch pings the stream every 50 ms (1 byte out, its echo back, 200 ms
// each) for 10 s or until the connection fails for good.
func (g *gatewayStream) watch() {
	g.start = time.Now()
	go func() {
		defer close(g.done)
		defer g.c.Close()
		var lastOK time.Time
		stalls := 0
		b := make([]byte, 1)
		for time.Since(g.start) < 10*time.Second {
			_ = g.c.SetDeadline(time.Now().Add(200 * time.Millisecond))
			_, err := g.c.Write(b)
			if err == nil {
				_, err = io.ReadFull(g.c, b)
			}
			var ne net.Error
			switch {
			case err == nil:
				lastOK = time.Now()
			case errors.As(err, &ne) && ne.Timeout():
				stalls++
			default:
				g.res = fmt.Sprintf("failed %v after the kill (%v; last echo %s, %d pings stalled)",
					time.Since(g.start).Round(time.Millisecond), err, g.since(lastOK), stalls)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		g.res = fmt.Sprintf("still open 10 s after the kill, last echo %s, %d pings stalled",
			g.since(lastOK), stalls)
	}()
}

func (g *gatewayStream) since(t time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return fmt.Sprintf("%v after the kill", t.Sub(g.start).Round(time.Millisecond))
}

// outcome waits for watch to end and says what the connection saw.
func (g *gatewayStream) outcome() string {
	<-g.done
	return g.res
}

func rounded(v []float64) string {
	var s []string
	for _, x := range v {
		s = append(s, fmt.Sprintf("%.2f", x))
	}
	return strings.Join(s, " ")
}

// startEcho serves a 1-byte echo on port of the external namespace (it
// reads one byte, writes it back and closes first, so the server holds
// the TIME_WAIT) until the test ends, and returns its address.
func startEcho(t *testing.T, ext *sandbox.External, port uint16) netip.AddrPort {
	t.Helper()
	sandboxtest.ServeTCP(t, ext.Endpoint(), fmt.Sprintf(":%d", port), func(c net.Conn) {
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err == nil {
			_, _ = c.Write(b)
		}
	})
	return netip.AddrPortFrom(ext.IP, port)
}

// connOnce makes one connection from e to the 1-byte echo at dst.
func connOnce(ctx context.Context, e sandbox.Endpoint, dst netip.AddrPort, timeout time.Duration) (netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := sandbox.DialTCP(ctx, e, dst.String())
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{1}); err != nil {
		return netip.AddrPort{}, err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return netip.AddrPort{}, err
	}
	// The server closes first; closing only at its EOF keeps the client
	// out of TIME_WAIT. Closing at once raced the server's FIN, more often
	// the longer the path: a pod behind an extra hop left two thirds of
	// its connections in TIME_WAIT and, past 14k of them (the even half
	// of its ephemeral range), spent 2 ms per connect() finding a port,
	// which measured the client's kernel, not the path.
	if _, err := io.Copy(io.Discard, c); err != nil {
		return netip.AddrPort{}, err
	}
	la, _ := netip.ParseAddrPort(c.LocalAddr().String())
	return la, nil
}

func waitConn(ctx context.Context, e sandbox.Endpoint, dst netip.AddrPort, limit time.Duration) error {
	var err error
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, err = connOnce(ctx, e, dst, time.Second); err == nil {
			return nil
		}
	}
	return err
}

// connFailures counts the connections of connRate that failed (timed out:
// on this loaded machine a lost SYN costs a 1 s retransmission).
var connFailures atomic.Int64

// connRate makes sequential connections for d and returns the rate of
// those that succeeded; it fails only if none did.
func connRate(ctx context.Context, e sandbox.Endpoint, dst netip.AddrPort, d time.Duration) (float64, error) {
	n := 0
	var last error
	start := time.Now()
	for time.Since(start) < d {
		if _, err := connOnce(ctx, e, dst, 3*time.Second); err != nil {
			connFailures.Add(1)
			last = err
			continue
		}
		n++
	}
	if n == 0 {
		return 0, last
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// connRateParallel runs n clients of connRate at once and returns their
// total rate.
func connRateParallel(ctx context.Context, e sandbox.Endpoint, dst netip.AddrPort, n int, d time.Duration) (float64, error) {
	type res struct {
		r   float64
		err error
	}
	ch := make(chan res, n)
	for range n {
		go func() {
			r, err := connRate(ctx, e, dst, d)
			ch <- res{r, err}
		}()
	}
	total := 0.0
	var errs []error
	for range n {
		x := <-ch
		total += x.r
		errs = append(errs, x.err)
	}
	return total, errors.Join(errs...)
}

// attachXDPPass attaches an XDP program that only returns XDP_PASS to link
// in the namespace at netns (native mode), and returns its detach.
func attachXDPPass(netns, ifname string) (func(), error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		return nil, err
	}
	var l link.Link
	err = sandbox.InNetns(netns, func() error {
		iface, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: iface.Index, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		prog.Close()
		return nil, fmt.Errorf("attach xdp to %s: %w", ifname, err)
	}
	return func() { l.Close(); prog.Close() }, nil
}

// killAndMeasure kills gateway node (agent and uplink) and dials from e
// every 50 ms with a 300 ms timeout: the time to the first success and to
// the first of 10 successes in a row.
func killAndMeasure(ctx context.Context, sb *sandbox.Sandbox, e sandbox.Endpoint, ext *sandbox.External, node string, _ netip.Addr) (first, stable time.Duration, err error) {
	if err := sb.StopAgent(node, true); err != nil {
		return 0, 0, err
	}
	if err := sb.SetUplink(node, false); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	run := 0
	var runStart time.Time
	for time.Since(start) < 15*time.Second {
		t0 := time.Now()
		_, err := connOnce(ctx, e, netip.AddrPortFrom(ext.IP, 7002), 300*time.Millisecond)
		if err == nil {
			if first == 0 {
				first = t0.Sub(start)
			}
			if run == 0 {
				runStart = t0
			}
			if run++; run == 10 {
				return first, runStart.Sub(start), nil
			}
		} else {
			run = 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, 0, errors.New("no stable failover within 15 s")
}
