package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// previousRelease is the release whose data plane objects are frozen in
// pkg/datapath/testdata (its genie_drops has 32 slots, this one 64).
const previousRelease = "7448fa3"

// buildRelease builds genied of commit rev from the repository's history
// (git archive into a temp dir, go build with the module cache). It skips
// the test when the history is not there (a shallow clone).
func buildRelease(t *testing.T, rev string) string {
	t.Helper()
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("needs the git history to build release %s: %v", rev, err)
	}
	root := strings.TrimSpace(string(top))
	if err := exec.Command("git", "-C", root, "cat-file", "-e", rev+"^{commit}").Run(); err != nil {
		t.Skipf("commit %s not in this clone (shallow?): fetch it to run the upgrade test", rev)
	}
	src := t.TempDir()
	archive := exec.Command("git", "-C", root, "archive", rev)
	untar := exec.Command("tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	untar.Stdin = pipe
	if err := untar.Start(); err != nil {
		t.Fatal(err)
	}
	if err := archive.Run(); err != nil {
		t.Fatalf("git archive %s: %v", rev, err)
	}
	if err := untar.Wait(); err != nil {
		t.Fatalf("untar %s: %v", rev, err)
	}
	out := filepath.Join(t.TempDir(), "genied-"+rev)
	// -trimpath: the temp dir's name stays out of the build cache keys, so
	// a second run only links.
	build := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/genied")
	build.Dir = src
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building genied of %s: %v\n%s", rev, err, b)
	}
	return out
}

// udpEchoName answers every datagram to p's address:port with "<name>
// <payload>": the reply says which pod answered (VPCs overlap here).
func udpEchoName(t *testing.T, p *pod, port int, name string) {
	t.Helper()
	var c *net.UDPConn
	err := p.ns.Do(func(ns.NetNS) error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: p.ip.AsSlice(), Port: port})
		return err
	})
	if err != nil {
		t.Fatalf("udp echo in %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 256)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDP(append([]byte(name+" "), buf[:n]...), from)
		}
	}()
}

// prober sends a numbered datagram every interval from src to an echo and
// records when each reply came back, checking who answered.
type prober struct {
	name     string
	want     string // the echo's name
	c        *net.UDPConn
	interval time.Duration

	mu      sync.Mutex
	sent    map[uint64]time.Time
	got     map[uint64]time.Time
	wrong   []string
	stop    chan struct{}
	stopped sync.WaitGroup
}

