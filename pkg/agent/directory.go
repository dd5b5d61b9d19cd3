package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/directory"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// Endpoint modes (--endpoint-mode).
const (
	// ModeVPCSync: every node lists and watches the endpoints of the VPCs
	// it hosts and programs all of them (the small-cluster mode).
	ModeVPCSync = "vpc-sync"
	// ModeDirectory: every node holds its local endpoints, the directory
	// shards it is given and the remote endpoints its pods talk to,
	// learned on demand (package directory, lib/directory.h).
	ModeDirectory = "directory"
)

// Defaults of the directory flags.
const (
	DefaultDirectoryRPCPort    = 4790
	DefaultDirectoryGossipPort = 4791
)

// dirLookupTimeout bounds a miss-driven lookup (each holder attempt is
// bounded by directory.DefaultAttemptTimeout; the first packet meanwhile
// goes through a holder).
const dirLookupTimeout = time.Second

// dirWarmConns bounds the directory connections opened ahead of use:
// every member's in a cluster of up to that many nodes, so a first
// packet's lookup finds its connection ready; larger clusters connect to
// the others on first use.
const dirWarmConns = 256

// dirRejoinInterval is how often a node whose gossip view lacks nodes the
// store knows joins them (a node that started alone, a healed split).
const dirRejoinInterval = 5 * time.Second

// registerDirectoryFlags binds the endpoint mode and the directory's
// settings.
func (c *Config) registerDirectoryFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.EndpointMode, "endpoint-mode", c.EndpointMode,
		"how a node learns remote endpoints: vpc-sync (each node lists and watches the endpoints of the VPCs it hosts: simple, cost grows with the VPCs' size; small clusters) or directory (a sharded, replicated directory on the nodes, remote endpoints learned on first packet: cost follows the node's own traffic; every node of a cluster must use the same mode)")
	fs.IntVar(&c.DirectoryRPCPort, "directory-rpc-port", c.DirectoryRPCPort, "directory mode: TCP port of the directory's gRPC service on the underlay address")
	fs.IntVar(&c.DirectoryGossipPort, "directory-gossip-port", c.DirectoryGossipPort, "directory mode: UDP and TCP port of the membership gossip (memberlist) on the underlay address")
	fs.IntVar(&c.DirectoryShards, "directory-shards", c.DirectoryShards, "directory mode: number of shards, a power of two, the same on every node and in the store (about 16 per node; changing it needs geniectl directory backfill)")
	fs.IntVar(&c.DirectoryReplicas, "directory-replicas", c.DirectoryReplicas, fmt.Sprintf("directory mode: holders per shard (1-%d)", datapath.MaxDirectoryReplicas))
}

// directoryMode reports whether c selects the directory.
func (c *Config) directoryMode() bool { return c.EndpointMode == ModeDirectory }

func (c *Config) validateDirectory() error {
	switch c.EndpointMode {
	case "", ModeVPCSync:
		return nil
	case ModeDirectory:
	default:
		return fmt.Errorf("config: endpoint mode %q is not %q or %q", c.EndpointMode, ModeVPCSync, ModeDirectory)
	}
	if err := directory.ValidateShape(c.DirectoryShards, c.DirectoryReplicas); err != nil {
		return fmt.Errorf("config: directory: %w", err)
	}
	if c.DirectoryReplicas > datapath.MaxDirectoryReplicas {
		return fmt.Errorf("config: directory replicas %d: the data plane keeps at most %d", c.DirectoryReplicas, datapath.MaxDirectoryReplicas)
	}
	for _, p := range []int{c.DirectoryRPCPort, c.DirectoryGossipPort} {
		if p <= 0 || p > 65535 {
			return fmt.Errorf("config: directory port %d out of range", p)
		}
	}
	if c.DirectoryRPCPort == c.DirectoryGossipPort {
		return fmt.Errorf("config: directory rpc and gossip ports are both %d", c.DirectoryRPCPort)
	}
	if mac, err := parseMAC(c.GatewayMAC); err == nil && mac[0] == 0x06 && mac[1]&0xf0 == 0x60 {
		return fmt.Errorf("config: gateway mac %s: 06:6x:... is the directory's bounce mark", mac)
	}
	return nil
}

