package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/cli"
	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestPrivilegedUnreachableNextHop: on the routed underlay, the router's
// port on node1's segment goes down, so node1's gateway no longer answers
// ARP; `geniectl status` shows node1's next hop to node2 (routed) as not
// reachable and node3's (on-link) as fine, and all reachable again once
// the port is back. node1's neighbour timers are shortened in its own
// netns (with the kernel's defaults a resolved entry stays REACHABLE for
// 15-45 s before it is re-probed).
func TestPrivilegedUnreachableNextHop(t *testing.T) {
	sb := sandboxtest.New(t, "e2e", sandbox.Options{Nodes: 3, Underlay: sandbox.UnderlayRouted,
		AgentArgs: []string{"--underlay-check-interval=200ms"}})
	n1, err := sb.Node("node1")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"base_reachable_time_ms": "1000", "delay_first_probe_time": "1"} {
		if err := sandbox.SetSysctl(n1.Netns, "net/ipv4/neigh/"+sandbox.NodeUplink+"/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	withHandle(t, n1.Netns, func(h *netlink.Handle) error {
		// Entries resolved at start-up run on the old timers.
		l, err := h.LinkByName(sandbox.NodeUplink)
		if err != nil {
			return err
		}
		neighs, err := h.NeighList(l.Attrs().Index, unix.AF_INET)
		if err != nil {
			return err
		}
		for _, n := range neighs {
			_ = h.NeighDel(&n)
		}
		return nil
	})
	status := func() string {
		t.Helper()
		out, err := exec.Command(filepath.Join(sandboxtest.BinDir(), "geniectl"), "--sandbox", sb.Name(), "status", "--json").Output()
		if err != nil {
			t.Fatalf("geniectl status: %v\n%s", err, out)
		}
		var cs cli.ClusterStatus
		if err := json.Unmarshal(out, &cs); err != nil {
			t.Fatalf("geniectl status --json: %v\n%s", err, out)
		}
		for _, n := range cs.Nodes {
			if n.Name == "node1" {
				return n.NextHops
			}
		}
		t.Fatalf("no node1 in geniectl status:\n%s", out)
		return ""
	}
	failed := func() float64 {
		t.Helper()
		m, err := sb.Metrics(context.Background(), "node1")
		if err != nil {
			t.Fatal(err)
		}
		return m[`genie_underlay_peers{state="failed"}`]
	}
	waitHops := func(want string, wantFailed float64, within time.Duration) {
		t.Helper()
		start, got := time.Now(), ""
		for time.Since(start) < within {
			if got = status(); got == want && failed() == wantFailed {
				t.Logf("node1 next hops %q after %v", want, time.Since(start).Round(100*time.Millisecond))
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("node1 next hops %q (%v failed) after %v, want %q (%v failed)", got, failed(), within, want, wantFailed)
	}
	routerPort := func(up bool) {
		withHandle(t, sb.FabricNetns(), func(h *netlink.Handle) error {
			l, err := h.LinkByName("r0") // the router's port on segment 0 (node1, node3)
			if err != nil {
				return err
			}
			if up {
				return h.LinkSetUp(l)
			}
			return h.LinkSetDown(l)
		})
	}
	// The agent checks every 200 ms: after a second it has seen the
	// deleted entries and re-resolved them.
	time.Sleep(time.Second)
	waitHops("2/2 reachable", 0, 10*time.Second)
	routerPort(false)
	waitHops("1/2 reachable; not: node2", 1, 15*time.Second)
	routerPort(true)
	waitHops("2/2 reachable", 0, 10*time.Second)
}

// withHandle runs f with a netlink handle in the netns at path.
func withHandle(t *testing.T, path string, f func(*netlink.Handle) error) {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := f(h); err != nil {
		t.Fatal(err)
	}
}
