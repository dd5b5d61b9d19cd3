package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/egress"
	"github.com/cni-genie/cni-genie/pkg/egress/egressagent"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EgressConfig are the agent's egress gateway settings (Config.Egress).
type EgressConfig struct {
	// NodeLabels are this node's labels in the store (egress gateways
	// select nodes by them).
	NodeLabels map[string]string
	// DrainTimeout is how long a drained gateway keeps its established
	// flows (default egressagent.DefaultDrainTimeout).
	DrainTimeout time.Duration
	// BeatInterval and BeatTimeout time the gateway heartbeats (defaults
	// egressagent.DefaultBeatInterval, DefaultBeatTimeout).
	BeatInterval, BeatTimeout time.Duration
	// ServiceCIDRs are the cluster's Service ranges (kube-proxy's
	// ClusterIPs): a pod whose default network is a VPC sends them to the
	// node's stack unNATed (egress_host.go).
	ServiceCIDRs []netip.Prefix
}

func (c *Config) registerEgressFlags(fs *flag.FlagSet) {
	fs.Func("node-labels", "this node's labels KEY=VALUE,... (egress gateways select nodes by them)", func(s string) error {
		c.Egress.NodeLabels = map[string]string{}
		for _, kv := range strings.Split(s, ",") {
			if kv = strings.TrimSpace(kv); kv == "" {
				continue
			}
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return fmt.Errorf("label %q: want KEY=VALUE", kv)
			}
			c.Egress.NodeLabels[k] = v
		}
		return nil
	})
	fs.Func("service-cidr", "the cluster's Service CIDRs CIDR,...: pods whose default network is a VPC send them to the node's stack (kube-proxy) instead of out through the node", func(s string) error {
		c.Egress.ServiceCIDRs = nil
		for _, f := range strings.Split(s, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			p, err := netip.ParsePrefix(f)
			if err != nil || !p.Addr().Is4() {
				return fmt.Errorf("service cidr %q: want an IPv4 CIDR", f)
			}
			c.Egress.ServiceCIDRs = append(c.Egress.ServiceCIDRs, p.Masked())
		}
		return nil
	})
	fs.DurationVar(&c.Egress.DrainTimeout, "egress-drain-timeout", c.Egress.DrainTimeout,
		"how long a drained egress gateway keeps its established flows before it leaves the gateway sets (0: the default, 10m)")
	fs.DurationVar(&c.Egress.BeatInterval, "egress-heartbeat-interval", c.Egress.BeatInterval,
		"how often a gateway node writes its heartbeat to the store (0: the default, 300ms)")
	fs.DurationVar(&c.Egress.BeatTimeout, "egress-heartbeat-timeout", c.Egress.BeatTimeout,
		"a gateway is dead this long after its last heartbeat arrived (0: the default, 1s)")
}

// startEgress wires egress gateways (package egress/egressagent) when the
// store has them: the programming of this node's egress state, and the
// heartbeats the gateway liveness comes from. Both stop with ctx. The
// channel is closed once the first pass has programmed the egress maps (at
// once without egress gateways).
func (a *Agent) startEgress(ctx context.Context) <-chan struct{} {
	synced := make(chan struct{})
	es, ok := a.st.(store.EgressStore)
	if !ok {
		a.log.Info("egress gateways disabled: the store has none")
		close(synced)
		return synced
	}
	log := a.log.With("component", "egress")
	ea := &egressagent.Agent{
		Store: a.st, Egress: es, DP: agentEgressDP{a}, Node: a.cfg.NodeName,
		Hosted: a.hostedVNIs, Local: a.localEndpoints,
		Serve: func(ctx context.Context, v string) error {
			_, err := a.acquireVPC(ctx, v)
			return err
		},
		Unserve:      a.releaseVPC,
		Own:          func(ip netip.Addr) error { return a.uplinkAddr(ip, true) },
		Disown:       func(ip netip.Addr) error { return a.uplinkAddr(ip, false) },
		Owned:        a.ownedUplinkAddrs,
		DrainTimeout: a.cfg.Egress.DrainTimeout, HostPrefixes: a.cfg.Egress.ServiceCIDRs, Log: log, Synced: synced,
	}
	if bs, ok := a.st.(store.BeatStore); ok {
		hb := &egressagent.Heartbeats{Store: bs, Node: a.cfg.NodeName, Beating: ea.IsGateway,
			Interval: a.cfg.Egress.BeatInterval, Timeout: a.cfg.Egress.BeatTimeout, Log: log}
		ea.Health = hb
		a.bg.Add(1)
		go func() { defer a.bg.Done(); hb.Run(ctx) }()
	} else {
		log.Info("egress: the store keeps no heartbeats; every known gateway counts as alive")
	}
	a.bg.Add(1)
	go func() { defer a.bg.Done(); _ = ea.Run(ctx) }()
	return synced
}

// egressAddrLabel is the address label that marks the dedicated egress
// addresses the agent added to uplink, so that a later agent adopts them
// (and removes them once unwanted) even after an upgrade rebuilt the
// gateway map that used to tell it. Linux keeps IPv4 labels that start with
// the device's name, at most 15 bytes: ":genie" where it fits, else ":g",
// else none (such an uplink's addresses are not adopted).
func egressAddrLabel(uplink string) string {
	for _, sfx := range []string{":genie", ":g"} {
		if len(uplink)+len(sfx) <= 15 {
			return uplink + sfx
		}
	}
	return ""
}