// dirAgent is the agent's directory (directory mode): the directory node
// (holder and looker), its gRPC service and memberlist gossip on the
// underlay, and the glue to the data plane: placement -> genie_dir_shard,
// held records -> genie_dir_held, members -> genie_dir_nodes, miss reports
// -> lookups -> genie_dir_lru, invalidations -> genie_dir_lru.
type dirAgent struct {
	a    *Agent
	src  store.DirectorySource
	node *directory.Node
	tr   *directory.GRPCTransport
	srv  *grpc.Server
	lis  net.Listener
	g    *directory.Gossip
	miss *datapath.MissReader
	sf   singleflight.Group
	wg   sync.WaitGroup

	m *dirMetrics

	mu sync.Mutex
	// shards is the holder list last written per shard.
	shards [][]netip.Addr
	// published is the version of each local record this node published.
	published map[directory.Key]uint64
	// members is the last live member set, by name.
	members map[string]directory.Member
	subs    map[int]func([]string)
	nextSub int
}

type dirMetrics struct {
	learned      prometheus.Counter
	lookupErrors *prometheus.CounterVec
	unresolved   prometheus.Counter
	installSecs  prometheus.Histogram
}

// startDirectory brings the directory up (after the node watch started,
// so node names resolve to underlay addresses).
func (a *Agent) startDirectory(ctx context.Context) error {
	src, ok := a.st.(store.DirectorySource)
	if !ok {
		return fmt.Errorf("directory mode: the %s store does not lay endpoints out by shard", a.cfg.datastore())
	}
	if n := src.DirectoryShards(); n != a.cfg.DirectoryShards {
		return fmt.Errorf("directory mode: the store lays records out in %d shards, --directory-shards is %d", n, a.cfg.DirectoryShards)
	}
	d := &dirAgent{a: a, src: src, published: map[directory.Key]uint64{}, members: map[string]directory.Member{}, subs: map[int]func([]string){}}
	d.m = &dirMetrics{
		learned: prometheus.NewCounter(prometheus.CounterOpts{Name: "genie_directory_learned_total",
			Help: "Remote endpoints installed in the learned LRU after a miss report."}),
		lookupErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genie_directory_miss_lookups_failed_total",
			Help: "Miss-driven lookups that found nothing, by reason (not_found, unavailable, own, unresolved_node)."}, []string{"reason"}),
		unresolved: prometheus.NewCounter(prometheus.CounterOpts{Name: "genie_directory_held_unresolved_total",
			Help: "Held records not written to the data plane because their node's underlay address is unknown."}),
		installSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "genie_directory_miss_to_install_seconds",
			Help: "From reading a miss report to the learned entry in the data plane.", Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16)}),
	}
	a.m.reg.MustRegister(d.m.learned, d.m.lookupErrors, d.m.unresolved, d.m.installSecs, d.statsCollector())
	self := netip.AddrPortFrom(a.node.UnderlayIP, uint16(a.cfg.DirectoryRPCPort))
	if err := a.dp.SetDirectoryMode(true, a.cfg.DirectoryShards); err != nil {
		return fmt.Errorf("directory mode: %w", err)
	}
	if n, err := a.dp.ClearDirectoryEntries(); err != nil {
		return fmt.Errorf("directory mode: %w", err)
	} else if n > 0 {
		a.log.Info("directory: cleared the previous run's held and learned entries", "entries", n)
	}
	d.shards = make([][]netip.Addr, a.cfg.DirectoryShards)
	var err error
	if d.lis, err = directory.ListenRPC(self.String()); err != nil {
		return err
	}
	d.tr = directory.NewGRPCTransport()
	d.node, err = directory.NewNode(directory.Config{
		Self:   directory.Member{Name: a.cfg.NodeName, RPC: self},
		Shards: a.cfg.DirectoryShards, Replicas: a.cfg.DirectoryReplicas,
		Source: src, Transport: d.tr, Registerer: a.m.reg, Logger: a.log,
		OnPlacement: d.onPlacement, OnHeld: d.onHeld, OnInvalidate: d.onInvalidate,
	})
	if err != nil {
		d.lis.Close()
		return err
	}
	d.srv = directory.NewGRPCServer(d.node)
	d.wg.Add(2)
	go func() { defer d.wg.Done(); _ = d.srv.Serve(d.lis) }()
	go func() { defer d.wg.Done(); _ = d.node.Run(ctx) }()
	if d.miss, err = a.dp.Misses(); err != nil {
		d.stop()
		return fmt.Errorf("directory mode: %w", err)
	}
	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.readMisses(ctx) }()
	// Join the store's nodes before the first placement: a node that
	// started alone would hold (and list) every shard until the others
	// joined it.
	gc := directory.GossipConfig{
		Name: a.cfg.NodeName, BindAddr: a.node.UnderlayIP.String(), BindPort: a.cfg.DirectoryGossipPort,
		RPC: self, OnChange: d.onMembers, Seeds: d.seeds(nil),
	}
	if d.g, err = directory.JoinGossip(gc); err != nil && len(gc.Seeds) > 0 {
		a.log.Info("directory gossip: no known node answered; starting alone", "seeds", len(gc.Seeds), "err", err)
		gc.Seeds = nil
		d.g, err = directory.JoinGossip(gc)
	}
	if err != nil {
		d.stop()
		return err
	}
	a.mu.Lock()
	a.dir = d
	a.mu.Unlock()
	d.rejoin()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		t := time.NewTicker(dirRejoinInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				d.rejoin()
			}
		}
	}()
	a.log.Info("directory started", "rpc", self, "gossip", d.g.Addr(), "shards", a.cfg.DirectoryShards, "replicas", a.cfg.DirectoryReplicas)
	return nil
}

