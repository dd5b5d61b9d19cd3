package scale

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// procStatus returns a field of /proc/<pid>/status in bytes (kB fields).
func procStatus(pid int, field string) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// endpointsMap opens the node's pinned endpoints map read-only.
func endpointsMap(n *sandbox.Node) (*ebpf.Map, error) {
	return ebpf.LoadPinnedMap(filepath.Join(n.PinDir, "genie_endpoints"), &ebpf.LoadPinOptions{ReadOnly: true})
}

// endpointKey is the map key {vni (host order), ipv4 (packet order)}.
func endpointKey(vni uint32, ip netip.Addr) []byte {
	k := make([]byte, 8)
	binary.NativeEndian.PutUint32(k, vni)
	a := ip.As4()
	copy(k[4:], a[:])
	return k
}

// waitEntry polls m until {vni, ip} is present (want) or absent (!want)
// and returns when it saw it.
func waitEntry(m *ebpf.Map, vni uint32, ip netip.Addr, want bool, timeout time.Duration) (time.Time, error) {
	key := endpointKey(vni, ip)
	val := make([]byte, m.ValueSize())
	deadline := time.Now().Add(timeout)
	for {
		err := m.Lookup(key, val)
		if (err == nil) == want {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("vni %d ip %s: present=%v not seen within %v", vni, ip, want, timeout)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// metric scrapes one sample of the node's agent.
func metric(sb *sandbox.Sandbox, node, name string) (float64, error) {
	m, err := sb.Metrics(context.Background(), node)
	if err != nil {
		return 0, err
	}
	return m[name], nil
}

// parallel runs fn(i) for i in [0, n) on workers goroutines and returns
// the first error.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// containerID returns a realistic (64 hex digit) container ID: endpoint
// IDs of that length are what the agent holds at scale.
func containerID(i, j int) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%d/%d", i, j)))
	return hex.EncodeToString(h[:])
}

func fakeMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0xfa, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
}

// BenchmarkScale loads GENIE_SCALE_VPCS (1000) VPCs of GENIE_SCALE_EPS
// (100) endpoints each through the store and measures one node agent that
// hosts a pod in every VPC, so it must learn all of them: agent RSS and
// map memory, time to program everything, propagation latency
// (PutEndpoint -> entry in the node's map, and delete), ADD latency at
// that scale and the agent's restart time. The remote endpoints belong to
// ten fake nodes registered in the store (nothing is sent to them), with
// endpoint IDs as long as real ones (64-digit container IDs). Run
// once (-benchtime=1x) with GENIE_SCALE_BENCH=1; see hack or the report
// for the command.
func BenchmarkScale(b *testing.B) {
	if os.Getenv("GENIE_SCALE_BENCH") != "1" {
		b.Skip("runs only with GENIE_SCALE_BENCH=1 (minutes, 100k endpoints)")
	}
	nVPC := envInt("GENIE_SCALE_VPCS", 1000)
	perVPC := envInt("GENIE_SCALE_EPS", 100)
	samples := envInt("GENIE_SCALE_SAMPLES", 200)
	const fakes = 10
	capacity := nVPC*perVPC + nVPC + samples + 4096
	// GENIE_SCALE_HEAP=<file>: the agent's heap profile after the load.
	heapOut := os.Getenv("GENIE_SCALE_HEAP")
	args := []string{"--max-endpoints", strconv.Itoa(capacity)}
	if heapOut != "" {
		args = append(args, "--pprof")
	}
	sb := newSandbox(b, "scale", 1, args...)
	node := sb.Nodes()[0]
	ctx := context.Background()
	st, err := sb.Store(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for i := range fakes {
		if err := st.RegisterNode(ctx, vpc.Node{Name: fmt.Sprintf("fake%d", i),
			UnderlayIP: netip.AddrFrom4([4]byte{172, 31, 0, byte(i + 1)}), UnderlayMAC: fakeMAC(i)}); err != nil {
			b.Fatal(err)
		}
	}
	// VPCs with one /24 subnet of two /25 blocks: the node under test
	// takes the first (its pod comes first), a fake node the second.
	vnis := make([]uint32, nVPC)
	vname := func(i int) string { return fmt.Sprintf("s%04d", i) }
	t0 := time.Now()
	if err := parallel(nVPC, 8, func(i int) error {
		v, err := st.CreateVPC(ctx, vpc.VPC{Name: vname(i), CIDR: netip.MustParsePrefix("10.0.0.0/16")})
		if err != nil {
			return err
		}
		vnis[i] = v.VNI
		_, err = st.CreateSubnet(ctx, vpc.Subnet{VPC: vname(i), Name: "pods", CIDR: netip.MustParsePrefix("10.0.1.0/24"), BlockPrefixLen: 25})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	say(b, "created %d VPCs in %v", nVPC, time.Since(t0).Round(time.Millisecond))

	// One pod per VPC on the node, through the agent socket (the genie
	// binary adds nothing the agent does not; 1000 execs would only add
	// minutes of process start-up to the set-up).
	cli := agentapi.NewClient(node.Socket, time.Minute)
	pods := make([]*sandbox.Pod, nVPC)
	t0 = time.Now()
	if err := parallel(nVPC, 4, func(i int) error {
		p, err := sb.PodAddBare(fmt.Sprintf("p%04d", i), node.Name)
		if err != nil {
			return err
		}
		pods[i] = p
		_, err = cli.Attach(ctx, &agentapi.AttachRequest{ContainerID: p.ContainerID, IfName: "eth0", Netns: p.Netns, VPC: vname(i), Subnet: "pods"})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	say(b, "attached %d pods (one per VPC) in %v", nVPC, time.Since(t0).Round(time.Millisecond))
	rssPods, _ := procStatus(node.AgentPID, "VmRSS")

	// The load: (perVPC-1) remote endpoints per VPC.
	remoteWant := float64(nVPC * (perVPC - 1))
	blocks := make([]store.Block, nVPC)
	t0 = time.Now()
	var puts atomic.Int64
	if err := parallel(nVPC, 16, func(i int) error {
		f := fmt.Sprintf("fake%d", i%fakes)
		blk, err := st.ClaimBlock(ctx, vname(i), "pods", f)
		if err != nil {
			return err
		}
		blocks[i] = blk
		ip := blk.CIDR.Addr()
		for j := 0; j < perVPC-1; j++ {
			ip = ip.Next()
			if _, err := st.PutEndpoint(ctx, vpc.Endpoint{VPC: vname(i), Subnet: "pods", ID: containerID(i, j) + "/eth0",
				IP: ip, MAC: fakeMAC(i*1000 + j), Node: f}); err != nil {
				return err
			}
			puts.Add(1)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	loadTook := time.Since(t0)
	say(b, "loaded %d endpoints through the store in %v (%.0f/s)", puts.Load(), loadTook.Round(time.Millisecond), float64(puts.Load())/loadTook.Seconds())
	var remote float64
	for deadline := time.Now().Add(10 * time.Minute); ; {
		remote, err = metric(sb, node.Name, `genie_endpoints{scope="remote"}`)
		if err == nil && remote >= remoteWant {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("node programmed %v of %v remote endpoints after 10 minutes (%v)", remote, remoteWant, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	allProgrammed := time.Since(t0)
	say(b, "node programmed all %v remote endpoints %v after the load started, %v after it ended",
		remote, allProgrammed.Round(time.Millisecond), (allProgrammed - loadTook).Round(time.Millisecond))

	rss, _ := procStatus(node.AgentPID, "VmRSS")
	hwm, _ := procStatus(node.AgentPID, "VmHWM")
	m, err := endpointsMap(node)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		b.Fatal(err)
	}
	memlock, _ := info.Memlock()
	entries := 0
	var k, v []byte
	for it := m.Iterate(); it.Next(&k, &v); {
		entries++
	}
	mets, _ := sb.Metrics(ctx, node.Name)
	say(b, "agent RSS %.1f MiB (peak %.1f MiB; %.1f MiB with the %d pods before the load), Go heap in use %.1f MiB, goroutines %.0f, VPC watches %.0f",
		mib(rss), mib(hwm), mib(rssPods), nVPC, mets["go_memstats_heap_inuse_bytes"]/(1<<20), mets["go_goroutines"], mets["genie_vpc_watches"])
	say(b, "endpoints map: %d entries, %.1f MiB kernel memory (memlock), capacity %d", entries, mib(memlock), m.MaxEntries())
	if heapOut != "" {
		f, err := os.Create(heapOut)
		if err != nil {
			b.Fatal(err)
		}
		if err := sb.AgentHeapProfile(ctx, node.Name, f); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		say(b, "agent heap profile in %s (go tool pprof -top -sample_index inuse_space)", heapOut)
	}

	// Propagation: a new endpoint in a random VPC, from PutEndpoint
	// returning (and from the call) to the entry in the node's map; then
	// its deletion.
	rng := rand.New(rand.NewPCG(1, 2))
	var putLat, callLat, delLat []time.Duration
	for s := range samples {
		i := rng.IntN(nVPC)
		ip := blocks[i].CIDR.Addr()
		for range perVPC + s/nVPC {
			ip = ip.Next()
		}
		e := vpc.Endpoint{VPC: vname(i), Subnet: "pods", ID: fmt.Sprintf("probe-%d/eth0", s), IP: ip, MAC: fakeMAC(s), Node: blocks[i].Node}
		start := time.Now()
		if _, err := st.PutEndpoint(ctx, e); err != nil {
			if strings.Contains(err.Error(), "held by") {
				continue // two samples drew the same VPC and address
			}
			b.Fatal(err)
		}
		returned := time.Now()
		seen, err := waitEntry(m, vnis[i], ip, true, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		callLat = append(callLat, seen.Sub(start))
		putLat = append(putLat, seen.Sub(returned))
		start = time.Now()
		if err := st.DeleteEndpoint(ctx, e.VPC, e.ID); err != nil {
			b.Fatal(err)
		}
		gone, err := waitEntry(m, vnis[i], ip, false, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		delLat = append(delLat, gone.Sub(start))
	}
	say(b, "propagation over %d samples: PutEndpoint returned -> map entry p50 %v p99 %v; from the call p50 %v p99 %v; DeleteEndpoint call -> entry gone p50 %v p99 %v",
		len(putLat), quantile(putLat, .5), quantile(putLat, .99), quantile(callLat, .5), quantile(callLat, .99), quantile(delLat, .5), quantile(delLat, .99))

	// ADD latency at scale: a second pod in random VPCs of 100 endpoints.
	var addLat []time.Duration
	for s := range 20 {
		i := rng.IntN(nVPC)
		p, err := sb.PodAddBare(fmt.Sprintf("x%04d", s), node.Name)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, err := cli.Attach(ctx, &agentapi.AttachRequest{ContainerID: p.ContainerID, IfName: "eth0", Netns: p.Netns, VPC: vname(i), Subnet: "pods"}); err != nil {
			b.Fatal(err)
		}
		addLat = append(addLat, time.Since(start))
		if err := cli.Detach(ctx, &agentapi.DetachRequest{ContainerID: p.ContainerID, IfName: "eth0", Netns: p.Netns}); err != nil {
			b.Fatal(err)
		}
		sb.PodDel(ctx, p.Name)
	}
	say(b, "attach (agent socket) at scale: p50 %v p99 %v over %d", quantile(addLat, .5), quantile(addLat, .99), len(addLat))

	// Restart: the agent re-adopts 1000 attachments and re-lists 1000 VPCs.
	t0 = time.Now()
	if err := sb.RestartAgent(ctx, node.Name, false); err != nil {
		b.Fatal(err)
	}
	restart := time.Since(t0)
	node, _ = sb.Node(node.Name)
	for deadline := time.Now().Add(10 * time.Minute); ; {
		remote, err = metric(sb, node.Name, `genie_endpoints{scope="remote"}`)
		if err == nil && remote >= remoteWant {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("restarted node has %v of %v remote endpoints after 10 minutes (%v)", remote, remoteWant, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	rssRestart, _ := procStatus(node.AgentPID, "VmRSS")
	hwmRestart, _ := procStatus(node.AgentPID, "VmHWM")
	say(b, "agent restart to ready: %v (RSS after restart %.1f MiB, peak %.1f MiB)", restart.Round(time.Millisecond), mib(rssRestart), mib(hwmRestart))

	b.ReportMetric(mib(rss), "rss-MiB")
	b.ReportMetric(mib(hwm), "rss-peak-MiB")
	b.ReportMetric(mib(memlock), "map-MiB")
	b.ReportMetric(float64(entries), "map-entries")
	b.ReportMetric(float64(quantile(putLat, .5).Microseconds())/1000, "prop-p50-ms")
	b.ReportMetric(float64(quantile(putLat, .99).Microseconds())/1000, "prop-p99-ms")
	b.ReportMetric(float64(quantile(addLat, .5).Microseconds())/1000, "add-p50-ms")
	b.ReportMetric(allProgrammed.Seconds(), "load-to-programmed-s")
	b.ReportMetric(restart.Seconds(), "restart-s")
	b.ReportMetric(mib(hwmRestart), "restart-rss-peak-MiB")
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }
