package agent

import (
	"context"
	"errors"
	"net/netip"
	"sort"
	"time"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultUnderlayCheckInterval is the default of --underlay-check-interval.
const DefaultUnderlayCheckInterval = 5 * time.Second

// Next hop states of genie_underlay_peers and the agent's log.
const (
	peerReachable  = "reachable"  // the neighbour entry has a MAC
	peerUnresolved = "unresolved" // no entry yet, or ARP in flight
	peerFailed     = "failed"     // ARP got no answer: packets are lost
	peerNoRoute    = "no_route"   // no route: counted as NO_NEXTHOP drops
)

var peerStates = []string{peerReachable, peerUnresolved, peerFailed, peerNoRoute}

// underlayMonitor checks every known peer node's next hop (the kernel's
// route and neighbour entry, as the data plane's bpf_redirect_neigh uses
// them), because a next hop that never answers ARP loses packets in the
// kernel's neighbour table where no drop counter sees them.
type underlayMonitor struct {
	peers       *prometheus.GaugeVec // by state
	unreachable *prometheus.GaugeVec // by node: 1 unless reachable
	kick        chan struct{}
	// last is each peer's last state, to log changes once.
	last map[string]string
	// pending are peers seen unresolved once, not yet logged.
	pending map[string]bool
}

func newUnderlayMonitor(reg prometheus.Registerer) *underlayMonitor {
	u := &underlayMonitor{
		peers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "genie_underlay_peers",
			Help: "Peer nodes by the state of their underlay next hop (reachable, unresolved, failed: ARP unanswered, no_route)."}, []string{"state"}),
		unreachable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "genie_underlay_peer_unreachable",
			Help: "1 for a peer node whose underlay next hop is not reachable (unresolved, failed or no route), else 0."}, []string{"node"}),
		kick:    make(chan struct{}, 1),
		last:    map[string]string{},
		pending: map[string]bool{},
	}
	reg.MustRegister(u.peers, u.unreachable)
	for _, s := range peerStates {
		u.peers.WithLabelValues(s).Set(0)
	}
	return u
}

// kickUnderlay asks for a check soon (a node appeared or changed); it
// never blocks.
func (a *Agent) kickUnderlay() {
	if a.underlay == nil {
		return
	}
	select {
	case a.underlay.kick <- struct{}{}:
	default:
	}
}

// startUnderlayMonitor checks the peers' next hops every
// cfg.UnderlayCheckInterval and on node events until ctx ends.
func (a *Agent) startUnderlayMonitor(ctx context.Context) {
	every := a.cfg.UnderlayCheckInterval
	if every <= 0 || a.underlay == nil {
		return
	}
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			a.checkUnderlay()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-a.underlay.kick:
			}
		}
	}()
}

type peer struct {
	name string
	ip   netip.Addr
}

// checkUnderlay looks up every peer's next hop once, publishes the counts
// and logs each change of a peer's state.
func (a *Agent) checkUnderlay() {
	a.mu.Lock()
	if a.dp == nil || a.dpClosed {
		a.mu.Unlock()
		return
	}
	dp := a.dp
	peers := make([]peer, 0, len(a.nodes))
	for _, n := range a.nodes {
		if n.Name != a.cfg.NodeName && n.UnderlayIP.IsValid() {
			peers = append(peers, peer{n.Name, n.UnderlayIP})
		}
	}
	a.mu.Unlock()
	sort.Slice(peers, func(i, j int) bool { return peers[i].name < peers[j].name })

	u := a.underlay
	counts := map[string]int{}
	seen := map[string]bool{}
	for _, p := range peers {
		nh, err := dp.LookupNextHop(p.ip)
		state := nextHopState(nh, err)
		if state == peerUnresolved && u.last[p.name] == peerFailed {
			// Our re-probe of a FAILED entry makes it INCOMPLETE until
			// it fails again or is answered: still failed.
			state = peerFailed
		}
		if state == peerUnresolved || state == peerFailed || nh.Neighbour == "STALE" {
			// Nothing resolves a next hop no packet went to, and a FAILED
			// entry stays FAILED until used: ask the kernel to (re)probe,
			// so the next check sees the answer.
			probeNeighbour(nh)
		}
		counts[state]++
		seen[p.name] = true
		v := 0.0
		if state != peerReachable {
			v = 1
		}
		u.unreachable.WithLabelValues(p.name).Set(v)
		if u.last[p.name] == state {
			delete(u.pending, p.name)
			continue
		}
		if state == peerUnresolved && !u.pending[p.name] {
			// A new peer nothing was sent to yet, or an idle entry the
			// kernel collected: the probe above resolves it by the next
			// check (or fails it); only a second unresolved check is
			// worth a line.
			u.pending[p.name] = true
			continue
		}
		delete(u.pending, p.name)
		args := []any{"peer", p.name, "underlay", p.ip, "state", state, "neighbour", nh.Neighbour}
		if nh.Gateway.IsValid() {
			args = append(args, "gateway", nh.Gateway)
		} else if err == nil {
			args = append(args, "gateway", "on-link")
		}
		if err != nil {
			args = append(args, "err", err)
		}
		prev, known := u.last[p.name]
		switch {
		case state == peerReachable:
			a.log.Info("underlay next hop reachable", args...)
		case !known || prev == peerReachable:
			a.log.Warn("underlay next hop not reachable", args...)
		default: // from one bad state to another, e.g. INCOMPLETE to FAILED
			a.log.Warn("underlay next hop still not reachable", args...)
		}
		u.last[p.name] = state
	}
	for name := range u.last {
		if !seen[name] {
			delete(u.last, name)
			delete(u.pending, name)
			u.unreachable.DeleteLabelValues(name)
		}
	}
	for _, s := range peerStates {
		u.peers.WithLabelValues(s).Set(float64(counts[s]))
	}
}

// nextHopState classifies a LookupNextHop result.
func nextHopState(nh datapath.NextHop, err error) string {
	switch {
	case errors.Is(err, datapath.ErrNoNextHop):
		return peerNoRoute
	case err != nil:
		return peerFailed
	}
	switch nh.Neighbour {
	case "REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP":
		return peerReachable
	case "FAILED":
		return peerFailed
	default: // NONE, INCOMPLETE
		return peerUnresolved
	}
}

// probeNeighbour makes the kernel resolve nh's neighbour entry as if a
// packet were sent to it (NTF_USE: no packet is built), creating the entry
// if there is none.
func probeNeighbour(nh datapath.NextHop) {
	target := nh.Peer
	if nh.Gateway.IsValid() {
		target = nh.Gateway
	}
	if nh.Ifindex == 0 || !target.IsValid() {
		return
	}
	_ = netlink.NeighSet(&netlink.Neigh{
		LinkIndex: nh.Ifindex, Family: unix.AF_INET, IP: target.AsSlice(),
		State: netlink.NUD_NONE, Flags: netlink.NTF_USE,
	})
}