// dirSeeds bounds the seeds of one join: memberlist tries them one after
// the other, each unreachable one costing its TCP timeout (2 s), and the
// store lists dead nodes until they are reclaimed.
const dirSeeds = 5

// seeds returns the gossip addresses of up to dirSeeds store nodes, but
// this one and those in live, freshest heartbeat first.
func (d *dirAgent) seeds(live map[string]bool) []string {
	var ns []vpc.Node
	d.a.mu.Lock()
	for name, n := range d.a.nodes {
		if name != d.a.cfg.NodeName && !live[name] && n.UnderlayIP.IsValid() {
			ns = append(ns, n)
		}
	}
	d.a.mu.Unlock()
	slices.SortFunc(ns, func(a, b vpc.Node) int { return b.Heartbeat.Compare(a.Heartbeat) })
	var seeds []string
	for _, n := range ns[:min(len(ns), dirSeeds)] {
		seeds = append(seeds, net.JoinHostPort(n.UnderlayIP.String(), strconv.Itoa(d.a.cfg.DirectoryGossipPort)))
	}
	return seeds
}

// rejoin joins the store's nodes that are not in the gossip view.
func (d *dirAgent) rejoin() {
	live := map[string]bool{}
	for _, m := range d.g.Members() {
		live[m.Name] = true
	}
	seeds := d.seeds(live)
	if len(seeds) == 0 {
		return
	}
	if n, err := d.g.Join(seeds); err != nil {
		d.a.log.Debug("directory gossip: no seed answered", "seeds", len(seeds), "err", err)
	} else {
		d.a.log.Debug("directory gossip: joined", "reached", n, "seeds", len(seeds))
	}
}

// stop leaves the gossip (the others re-place at once) and stops the
// directory; the data plane maps stay as they are.
func (d *dirAgent) stop() {
	if d.g != nil {
		if err := d.g.Leave(time.Second); err != nil {
			d.a.log.Warn("directory gossip: leave", "err", err)
		}
		d.g.Shutdown()
	}
	if d.miss != nil {
		d.miss.Close()
	}
	if d.srv != nil {
		d.srv.Stop()
	}
	if d.lis != nil {
		d.lis.Close()
	}
	d.wg.Wait()
	if d.tr != nil {
		d.tr.Close()
	}
}

// onMembers feeds a membership change to the directory, the transport,
// the data plane's member set and the liveness subscribers.
func (d *dirAgent) onMembers(ms []directory.Member) {
	d.node.SetMembers(ms)
	d.tr.Prune(ms)
	d.tr.Warm(ms, d.a.cfg.NodeName, dirWarmConns)
	ips := make([]netip.Addr, 0, len(ms))
	names := make([]string, 0, len(ms))
	byName := make(map[string]directory.Member, len(ms))
	for _, m := range ms {
		ips = append(ips, m.RPC.Addr())
		names = append(names, m.Name)
		byName[m.Name] = m
	}
	if err := d.a.dp.SetDirectoryNodes(ips); err != nil {
		d.a.log.Warn("directory: writing the member set", "err", err)
	}
	d.mu.Lock()
	d.members = byName
	subs := make([]func([]string), 0, len(d.subs))
	for _, f := range d.subs {
		subs = append(subs, f)
	}
	d.mu.Unlock()
	for _, f := range subs {
		f(names)
	}
}

