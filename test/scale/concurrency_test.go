package scale

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cni-genie/cni-genie/pkg/ipam"
	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/vishvananda/netlink"
)

// registry is the test's view of which live pod holds which address: a
// pod enters it when its ADD returned and leaves it before its DEL starts,
// so two entries with one address mean the address was handed out twice.
type registry struct {
	mu   sync.Mutex
	byIP map[netip.Addr]*livePod
}

type livePod struct {
	pod    *sandbox.Pod
	runner *runner
	ip     netip.Prefix
}

func (r *registry) claim(lp *livePod) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if o, ok := r.byIP[lp.ip.Addr()]; ok {
		return fmt.Errorf("ip %s given to pod %s on %s while pod %s on %s holds it",
			lp.ip, lp.pod.Name, lp.runner.node.Name, o.pod.Name, o.runner.node.Name)
	}
	r.byIP[lp.ip.Addr()] = lp
	return nil
}

func (r *registry) snapshot() map[netip.Addr]*livePod {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[netip.Addr]*livePod, len(r.byIP))
	for k, v := range r.byIP {
		out[k] = v
	}
	return out
}

func (r *registry) release(lp *livePod) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byIP[lp.ip.Addr()] == lp {
		delete(r.byIP, lp.ip.Addr())
	}
}