func startProber(t *testing.T, name string, src *pod, dst netip.Addr, port int, want string) *prober {
	t.Helper()
	pr := &prober{name: name, want: want, interval: 5 * time.Millisecond,
		sent: map[uint64]time.Time{}, got: map[uint64]time.Time{}, stop: make(chan struct{})}
	err := src.ns.Do(func(ns.NetNS) error {
		var err error
		pr.c, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: dst.AsSlice(), Port: port})
		return err
	})
	if err != nil {
		t.Fatalf("prober %s: %v", name, err)
	}
	t.Cleanup(func() { pr.halt(); pr.c.Close() })
	pr.stopped.Add(2)
	go func() {
		defer pr.stopped.Done()
		buf := make([]byte, 256)
		for {
			n, err := pr.c.Read(buf)
			if err != nil {
				return
			}
			now := time.Now()
			who, seq, _ := strings.Cut(string(buf[:n]), " ")
			s, err := strconv.ParseUint(seq, 10, 64)
			pr.mu.Lock()
			if who != pr.want || err != nil {
				pr.wrong = append(pr.wrong, string(buf[:n]))
			} else if _, dup := pr.got[s]; !dup {
				pr.got[s] = now
			}
			pr.mu.Unlock()
		}
	}()
	go func() {
		defer pr.stopped.Done()
		tick := time.NewTicker(pr.interval)
		defer tick.Stop()
		for seq := uint64(0); ; seq++ {
			pr.mu.Lock()
			pr.sent[seq] = time.Now()
			pr.mu.Unlock()
			_, _ = pr.c.Write([]byte(strconv.FormatUint(seq, 10)))
			select {
			case <-pr.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return pr
}

func (pr *prober) halt() {
	select {
	case <-pr.stop:
	default:
		close(pr.stop)
	}
}

// window reports, for the probes sent in [from, to]: how many were sent,
// how many got no reply, the longest time without a reply (between two
// consecutive answered probes' replies, or from the window's start), and
// the longest time between two sends (a stall of the sender itself).
func (pr *prober) window(from, to time.Time) (sent, lost int, gap, sendGap time.Duration, wrong []string) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	var replies, sends []time.Time
	for seq, at := range pr.sent {
		if at.Before(from) || at.After(to) {
			continue
		}
		sent++
		sends = append(sends, at)
		if r, ok := pr.got[seq]; ok {
			replies = append(replies, r)
		} else {
			lost++
		}
	}
	slices.SortFunc(replies, func(a, b time.Time) int { return a.Compare(b) })
	last := from
	for _, r := range replies {
		gap = max(gap, r.Sub(last))
		last = r
	}
	slices.SortFunc(sends, func(a, b time.Time) int { return a.Compare(b) })
	for i := 1; i < len(sends); i++ {
		sendGap = max(sendGap, sends[i].Sub(sends[i-1]))
	}
	return sent, lost, gap, sendGap, slices.Clone(pr.wrong)
}

// upgradePins lists, for the pin dir of n: the program behind every pinned
// link, and the ids of the pinned maps by name.
func upgradePins(t *testing.T, n *node) (progs map[string]ebpf.ProgramID, maps map[string]ebpf.MapID) {
	t.Helper()
	progs, maps = map[string]ebpf.ProgramID{}, map[string]ebpf.MapID{}
	ents, err := os.ReadDir(filepath.Join(n.pinDir, "links"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		l, err := link.LoadPinnedLink(filepath.Join(n.pinDir, "links", e.Name()), nil)
		if err != nil {
			t.Fatalf("pinned link %s: %v", e.Name(), err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		progs[e.Name()] = info.Program
	}
	// Pod programs attached as tc filters (the default --pod-attach).
	err = n.ns.Do(func(ns.NetNS) error {
		for _, name := range hostLinks(n.ns) {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			fs, err := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
			if err != nil {
				return err
			}
			for _, f := range fs {
				if bf, ok := f.(*netlink.BpfFilter); ok {
					progs["tc-"+name] = ebpf.ProgramID(bf.Id)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ents, err = os.ReadDir(n.pinDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(n.pinDir, e.Name()), nil)
		if err != nil {
			continue // not a map
		}
		info, err := m.Info()
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		maps[e.Name()] = id
	}
	return progs, maps
}

// waitFreed waits until no program and no map of the given ids exists: the
// kernel frees them once nothing references them (asynchronously).
func waitFreed(t *testing.T, what string, progs []ebpf.ProgramID, maps []ebpf.MapID) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var alive []string
		for _, id := range progs {
			if p, err := ebpf.NewProgramFromID(id); err == nil {
				p.Close()
				alive = append(alive, fmt.Sprintf("program %d", id))
			}
		}
		for _, id := range maps {
			if m, err := ebpf.NewMapFromID(id); err == nil {
				m.Close()
				alive = append(alive, fmt.Sprintf("map %d", id))
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exist after the upgrade: %v", what, alive)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func dropsTotal(m map[string]float64) float64 {
	sum := 0.0
	for k, v := range m {
		if strings.HasPrefix(k, "genie_datapath_drops_total{") {
			sum += v
		}
	}
	return sum
}

// TestPrivilegedUpgradeInPlace: two nodes run the previous release's
// genied (built from its commit), with pods in two VPCs of the same CIDR.
// node-a is upgraded to this build with a doubled endpoints map (the
// derived maps are rebuilt as a group, the drop counters migrate from 32
// to 64 slots), then node-b to this build as it is (only the counters
// migrate). Throughout, pods probe each other every 5 ms over UDP, across
// the nodes in both VPCs and on node-a, and each reply names the pod that
// answered. Each upgrade: no probe lost, the gap logged, the migration
// logged and exported (genie_map_migration_entries), the drops the old
// release counted carried over, the upgrade dir gone, and every program
// and replaced map of the old release freed.
func TestPrivilegedUpgradeInPlace(t *testing.T) {
	skipUnlessPrivileged(t)
	oldBin := buildRelease(t, previousRelease)
	c := newCluster(t, 0)
	newBin := c.bin
	c.bin = oldBin
	na, nb := c.addNode("node-a", 0), c.addNode("node-b", 1)
	c.nodes = append(c.nodes, na, nb)
	ctx := context.Background()
	for _, name := range []string{"blue", "red"} {
		if _, err := c.st.CreateVPC(ctx, vpc.VPC{Name: name, CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.st.CreateSubnet(ctx, vpc.Subnet{VPC: name, Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24")}); err != nil {
			t.Fatal(err)
		}
	}
	// The same addresses in both VPCs.
	aBlue := na.mustAttach(t, "a-blue", "blue", "web", "10.1.0.10")
	aBlue2 := na.mustAttach(t, "a-blue2", "blue", "web", "10.1.0.11")
	aRed := na.mustAttach(t, "a-red", "red", "web", "10.1.0.10")
	bBlue := nb.mustAttach(t, "b-blue", "blue", "web", "10.1.0.20")
	bRed := nb.mustAttach(t, "b-red", "red", "web", "10.1.0.20")
	const port = 7001
	for _, e := range []struct {
		p    *pod
		name string
	}{{aBlue2, "a-blue2"}, {bBlue, "b-blue"}, {bRed, "b-red"}} {
		udpEchoName(t, e.p, port, e.name)
	}
	waitMetric(t, na, `genie_endpoints{scope="remote"}`, 2)
	probes := []*prober{
		startProber(t, "a-blue -> b-blue (cross-node)", aBlue, bBlue.ip, port, "b-blue"),
		startProber(t, "a-red -> b-red (cross-node)", aRed, bRed.ip, port, "b-red"),
		startProber(t, "a-blue -> a-blue2 (node-a)", aBlue, aBlue2.ip, port, "a-blue2"),
	}
	// Every probe answered on the old release first.
	deadline := time.Now().Add(10 * time.Second)
	for _, pr := range probes {
		for {
			pr.mu.Lock()
			n := len(pr.got)
			pr.mu.Unlock()
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no reply on the previous release\n%s\n%s", pr.name, na.logs(), nb.logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Drops the old release counts: to an address no pod has (NO_ROUTE).
	err := aBlue.ns.Do(func(ns.NetNS) error {
		u, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(10, 1, 0, 99), Port: port})
		if err != nil {
			return err
		}
		defer u.Close()
		for range 3 {
			if _, err := u.Write([]byte("nobody")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	upgrade := func(t *testing.T, n *node, args []string, rebuilt bool) {
		oldDrops := dropsTotal(n.metrics(t))
		for deadline := time.Now().Add(5 * time.Second); n == na && oldDrops < 3 && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
			oldDrops = dropsTotal(n.metrics(t))
		}
		if n == na && oldDrops < 3 {
			t.Fatalf("previous release on %s counted %v drops, want the 3 sent to nowhere", n.name, oldDrops)
		}
		oldProgs, oldMaps := upgradePins(t, n)
		if pods := len(hostLinks(n.ns)); len(oldProgs) != pods+1 {
			t.Fatalf("pinned links of the previous release on %s: %v", n.name, oldProgs)
		}

		time.Sleep(time.Second) // a baseline window
		start := time.Now()
		n.stopAgent()
		c.bin, c.agentArgs = newBin, args
		n.startAgent(t)
		c.agentArgs = nil
		ready := time.Now()
		time.Sleep(300 * time.Millisecond) // replies of the last probes
		for _, pr := range probes {
			sent, lost, gap, sendGap, wrong := pr.window(start, ready)
			_, _, base, _, _ := pr.window(start.Add(-time.Second), start)
			t.Logf("%s: upgrade of %s took %v: %d probes, %d lost, longest gap %v (%.1fx the second before: %v; longest pause of the sender %v)", pr.name, n.name,
				ready.Sub(start).Round(time.Millisecond), sent, lost, gap.Round(time.Microsecond), float64(gap)/float64(base), base.Round(time.Microsecond), sendGap.Round(time.Microsecond))
			if lost > 0 || len(wrong) > 0 || sent == 0 {
				t.Errorf("%s: %d of %d probes lost during the upgrade of %s, wrong answers %q", pr.name, lost, sent, n.name, wrong)
			}
		}

		logs := n.logs()
		migrated := slices.ContainsFunc(strings.Split(logs, "\n"), func(l string) bool {
			return strings.Contains(l, `msg="data plane map migrated"`) && strings.Contains(l, "map=genie_drops role=counter")
		})
		if !migrated || !strings.Contains(logs, `msg="data plane upgraded"`) {
			t.Errorf("%s: migration not logged:\n%s", n.name, logs)
		}
		m := n.metrics(t)
		kept, ok := m[`genie_map_migration_entries{map="genie_drops",outcome="kept",role="counter"}`]
		if !ok || oldDrops > 0 && kept < 1 {
			t.Errorf("%s: genie_map_migration_entries of genie_drops kept = %v (exported %v), the previous release counted %v drops", n.name, kept, ok, oldDrops)
		}
		_, endpointsRebuilt := m[`genie_map_migration_entries{map="genie_endpoints",outcome="rebuilt",role="derived"}`]
		if endpointsRebuilt != rebuilt {
			t.Errorf("%s: genie_endpoints rebuilt %v, want %v", n.name, endpointsRebuilt, rebuilt)
		}
		if got := dropsTotal(m); got < oldDrops {
			t.Errorf("%s: drops after the upgrade %v, fewer than the previous release's %v", n.name, got, oldDrops)
		}
		if _, err := os.Stat(filepath.Join(n.pinDir, "upgrade")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: upgrade pin dir left after FinishUpgrade: %v", n.name, err)
		}
		newProgs, newMaps := upgradePins(t, n)
		var stale []ebpf.ProgramID
		for l, id := range oldProgs {
			if newProgs[l] == id {
				t.Errorf("%s: link %s still runs the previous release's program %d", n.name, l, id)
			}
			stale = append(stale, id)
		}
		var replaced []ebpf.MapID
		for name, id := range oldMaps {
			if newMaps[name] != id {
				replaced = append(replaced, id)
			}
		}
		if rebuilt && len(replaced) < 5 || !rebuilt && len(replaced) != 1 {
			t.Errorf("%s: %d maps replaced (%v -> %v)", n.name, len(replaced), oldMaps, newMaps)
		}
		waitFreed(t, n.name+": the previous release's programs and replaced maps", stale, replaced)
	}
	t.Run("node-a with a bigger endpoints map", func(t *testing.T) {
		upgrade(t, na, []string{"--max-endpoints", strconv.Itoa(2 * int(datapath.DefaultMapSizes().Endpoints))}, true)
	})
	t.Run("node-b", func(t *testing.T) {
		upgrade(t, nb, nil, false)
	})
	// New pods work after the upgrade, across nodes.
	bBlue2 := nb.mustAttach(t, "b-blue2", "blue", "web", "10.1.0.21")
	udpEchoName(t, bBlue2, port, "b-blue2")
	pr := startProber(t, "a-blue -> b-blue2 (new pod)", aBlue, bBlue2.ip, port, "b-blue2")
	deadline = time.Now().Add(5 * time.Second)
	for {
		pr.mu.Lock()
		n := len(pr.got)
		pr.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a-blue -> a new pod on the upgraded node-b: no reply\n%s", nb.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, pr := range append(probes, pr) {
		pr.halt()
	}
}
