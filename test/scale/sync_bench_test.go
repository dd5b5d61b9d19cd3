package scale

import (
	"context"
	"encoding/binary"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// BenchmarkAddDuringSync measures the agent's ADD latency (through its
// socket) while it programs a VPC of GENIE_SCALE_SYNC_EPS (default
// 10,000) remote endpoints, against the same ADDs while the agent is idle,
// in alternating rounds of the same run. The sync is started by the
// first local pod of the big VPC (the VPC is listed and programmed) and
// undone by its DEL (every remote entry removed); the timed ADDs go to
// another VPC, one at a time, for as long as the big attach or DEL runs.
// Before the agent programmed and removed a VPC in chunks outside its
// global mutex, every ADD during a sync waited for the whole sync.
//
//	go test ./test/scale -run XXX -bench AddDuringSync -benchtime=1x
func BenchmarkAddDuringSync(b *testing.B) {
	sandboxtest.RequirePrivileged(b)
	nEps := envInt("GENIE_SCALE_SYNC_EPS", 10000)
	const rounds = 3
	sb := newSandbox(b, "syncadd", 1, "--max-endpoints", strconv.Itoa(nEps+4096))
	node := sb.Nodes()[0]
	ctx := context.Background()
	st, err := sb.Store(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := st.RegisterNode(ctx, vpc.Node{Name: "fake0", UnderlayIP: netip.MustParseAddr("172.31.0.1"), UnderlayMAC: fakeMAC(0)}); err != nil {
		b.Fatal(err)
	}
	mkVPC(b, sb, "small", "10.70.0.0/16", "10.70.0.0/16")
	if _, err := st.CreateVPC(ctx, vpc.VPC{Name: "big", CIDR: netip.MustParsePrefix("10.0.0.0/8")}); err != nil {
		b.Fatal(err)
	}
	if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: "big", Name: "pods", CIDR: netip.MustParsePrefix("10.0.0.0/16"), BlockPrefixLen: 18}); err != nil {
		b.Fatal(err)
	}
	blk, err := st.ClaimBlock(ctx, "big", "pods", "fake0")
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if err := parallel(nEps, 16, func(i int) error {
		a4 := blk.CIDR.Addr().As4()
		var u [4]byte
		binary.BigEndian.PutUint32(u[:], binary.BigEndian.Uint32(a4[:])+uint32(i)+2)
		ip := netip.AddrFrom4(u)
		_, err := st.PutEndpoint(ctx, vpc.Endpoint{VPC: "big", Subnet: "pods", ID: containerID(7, i) + "/eth0",
			IP: ip, MAC: fakeMAC(i), Node: "fake0"})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	say(b, "loaded %d endpoints of vpc big in %v", nEps, time.Since(t0).Round(time.Millisecond))

	cli := agentapi.NewClient(node.Socket, time.Minute)
	bare := func(name string) *sandbox.Pod {
		p, err := sb.PodAddBare(name, node.Name)
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	keep := bare("keep")
	if _, err := cli.Attach(ctx, &agentapi.AttachRequest{ContainerID: keep.ContainerID, IfName: "eth0", Netns: keep.Netns, VPC: "small", Subnet: "pods"}); err != nil {
		b.Fatal(err)
	}
	probe := bare("probe")
	// oneAdd times one ADD of the probe pod into small, then DELs it.
	oneAdd := func() time.Duration {
		start := time.Now()
		if _, err := cli.Attach(ctx, &agentapi.AttachRequest{ContainerID: probe.ContainerID, IfName: "eth0", Netns: probe.Netns, VPC: "small", Subnet: "pods"}); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		if err := cli.Detach(ctx, &agentapi.DetachRequest{ContainerID: probe.ContainerID, IfName: "eth0", Netns: probe.Netns}); err != nil {
			b.Fatal(err)
		}
		return d
	}
	// during times ADDs while op runs (at least one).
	during := func(op func() error) ([]time.Duration, time.Duration) {
		var done atomic.Bool
		errc := make(chan error, 1)
		start := time.Now()
		go func() { errc <- op(); done.Store(true) }()
		var lat []time.Duration
		for !done.Load() || len(lat) == 0 {
			lat = append(lat, oneAdd())
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		return lat, time.Since(start)
	}
	big := bare("big")
	var busy, idle []time.Duration
	for r := range rounds {
		l, took := during(func() error {
			_, err := cli.Attach(ctx, &agentapi.AttachRequest{ContainerID: big.ContainerID, IfName: "eth0", Netns: big.Netns, VPC: "big", Subnet: "pods"})
			return err
		})
		busy = append(busy, l...)
		say(b, "round %d: big vpc attach (sync of %d endpoints) took %v, %d ADDs meanwhile", r, nEps, took.Round(time.Millisecond), len(l))
		l, took = during(func() error {
			return cli.Detach(ctx, &agentapi.DetachRequest{ContainerID: big.ContainerID, IfName: "eth0", Netns: big.Netns})
		})
		busy = append(busy, l...)
		say(b, "round %d: big vpc detach (removal of %d endpoints) took %v, %d ADDs meanwhile", r, nEps, took.Round(time.Millisecond), len(l))
		for range max(len(busy)/(r+1), 10) {
			idle = append(idle, oneAdd())
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b50, b99, i50, i99 := quantile(busy, .5), quantile(busy, .99), quantile(idle, .5), quantile(idle, .99)
	say(b, "ADD during a %d-endpoint sync: p50 %v p99 %v max %v (%d ADDs) | idle: p50 %v p99 %v (%d ADDs) | ratio p50 %.2fx p99 %.2fx",
		nEps, b50.Round(time.Microsecond), b99.Round(time.Microsecond), quantile(busy, 1).Round(time.Microsecond), len(busy),
		i50.Round(time.Microsecond), i99.Round(time.Microsecond), len(idle), float64(b50)/float64(i50), float64(b99)/float64(i99))
	b.ReportMetric(ms(b99), "sync-add-p99-ms")
	b.ReportMetric(ms(i99), "idle-add-p99-ms")
	b.ReportMetric(float64(b99)/float64(i99), "ratio-p99")
}
