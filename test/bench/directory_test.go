package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cni-genie/cni-genie/pkg/directory"
	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// TestPrivilegedDirectoryBench measures the endpoint directory in the
// sandbox, in one run (GENIE_BENCH=1; BENCHMARKS.md §6 has the command):
//
//   - lookup latency over the sandbox underlay (a node's gRPC lookup to
//     another node's directory) against a TCP round trip of the same size
//     between the same two node namespaces, interleaved;
//   - the round trip of a flow's first datagram (both directions through a
//     holder: neither node knows the other's pod) against the same pair's
//     round trip once both learned the direct entries;
//   - the time from the first packet to the sender's direct entry;
//   - ADD -> reachable from another node, directory mode against vpc-sync,
//     one sandbox after the other;
//   - genied's RSS in both modes with the same pods.
func TestPrivilegedDirectoryBench(t *testing.T) {
	if os.Getenv("GENIE_BENCH") != "1" {
		t.Skip("benchmarks run only with GENIE_BENCH=1")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	cniDir, ok := sandbox.TestCNIBinDir()
	if !ok {
		t.Skipf("needs the CNI reference plugins in %s", cniDir)
	}
	n := envInt("GENIE_BENCH_DIR_PODS", 30)
	lookups := envInt("GENIE_BENCH_DIR_LOOKUPS", 2000)
	bin := t.TempDir()
	if err := sandbox.BuildBinaries(bin); err != nil {
		t.Fatal(err)
	}
	up := func(mode string) *sandbox.Sandbox {
		ctx := context.Background()
		sb, err := sandbox.Up(ctx, sandbox.Options{Name: "dirb" + testenv.RandSuffix(), Nodes: 4, BinDir: bin, CNIBinDir: cniDir,
			Underlay: sandbox.UnderlayFlat, AgentArgs: []string{"--endpoint-mode", mode}, Log: sandboxtest.Log(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sb.Down(context.Background()) })
		st, err := sb.Store(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.CreateVPC(ctx, vpc.VPC{Name: "bench", CIDR: netip.MustParsePrefix("10.20.0.0/16")}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: "bench", Name: "pods", CIDR: netip.MustParsePrefix("10.20.0.0/20")}); err != nil {
			t.Fatal(err)
		}
		if mode == "directory" {
			waitDirMembers(t, sb, 4)
		}
		return sb
	}

	sb := up("directory")
	ctx := context.Background()
	a, err := sb.PodAdd(ctx, "a", "node1", []string{"bench/pods"})
	if err != nil {
		t.Fatal(err)
	}
	from := sandbox.Endpoint{Netns: a.Netns}

	// Lookup over the underlay vs a TCP round trip, node1 -> node2.
	n1, _ := sb.Node("node1")
	n2, _ := sb.Node("node2")
	lk, rt := lookupVsRTT(t, sb, n1, n2, lookups)
	t.Logf("lookup node1 -> node2 directory, %d each, interleaved: p50 %v p99 %v; TCP 64 B round trip p50 %v p99 %v; p50 ratio %.2f",
		lookups, lk[len(lk)/2], lk[len(lk)*99/100], rt[len(rt)/2], rt[len(rt)*99/100], float64(lk[len(lk)/2])/float64(rt[len(rt)/2]))

	// First datagram through holders vs learned.
	var first, learned []time.Duration
	for i := 0; i < n; i++ {
		p, err := sb.PodAdd(ctx, fmt.Sprintf("fp-%d", i), "node3", []string{"bench/pods"})
		if err != nil {
			t.Fatal(err)
		}
		ip, _ := p.IP("")
		srv := sandboxtest.EchoUDP(t, sandbox.Endpoint{Netns: p.Netns}, ":7200")
		f, err := udpRTT(from, ip, 7200)
		if err != nil {
			t.Fatalf("first datagram to %s: %v", ip, err)
		}
		time.Sleep(50 * time.Millisecond) // both sides learned
		l, err := udpRTT(from, ip, 7200)
		if err != nil {
			t.Fatalf("datagram to %s: %v", ip, err)
		}
		srv.Close()
		first, learned = append(first, f), append(learned, l)
	}
	sortDur(first)
	sortDur(learned)
	t.Logf("first-datagram round trip through holders (both ways), %d flows: p50 %v p99 %v; same pairs learned: p50 %v p99 %v; p50 ratio %.2f",
		n, first[n/2], first[n*99/100], learned[n/2], learned[n*99/100], float64(first[n/2])/float64(learned[n/2]))
	m, err := sb.Metrics(ctx, "node1")
	if err == nil {
		if c := m["genie_directory_miss_to_install_seconds_count"]; c > 0 {
			t.Logf("node1 miss report -> learned entry: %v flows, mean %v", c, time.Duration(m["genie_directory_miss_to_install_seconds_sum"]/c*1e9))
		}
		if c := m["genie_directory_lookup_seconds_count"]; c > 0 {
			t.Logf("node1 lookups: %v, mean %v", c, time.Duration(m["genie_directory_lookup_seconds_sum"]/c*1e9))
		}
	}

	dirReady := measureReadiness(t, sb, from, n)
	dirRSS := agentRSS(t, sb)
	sb.Down(ctx)

	sync := up("vpc-sync")
	sa, err := sync.PodAdd(ctx, "a", "node1", []string{"bench/pods"})
	if err != nil {
		t.Fatal(err)
	}
	syncReady := measureReadiness(t, sync, sandbox.Endpoint{Netns: sa.Netns}, n)
	syncRSS := agentRSS(t, sync)
	for _, r := range []struct {
		mode string
		rd   []readiness
		rss  string
	}{{"directory", dirReady, dirRSS}, {"vpc-sync", syncReady, syncRSS}} {
		var add, lag []time.Duration
		firstTry := 0
		for _, x := range r.rd {
			add, lag = append(add, x.add), append(lag, x.lag)
			if x.tries == 1 {
				firstTry++
			}
		}
		sortDur(add)
		sortDur(lag)
		t.Logf("%s: ADD p50 %v p99 %v; ADD return -> answer from node1 p50 %v p99 %v (first probe answered %d/%d); genied RSS %s",
			r.mode, add[len(add)/2], add[len(add)*99/100], lag[len(lag)/2], lag[len(lag)*99/100], firstTry, len(r.rd), r.rss)
	}
}

func sortDur(v []time.Duration) { sort.Slice(v, func(i, j int) bool { return v[i] < v[j] }) }

func waitDirMembers(t *testing.T, sb *sandbox.Sandbox, want int) {
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range sb.Nodes() {
		for {
			m, err := sb.Metrics(context.Background(), n.Name)
			if err == nil && m["genie_directory_members"] == float64(want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s: directory members %v, want %d", n.Name, m["genie_directory_members"], want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// lookupVsRTT interleaves gRPC directory lookups from node a's namespace
// to node b's directory with 64-byte TCP round trips between the same
// namespaces, and returns both sorted.
func lookupVsRTT(t *testing.T, sb *sandbox.Sandbox, a, b *sandbox.Node, n int) (lk, rt []time.Duration) {
	ctx := context.Background()
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		return sandbox.DialTCP(ctx, sandbox.Endpoint{Netns: a.Netns}, addr)
	}
	tr := directory.NewGRPCTransport(grpc.WithContextDialer(dial))
	defer tr.Close()
	st, err := sb.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bn, err := st.GetNode(ctx, b.Name)
	if err != nil {
		t.Fatal(err)
	}
	to := directory.Member{Name: b.Name, RPC: netip.AddrPortFrom(bn.UnderlayIP, 4790)}
	ring, err := tr.Ring(ctx, to)
	if err != nil || len(ring.Loaded) == 0 {
		t.Fatalf("ring of %s: %+v, %v", b.Name, ring, err)
	}
	v, err := st.GetVPC(ctx, "bench")
	if err != nil {
		t.Fatal(err)
	}
	// A key of a shard b holds (answered not-found: the cost is the same).
	var key directory.Key
	for i := 1; i < 1<<16; i++ {
		k := directory.Key{VNI: v.VNI, IP: netip.AddrFrom4([4]byte{10, 20, byte(i >> 8), byte(i)})}
		if _, ok := sort.Find(len(ring.Loaded), func(j int) int { return int(k.Shard(ring.Shards)) - int(ring.Loaded[j]) }); ok {
			key = k
			break
		}
	}
	l, err := sandbox.ListenTCP(sandbox.Endpoint{Netns: b.Netns}, ":7300")
	if err != nil {
		t.Fatal(err)
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
	c, err := sandbox.DialTCP(ctx, sandbox.Endpoint{Netns: a.Netns}, netip.AddrPortFrom(bn.UnderlayIP, 7300).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for i := 0; i < n+n/10; i++ {
		t0 := time.Now()
		resp, err := tr.Lookup(ctx, to, directory.LookupRequest{Key: key})
		d := time.Since(t0)
		if err != nil || (resp.Status != directory.StatusFound && resp.Status != directory.StatusNotFound) {
			t.Fatalf("lookup: %+v, %v", resp, err)
		}
		t0 = time.Now()
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		if i >= n/10 { // warm-up
			lk, rt = append(lk, d), append(rt, time.Since(t0))
		}
	}
	sortDur(lk)
	sortDur(rt)
	return lk, rt
}

// udpRTT sends one datagram to ip:port (an echo) and waits for the answer.
func udpRTT(from sandbox.Endpoint, ip netip.Addr, port int) (time.Duration, error) {
	c, err := sandbox.ListenUDP(from, ":0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	t0 := time.Now()
	if _, err := c.WriteTo([]byte("first"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port)))); err != nil {
		return 0, err
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	if _, _, err := c.ReadFrom(buf); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// agentRSS returns every node's genied VmRSS.
func agentRSS(t *testing.T, sb *sandbox.Sandbox) string {
	var out []string
	for _, n := range sb.Nodes() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.AgentPID))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				f := strings.Fields(line)
				if len(f) >= 2 {
					kb, _ := strconv.Atoi(f[1])
					out = append(out, fmt.Sprintf("%s %.1f MiB", n.Name, float64(kb)/1024))
				}
			}
		}
	}
	return strings.Join(out, ", ")
}
