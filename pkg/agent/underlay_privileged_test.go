package agent_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A peer whose next hop stops answering ARP shows up as failed in node-a's
// metrics within a bounded time, logged once, and as reachable again once
// it answers. node-a's neighbour timers are shortened (in its own netns)
// so that a REACHABLE entry goes stale within ~1.5 s; with the kernel's
// defaults the same takes 30-45 s longer.
func TestPrivilegedUnderlayNextHop(t *testing.T) {
	c := newCluster(t, 2, "--underlay-check-interval=200ms")
	na, nb := c.nodes[0], c.nodes[1]
	err := na.ns.Do(func(ns.NetNS) error {
		for f, v := range map[string]string{"base_reachable_time_ms": "1000", "delay_first_probe_time": "1"} {
			if err := os.WriteFile("/proc/sys/net/ipv4/neigh/eth0/"+f, []byte(v), 0o644); err != nil {
				return err
			}
		}
		// The entry the agent resolved at start-up runs on the old
		// timers: start over.
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		err = netlink.NeighDel(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_INET, IP: net.ParseIP("192.168.77.11")})
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatalf("shortening node-a's neighbour timers: %v", err)
	}
	unreachable := `genie_underlay_peer_unreachable{node="node-b"}`
	waitUnderlay(t, na, 10*time.Second, map[string]float64{`genie_underlay_peers{state="reachable"}`: 1, unreachable: 0})

	// node-b's port on the underlay bridge goes down: node-a's ARP for it
	// gets no answer.
	before := len(na.logs())
	setFabricPort(t, c, 1, false)
	start := time.Now()
	waitUnderlay(t, na, 15*time.Second, map[string]float64{
		`genie_underlay_peers{state="failed"}`: 1, `genie_underlay_peers{state="reachable"}`: 0, unreachable: 1})
	t.Logf("node-b shown failed %v after its port went down", time.Since(start).Round(100*time.Millisecond))
	// Leaving reachable is one warning; repeated probes of the failed
	// entry are no new state.
	time.Sleep(time.Second)
	logs := na.logs()[before:]
	if n := strings.Count(logs, `"underlay next hop not reachable"`); n != 1 {
		t.Errorf("node-a logged %d next hop changes to not reachable, want 1\n%s", n, logs)
	}
	if !strings.Contains(logs, `peer=node-b underlay=192.168.77.11 state=failed neighbour=FAILED gateway=on-link`) {
		t.Errorf("node-a's log does not name node-b, its underlay IP and state failed\n%s", logs)
	}

	setFabricPort(t, c, 1, true)
	start = time.Now()
	waitUnderlay(t, na, 15*time.Second, map[string]float64{
		`genie_underlay_peers{state="reachable"}`: 1, `genie_underlay_peers{state="failed"}`: 0, unreachable: 0})
	t.Logf("node-b shown reachable %v after its port came back", time.Since(start).Round(100*time.Millisecond))
	_ = nb
}

// waitUnderlay waits until every metric of want has its value.
func waitUnderlay(t *testing.T, n *node, within time.Duration, want map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		m := n.metrics(t)
		var bad []string
		for k, v := range want {
			if got, ok := m[k]; !ok || got != v {
				bad = append(bad, fmt.Sprintf("%s = %v (present %v), want %v", k, got, ok, v))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			neigh, _ := exec.Command("nsenter", "--net="+n.ns.Path(), "--", "ip", "-s", "neigh", "show", "dev", "eth0").CombinedOutput()
			t.Fatalf("after %v on %s: %s\nneighbours:\n%s\n%s", within, n.name, strings.Join(bad, "; "), neigh, n.logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// setFabricPort sets the underlay bridge port of node i up or down.
func setFabricPort(t *testing.T, c *cluster, i int, up bool) {
	t.Helper()
	err := c.fabric.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, fmt.Sprintf("p%d-", i)) {
				if up {
					return netlink.LinkSetUp(l)
				}
				return netlink.LinkSetDown(l)
			}
		}
		return fmt.Errorf("no port p%d-* on the underlay bridge", i)
	})
	if err != nil {
		t.Fatalf("setting port of node %d up=%v: %v", i, up, err)
	}
}