// uplinkAddr adds (or removes) a dedicated egress address as a /32 on the
// uplink, labelled egressAddrLabel: the node then answers ARP for it, and
// replies to it reach the uplink's program. Idempotent.
func (a *Agent) uplinkAddr(ip netip.Addr, add bool) error {
	l, err := netlink.LinkByName(a.cfg.Uplink)
	if err != nil {
		return fmt.Errorf("uplink %s: %w", a.cfg.Uplink, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Label: egressAddrLabel(a.cfg.Uplink)}
	if add {
		if err := netlink.AddrAdd(l, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add %s to %s: %w", ip, a.cfg.Uplink, err)
		}
		return nil
	}
	if err := netlink.AddrDel(l, addr); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("remove %s from %s: %w", ip, a.cfg.Uplink, err)
	}
	return nil
}

// ownedUplinkAddrs returns the dedicated egress addresses an agent added
// to the uplink (labelled egressAddrLabel).
func (a *Agent) ownedUplinkAddrs() ([]netip.Addr, error) {
	label := egressAddrLabel(a.cfg.Uplink)
	if label == "" {
		return nil, nil
	}
	l, err := netlink.LinkByName(a.cfg.Uplink)
	if err != nil {
		return nil, fmt.Errorf("uplink %s: %w", a.cfg.Uplink, err)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", a.cfg.Uplink, err)
	}
	var out []netip.Addr
	for _, ad := range addrs {
		if ones, _ := ad.Mask.Size(); ad.Label != label || ones != 32 {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ad.IP.To4()); ok {
			out = append(out, ip)
		}
	}
	return out, nil
}

// localEndpoints returns the node's complete VPC attachments with labels.
func (a *Agent) localEndpoints() []egress.Endpoint {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]egress.Endpoint, 0, len(a.atts))
	for _, at := range a.atts {
		if at.Complete && at.IP.IsValid() {
			out = append(out, egress.Endpoint{VPC: at.VPC, IP: at.IP, Labels: at.Labels.labels(), NodeNet: at.NodeNet})
		}
	}
	return out
}

// agentEgressDP gives the egress code the data plane under the agent's
// lock, and nothing once it is closed.
type agentEgressDP struct{ a *Agent }

func (p agentEgressDP) do(f func(*datapath.Datapath) error) error {
	return agentServiceDP(p).do(f)
}

func (p agentEgressDP) UpsertVPCRoute(r datapath.VPCRoute) error {
	return p.do(func(d *datapath.Datapath) error { return d.UpsertVPCRoute(r) })
}

func (p agentEgressDP) DeleteVPCRoute(vni uint32, pfx netip.Prefix) error {
	return p.do(func(d *datapath.Datapath) error { return d.DeleteVPCRoute(vni, pfx) })
}

func (p agentEgressDP) VPCRoutes() (out []datapath.VPCRoute, err error) {
	err = p.do(func(d *datapath.Datapath) error { out, err = d.VPCRoutes(); return err })
	return out, err
}

func (p agentEgressDP) UpsertEgressSelection(s datapath.EgressSelection) error {
	return p.do(func(d *datapath.Datapath) error { return d.UpsertEgressSelection(s) })
}

func (p agentEgressDP) DeleteEgressSelection(route uint32, pod netip.Addr) error {
	return p.do(func(d *datapath.Datapath) error { return d.DeleteEgressSelection(route, pod) })
}

func (p agentEgressDP) EgressSelections() (out []datapath.EgressSelection, err error) {
	err = p.do(func(d *datapath.Datapath) error { out, err = d.EgressSelections(); return err })
	return out, err
}

func (p agentEgressDP) UpsertEgressPolicy(id uint32, g datapath.EgressGatewaySet) error {
	return p.do(func(d *datapath.Datapath) error { return d.UpsertEgressPolicy(id, g) })
}

func (p agentEgressDP) DeleteEgressPolicy(id uint32) error {
	return p.do(func(d *datapath.Datapath) error { return d.DeleteEgressPolicy(id) })
}

func (p agentEgressDP) EgressPolicies() (out map[uint32]datapath.EgressGatewaySet, err error) {
	err = p.do(func(d *datapath.Datapath) error { out, err = d.EgressPolicies(); return err })
	return out, err
}

func (p agentEgressDP) UpsertEgressGateway(vni uint32, ip netip.Addr) error {
	return p.do(func(d *datapath.Datapath) error { return d.UpsertEgressGateway(vni, ip) })
}

func (p agentEgressDP) DeleteEgressGateway(vni uint32) error {
	return p.do(func(d *datapath.Datapath) error { return d.DeleteEgressGateway(vni) })
}

func (p agentEgressDP) EgressGateways() (out map[uint32]netip.Addr, err error) {
	err = p.do(func(d *datapath.Datapath) error { out, err = d.EgressGateways(); return err })
	return out, err
}

func (p agentEgressDP) PruneEgressIPs() error {
	return p.do(func(d *datapath.Datapath) error { return d.PruneEgressIPs() })
}