// podAddrs returns the IPv4 addresses configured on the pod's eth0.
func podAddrs(p *sandbox.Pod) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := sandbox.InNetns(p.Netns, func() error {
		l, err := netlink.LinkByName(sandbox.PodIfName)
		if err != nil {
			return err
		}
		as, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range as {
			ip, _ := netip.AddrFromSlice(a.IP.To4())
			bits, _ := a.Mask.Size()
			out = append(out, netip.PrefixFrom(ip, bits))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pod %s: reading addresses: %w", p.Name, err)
	}
	return out, nil
}

// TestPrivilegedConcurrentAddDel runs GENIE_SCALE_OPS (default 1000) CNI
// ADD/DEL operations through the real genie binary, interleaved across the
// 3 nodes of a sandbox on ONE subnet (a /25 of eight /28 blocks for up to
// 54 live pods) whose small blocks make nodes
// claim and release blocks all the time. No address may be live twice at
// any moment (checked against the CNI results, the addresses configured in
// the pods' namespaces and the store's endpoints, continuously), and
// nothing may be left at the end: store endpoints, IPAM allocations
// (agents' state files) and blocks beyond one kept per node, host veths,
// data plane entries (agent metrics), pod namespaces.
func TestPrivilegedConcurrentAddDel(t *testing.T) {
	sandboxtest.RequirePrivileged(t)
	ops := envInt("GENIE_SCALE_OPS", 1000)
	perNode := envInt("GENIE_SCALE_WORKERS", 3)  // workers per node
	maxLive := envInt("GENIE_SCALE_MAX_LIVE", 6) // live pods per worker
	sb := newSandbox(t, "conc", 3)
	ctx := context.Background()
	st, err := sb.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.CreateVPC(ctx, vpc.VPC{Name: "conc", CIDR: netip.MustParsePrefix("10.50.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: "conc", Name: "pods", CIDR: netip.MustParsePrefix("10.50.1.0/25"), BlockPrefixLen: 28}); err != nil {
		t.Fatal(err)
	}
	runners := map[string]*runner{}
	for _, n := range sb.Nodes() {
		runners[n.Name] = genieRunner(t, sb, n, "conc/pods")
	}

	reg := &registry{byIP: map[netip.Addr]*livePod{}}
	var (
		started    atomic.Int64
		adds, dels atomic.Int64
		failed     atomic.Bool
		errMu      sync.Mutex
		errs       []string
	)
	fail := func(format string, args ...any) {
		failed.Store(true)
		errMu.Lock()
		errs = append(errs, fmt.Sprintf(format, args...))
		errMu.Unlock()
	}
	del := func(lp *livePod) {
		reg.release(lp)
		if err := lp.runner.del(ctx, lp.pod); err != nil {
			fail("%v", err)
		}
		if err := sb.PodDel(ctx, lp.pod.Name); err != nil {
			fail("%v", err)
		}
		dels.Add(1)
	}
	add := func(r *runner, name string) *livePod {
		p, err := sb.PodAddBare(name, r.node.Name)
		if err != nil {
			fail("%v", err)
			return nil
		}
		ip, err := r.add(ctx, p)
		adds.Add(1)
		if err != nil {
			fail("%v", err)
			sb.PodDel(ctx, name)
			return nil
		}
		lp := &livePod{pod: p, runner: r, ip: ip}
		// What the pod really has must be what CNI reported.
		got, err := podAddrs(p)
		if err != nil {
			fail("%v", err)
		} else if len(got) != 1 || got[0] != ip {
			fail("pod %s: eth0 has %v, ADD reported %s", name, got, ip)
		}
		if err := reg.claim(lp); err != nil {
			fail("%v", err)
		}
		return lp
	}

	// The checker compares, again and again while the workers run, the
	// store's endpoints and the addresses in the live pods' namespaces
	// with the registry.
	stopCheck := make(chan struct{})
	checkDone := make(chan struct{})
	var checks, moves atomic.Int64
	owners := map[netip.Prefix]string{}
	go func() {
		defer close(checkDone)
		for {
			select {
			case <-stopCheck:
				return
			case <-time.After(100 * time.Millisecond):
			}
			// Only pods live before and after the listing must be in it.
			before := reg.snapshot()
			eps, _, err := st.ListEndpoints(ctx, "conc")
			if err != nil {
				fail("list endpoints: %v", err)
				continue
			}
			byIP := map[netip.Addr]string{}
			for _, e := range eps {
				if o, ok := byIP[e.IP]; ok {
					fail("store: ip %s held by endpoints %s and %s", e.IP, o, e.ID)
				}
				byIP[e.IP] = e.ID
			}
			// Blocks changing hands show that nodes really compete for
			// the subnet.
			if blocks, err := st.ListBlocks(ctx, "conc", "pods"); err == nil {
				for _, b := range blocks {
					if o, ok := owners[b.CIDR]; ok && o != b.Node {
						moves.Add(1)
					}
					owners[b.CIDR] = b.Node
				}
			}
			reg.mu.Lock()
			for ip, lp := range reg.byIP {
				want := vpc.EndpointID(lp.pod.ContainerID, sandbox.PodIfName)
				if before[ip] == lp && byIP[ip] != want {
					fail("store: ip %s of live pod %s belongs to endpoint %q, want %q", ip, lp.pod.Name, byIP[ip], want)
				}
				got, err := podAddrs(lp.pod)
				if err != nil || len(got) != 1 || got[0] != lp.ip {
					fail("pod %s: eth0 has %v (%v), registry says %s", lp.pod.Name, got, err, lp.ip)
				}
			}
			reg.mu.Unlock()
			checks.Add(1)
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	for ni, n := range sb.Nodes() {
		for w := 0; w < perNode; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(ni), uint64(w)))
				r := runners[n.Name]
				var mine []*livePod
				for seq := 0; !failed.Load() && started.Add(1) <= int64(ops); seq++ {
					if len(mine) == 0 || (len(mine) < maxLive && rng.IntN(2) == 0) {
						if lp := add(r, fmt.Sprintf("n%dw%d-%d", ni+1, w, seq)); lp != nil {
							mine = append(mine, lp)
						}
						continue
					}
					i := rng.IntN(len(mine))
					lp := mine[i]
					mine = append(mine[:i], mine[i+1:]...)
					del(lp)
				}
				for _, lp := range mine {
					del(lp)
				}
			}()
		}
	}
	wg.Wait()
	close(stopCheck)
	<-checkDone
	took := time.Since(start)
	t.Logf("%d ADD + %d DEL through genie across %d nodes x %d workers in %v (%.0f ops/s), %d consistency checks, %d blocks seen changing owner",
		adds.Load(), dels.Load(), len(sb.Nodes()), perNode, took.Round(time.Millisecond),
		float64(adds.Load()+dels.Load())/took.Seconds(), checks.Load(), moves.Load())
	for _, e := range errs {
		t.Error(e)
	}
	if t.Failed() {
		return
	}
	checkNoLeaks(t, sb, "conc", "pods")
}

// checkNoLeaks asserts that nothing of the VPC's attachments is left.
func checkNoLeaks(t *testing.T, sb *sandbox.Sandbox, vpcName, subnet string) {
	t.Helper()
	ctx := context.Background()
	st, err := sb.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if eps, _, err := st.ListEndpoints(ctx, vpcName); err != nil || len(eps) > 0 {
		t.Errorf("store: %d endpoints left (%v): %+v", len(eps), err, eps)
	}
	blocks, err := st.ListBlocks(ctx, vpcName, subnet)
	if err != nil {
		t.Fatal(err)
	}
	perNode := map[string]int{}
	for _, b := range blocks {
		perNode[b.Node]++
	}
	for node, k := range perNode {
		// The allocator keeps a node's last (empty) block of a subnet.
		if k > 1 {
			t.Errorf("store: node %s still holds %d blocks of %s/%s: %+v", node, k, vpcName, subnet, blocks)
		}
	}
	if left, err := os.ReadDir(sandbox.NetnsDir); err == nil {
		prefix := "gsb." + sb.Name() + ".pod."
		for _, e := range left {
			if strings.HasPrefix(e.Name(), prefix) {
				t.Errorf("pod namespace %s left", e.Name())
			}
		}
	}
	for _, n := range sb.Nodes() {
		// IPAM allocations in the agent's state file.
		data, err := os.ReadFile(filepath.Join(n.StateDir, "ipam", ipam.StateFile))
		if err != nil {
			t.Errorf("%s: ipam state: %v", n.Name, err)
		} else {
			var fs struct {
				Allocations []ipam.Allocation `json:"allocations"`
			}
			if err := json.Unmarshal(data, &fs); err != nil {
				t.Errorf("%s: ipam state: %v", n.Name, err)
			} else if len(fs.Allocations) > 0 {
				t.Errorf("%s: %d IPAM allocations left: %+v", n.Name, len(fs.Allocations), fs.Allocations)
			}
		}
		if ents, _ := os.ReadDir(filepath.Join(n.StateDir, "attachments")); len(ents) > 0 {
			t.Errorf("%s: %d attachment records left", n.Name, len(ents))
		}
		// Host veths (named gv...) in the node's namespace.
		err = sandbox.InNetns(n.Netns, func() error {
			links, err := netlink.LinkList()
			if err != nil {
				return err
			}
			for _, l := range links {
				if strings.HasPrefix(l.Attrs().Name, "gv") {
					t.Errorf("%s: host veth %s left", n.Name, l.Attrs().Name)
				}
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: listing links: %v", n.Name, err)
		}
		// Data plane entries: the pinned endpoints map itself.
		if m, err := ebpf.LoadPinnedMap(filepath.Join(n.PinDir, "genie_endpoints"), &ebpf.LoadPinOptions{ReadOnly: true}); err != nil {
			t.Errorf("%s: endpoints map: %v", n.Name, err)
		} else {
			k := 0
			var key, val []byte
			for it := m.Iterate(); it.Next(&key, &val); {
				k++
			}
			m.Close()
			if k > 0 {
				t.Errorf("%s: %d entries left in the endpoints map", n.Name, k)
			}
		}
		// And as the agent counts them.
		m, err := sb.Metrics(ctx, n.Name)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		for _, k := range []string{`genie_endpoints{scope="local"}`, `genie_endpoints{scope="remote"}`, `genie_vpc_watches`, `genie_ipam_allocations`} {
			if m[k] != 0 {
				t.Errorf("%s: %s = %v, want 0", n.Name, k, m[k])
			}
		}
		if m["genie_attach_errors_total"] != 0 {
			t.Errorf("%s: %v attach errors", n.Name, m["genie_attach_errors_total"])
		}
	}
}