// onPlacement writes the holders of every shard whose holder list changed.
func (d *dirAgent) onPlacement(p *directory.Placement) {
	ms := p.Members()
	addrs := make([]netip.Addr, len(ms))
	for i, m := range ms {
		addrs[i] = m.RPC.Addr()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	written := 0
	for s := range d.shards {
		hs := p.Holders(uint32(s))
		want := make([]netip.Addr, len(hs))
		for i, h := range hs {
			want[i] = addrs[h]
		}
		if slices.Equal(want, d.shards[s]) {
			continue
		}
		if err := d.a.dp.SetDirectoryShard(uint32(s), want); err != nil {
			d.a.log.Warn("directory: writing shard holders", "shard", s, "err", err)
			continue
		}
		d.shards[s] = want
		written++
	}
	d.a.log.Debug("directory placement written", "members", len(ms), "shards_rewritten", written)
}

// nodeIP resolves a node name to its underlay address: the store's node
// list, else the directory member set.
func (d *dirAgent) nodeIP(name string) (netip.Addr, bool) {
	d.a.mu.Lock()
	n, ok := d.a.nodes[name]
	d.a.mu.Unlock()
	if ok && n.UnderlayIP.Is4() {
		return n.UnderlayIP, true
	}
	d.mu.Lock()
	m, ok := d.members[name]
	d.mu.Unlock()
	if ok {
		return m.RPC.Addr(), true
	}
	return netip.Addr{}, false
}

func (d *dirAgent) entryOf(r directory.Record) (datapath.DirectoryEntry, bool) {
	ip, ok := d.nodeIP(r.Node)
	if !ok {
		return datapath.DirectoryEntry{}, false
	}
	return datapath.DirectoryEntry{VNI: r.VNI, IP: r.IP, NodeIP: ip, MAC: r.HardwareAddr(), Version: r.Version}, true
}

// onHeld mirrors the held records into genie_dir_held.
func (d *dirAgent) onHeld(puts []directory.Record, dels []directory.Key) {
	for _, k := range dels {
		if err := d.a.dp.DeleteHeld(k.VNI, k.IP); err != nil {
			d.a.log.Warn("directory: deleting held record", "key", k, "err", err)
		}
	}
	for _, r := range puts {
		e, ok := d.entryOf(r)
		if !ok {
			d.m.unresolved.Inc()
			continue
		}
		if err := d.a.dp.UpsertHeld(e); err != nil {
			d.a.m.countMapFull("directory_held", err)
			d.a.log.Warn("directory: writing held record", "key", r.Key, "err", err)
		}
	}
}

// onInvalidate applies a holder's invalidation to the learned LRU.
func (d *dirAgent) onInvalidate(inv directory.Invalidation) {
	r := inv.Record
	e := datapath.DirectoryEntry{VNI: r.VNI, IP: r.IP, Version: r.Version}
	if !inv.Deleted {
		var ok bool
		if e, ok = d.entryOf(r); !ok || r.Node == d.a.cfg.NodeName {
			// Moved here, or to a node we cannot reach: forget it.
			e, inv.Deleted = datapath.DirectoryEntry{VNI: r.VNI, IP: r.IP, Version: r.Version}, true
		}
	}
	if _, err := d.a.dp.InvalidateRemote(e, inv.Deleted); err != nil {
		d.a.log.Warn("directory: applying invalidation", "key", r.Key, "err", err)
	}
}

// readMisses turns the data plane's miss reports into lookups (one in
// flight per key) and learned entries.
func (d *dirAgent) readMisses(ctx context.Context) {
	for {
		m, err := d.miss.Read()
		if err != nil {
			if errors.Is(err, datapath.ErrMissesClosed) || ctx.Err() != nil {
				return
			}
			d.a.log.Warn("directory: reading miss reports", "err", err)
			continue
		}
		start := time.Now()
		k := directory.Key{VNI: m.VNI, IP: m.IP}
		go func() {
			_, _, _ = d.sf.Do(k.String(), func() (any, error) {
				d.resolve(ctx, k, start)
				return nil, nil
			})
		}()
	}
}

// resolve looks k up and installs the answer in the learned LRU.
func (d *dirAgent) resolve(ctx context.Context, k directory.Key, start time.Time) {
	d.a.mu.Lock()
	_, local := d.a.local[vniIP{k.VNI, k.IP}]
	d.a.mu.Unlock()
	if local {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, dirLookupTimeout)
	r, err := d.node.Lookup(lctx, k)
	cancel()
	switch {
	case errors.Is(err, directory.ErrNotFound):
		d.m.lookupErrors.WithLabelValues("not_found").Inc()
		return
	case err != nil:
		d.m.lookupErrors.WithLabelValues("unavailable").Inc()
		d.a.log.Debug("directory: lookup after a miss", "key", k, "err", err)
		return
	case r.Node == d.a.cfg.NodeName:
		d.m.lookupErrors.WithLabelValues("own").Inc()
		return
	}
	e, ok := d.entryOf(r)
	if !ok {
		d.m.lookupErrors.WithLabelValues("unresolved_node").Inc()
		return
	}
	if _, err := d.a.dp.LearnRemote(e); err != nil {
		d.a.m.countMapFull("directory_learned", err)
		d.a.log.Warn("directory: installing a learned endpoint", "key", k, "err", err)
		return
	}
	d.m.learned.Inc()
	d.m.installSecs.Observe(time.Since(start).Seconds())
}

// publish pushes a local endpoint just written to the store to its
// shard's holders, with the version the store gave it, and returns once
// at least one holder applied it, so that a packet from any node reaches
// it through the bouncer when ADD returns.
func (d *dirAgent) publish(ctx context.Context, e vpc.Endpoint) error {
	k := directory.Key{VNI: e.VNI, IP: e.IP}
	r, ok, err := d.src.DirectoryRecord(ctx, e.VPC, k)
	if err != nil {
		return fmt.Errorf("read directory record: %w", err)
	}
	if !ok || r.Node != d.a.cfg.NodeName {
		return fmt.Errorf("directory record of %s: not found as written", k)
	}
	if _, err := d.node.Publish(ctx, directory.Publication{Record: r}); err != nil {
		return err
	}
	d.mu.Lock()
	d.published[k] = r.Version
	d.mu.Unlock()
	return nil
}

// unpublish tells the holders that a local endpoint was deleted from the
// store, in the background (their watch brings the deletion anyway).
func (d *dirAgent) unpublish(vni uint32, ip netip.Addr) {
	k := directory.Key{VNI: vni, IP: ip}
	d.mu.Lock()
	v, ok := d.published[k]
	delete(d.published, k)
	d.mu.Unlock()
	if !ok {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// The deletion's revision is above the put's: v+1 is a lower
		// bound, enough to win over the record the holders have.
		_, _ = d.node.Publish(ctx, directory.Publication{Record: directory.Record{Key: k, Version: v + 1}, Deleted: true})
	}()
}

// Alive implements directory.Liveness.
func (d *dirAgent) Alive(node string) bool { return d.g.Alive(node) }

// Subscribe implements directory.Liveness.
func (d *dirAgent) Subscribe(f func([]string)) func() {
	d.mu.Lock()
	id := d.nextSub
	d.nextSub++
	d.subs[id] = f
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		delete(d.subs, id)
		d.mu.Unlock()
	}
}

