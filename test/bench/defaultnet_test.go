package bench

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"time"
)

// TestPrivilegedDefaultNetworkBench measures a pod whose default network is
// a VPC (#9 part 4) leaving through its own node (BPF SNAT to the node's
// address, FIB out) to the external namespace, against the node's own
// traffic to it, in one 1-node sandbox (flat underlay), modes interleaved
// per round: throughput (iperf3, the sender is the pod or the node) and
// sequential new connections per second. Only with GENIE_BENCH=1.
func TestPrivilegedDefaultNetworkBench(t *testing.T) {
	if os.Getenv("GENIE_BENCH") != "1" {
		t.Skip("benchmarks run only with GENIE_BENCH=1")
	}
	testenv.RequireRoot(t, "network namespaces")
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("needs iperf3 (hack/install-deps.sh)")
	}
	rounds := envInt("GENIE_BENCH_ROUNDS", 5)
	secs := envInt("GENIE_BENCH_SECONDS", 3)
	bin := t.TempDir()
	if err := sandbox.BuildBinaries(bin); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sb, err := sandbox.Up(ctx, sandbox.Options{Name: "dnb" + testenv.RandSuffix(), Nodes: 1, BinDir: bin,
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
	if _, err := st.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.10.0.0/16"), DefaultNetwork: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.10.1.0/24")}); err != nil {
		t.Fatal(err)
	}
	ext, err := sb.AddExternal("node1")
	if err != nil {
		t.Fatal(err)
	}
	pod, err := sb.PodAdd(ctx, "dn", "node1", []string{"blue/web"})
	if err != nil {
		t.Fatal(err)
	}
	n1ns, _ := sb.Netns("node1")

	srv := exec.Command("nsenter", "--net="+ext.Netns, "--", "iperf3", "-s", "-p", "5301")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	podEP := sandbox.Endpoint{Netns: pod.Netns}
	if err := waitConn(ctx, podEP, startEcho(t, ext, 7002), 15*time.Second); err != nil {
		t.Fatalf("the pod never reached the outside: %v", err)
	}
	// (The SNAT to node1's address is checked end to end by
	// TestPrivilegedDefaultNetwork, with an identity echo.)

	type mode struct {
		name         string
		netns        string
		gbps, connps []float64
		echo         netip.AddrPort // one server port per mode: see TestPrivilegedEgressBench
	}
	modes := []*mode{
		{name: "pod via its node (BPF SNAT)", netns: pod.Netns, echo: startEcho(t, ext, 7010)},
		{name: "the node's own", netns: n1ns, echo: startEcho(t, ext, 7011)},
	}
	for r := range rounds {
		for i := range modes {
			m := modes[(i+r)%len(modes)]
			bps, err := sandboxtest.IperfClient(ctx, m.netns, ext.IP, 5301, secs)
			if err != nil {
				t.Fatalf("%s: %v", m.name, err)
			}
			m.gbps = append(m.gbps, bps/1e9)
			cps, err := connRate(ctx, sandbox.Endpoint{Netns: m.netns}, m.echo, 2*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", m.name, err)
			}
			m.connps = append(m.connps, cps)
		}
	}
	for _, m := range modes {
		t.Logf("%-28s throughput %v Gbit/s (median %.2f)  conn/s sequential %v (median %.0f)",
			m.name, rounded(m.gbps), median(m.gbps), rounded(m.connps), median(m.connps))
	}
	// What limits the pod's new connections: SNAT drops on node1, and the
	// external server's TIME_WAIT sockets (it closes first).
	if mm, err := sb.Metrics(ctx, "node1"); err == nil {
		for k, v := range mm {
			if v > 0 && strings.Contains(k, "drops_total") {
				t.Logf("node1 %s %v", k, v)
			}
		}
	}
	if out, err := exec.Command("nsenter", "--net="+ext.Netns, "--", "ss", "-Htn", "state", "time-wait").Output(); err == nil {
		t.Logf("external server: %d connections in TIME_WAIT", strings.Count(string(out), "\n"))
	}
	t.Logf("RESULT default network: throughput pod via its node / node's own = %.2f, new connections/s %.2f",
		median(modes[0].gbps)/median(modes[1].gbps), median(modes[0].connps)/median(modes[1].connps))
}