// Liveness returns the node liveness of the directory's membership
// (memberlist: a crashed node is not alive within about a second), or nil
// when the agent does not run the directory (vpc-sync mode) or has not
// started it yet.
func (a *Agent) Liveness() directory.Liveness {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dir == nil {
		return nil
	}
	return a.dir
}

// statsCollector exports the data plane's directory counters.
func (d *dirAgent) statsCollector() prometheus.Collector {
	desc := prometheus.NewDesc("genie_directory_datapath_packets_total",
		"Packets the data plane handled through the directory, by event: lru_hit, held_hit, bounced (sent to a holder), forwarded (as a holder), delivered (bounced, accepted here), unverified_source.",
		[]string{"event"}, nil)
	return collectorFunc{desc: desc, collect: func(ch chan<- prometheus.Metric) {
		d.a.mu.Lock()
		defer d.a.mu.Unlock()
		if d.a.dp == nil || d.a.dpClosed {
			return
		}
		st, err := d.a.dp.DirectoryStats()
		if err != nil {
			return
		}
		for s, n := range st {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(n), s.String())
		}
	}}
}

type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// startEndpointMode starts what keeps remote endpoints current: the
// directory, or (vpc-sync) the endpoint watch from rev, with the data
// plane's directory mode off.
func (a *Agent) startEndpointMode(ctx context.Context, rev int64) error {
	if a.cfg.directoryMode() {
		return a.startDirectory(ctx)
	}
	if err := a.dp.SetDirectoryMode(false, 0); err != nil {
		return err
	}
	a.startEndpointWatch(ctx, rev)
	return nil
}

// publishDirectory publishes a local endpoint the store just stored (e is
// PutEndpoint's result, with its VNI) to the directory; nothing in
// vpc-sync mode.
func (a *Agent) publishDirectory(ctx context.Context, e vpc.Endpoint) error {
	a.mu.Lock()
	d := a.dir
	a.mu.Unlock()
	if d == nil {
		return nil
	}
	return d.publish(ctx, e)
}

// unpublishDirectory tells the directory a local endpoint was deleted.
func (a *Agent) unpublishDirectory(vni uint32, ip netip.Addr) {
	a.mu.Lock()
	d := a.dir
	a.mu.Unlock()
	if d != nil && ip.IsValid() {
		d.unpublish(vni, ip)
	}
}
