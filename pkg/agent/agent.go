package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/ipam"
	"github.com/cni-genie/cni-genie/pkg/qos"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
)

// Agent is the node agent. Create it with New and start it with Run.
type Agent struct {
	cfg Config
	log *slog.Logger

	// nodeWatchDone is closed when the node watch stopped.
	nodeWatchDone    chan struct{}
	nodeWatchStarted bool
	// epWatchDone is closed when the endpoint watch stopped.
	epWatchDone    chan struct{}
	epWatchStarted bool
	// vpcw is the VPC-scoped endpoint watch (nil: the store has no
	// store.VPCWatcher and one watch follows all VPCs).
	vpcw *vpcWatch
	// dir is the endpoint directory (directory mode; directory.go).
	dir *dirAgent

	// Set during start-up, read-only afterwards.
	st       store.Store
	dp       *datapath.Datapath
	ipam     *ipam.Allocator
	state    *stateStore
	m        *metrics
	underlay *underlayMonitor // underlay.go
	node     vpc.Node
	uplinkIx int
	qos      *qos.Tree // nil: no QoS tree on the uplink
	trace    *tracer   // trace.go; set under mu once the reader runs
	podMTU   int
	gwMAC    net.HardwareAddr
	// runCtx lives as long as Run; watches derive from it.
	runCtx context.Context
	// bg are the background loops (heartbeat, reclaim) shutdown waits for.
	bg sync.WaitGroup

	ready    atomic.Bool
	notReady atomic.Value // string: why not ready

	// gcMu: attach/detach hold it shared, GC exclusively, so GC never sees
	// a half-done attachment.
	gcMu sync.RWMutex
	// keys serialises operations on one attachment.
	keys keyedMutex

	// mu guards everything below and every data plane access.
	mu sync.Mutex
	// dpClosed is set when the data plane handle is closed.
	dpClosed bool
	// atts are the local attachments by key (host veth name).
	atts map[string]*attachment
	// local is the set of {vni, ip} of local endpoints, so a remote delete
	// never removes a local entry that reused the address.
	local map[vniIP]string
	// vpcs are the VPCs hosted here (at least one local attachment).
	vpcs map[string]*vpcState
	// nodes are the known nodes by name.
	nodes map[string]vpc.Node
	// names interns node names (see internLocked).
	names map[string]string
	// nRemote counts the remote endpoints of all hosted VPCs.
	nRemote int
	// leftover are remote entries of hosted VNIs found in the data plane
	// at start-up (pinned by a previous agent), by VNI; each VPC's first
	// sync removes those the store no longer has, then drops its set.
	leftover map[uint32]map[netip.Addr]bool
	// deferAttach is set while an upgrading start-up restores: the pod
	// programs of deferred are attached by finishUpgrade (upgrade.go).
	deferAttach bool
	deferred    []*attachment
	// listening is closed once the agent is ready.
	listening chan struct{}
	sockAddr  string
}

type vniIP struct {
	vni uint32
	ip  netip.Addr
}

// New checks cfg and returns an agent; nothing is touched until Run.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	gw, _ := parseMAC(cfg.GatewayMAC)
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &Agent{
		cfg:       cfg,
		log:       log.With("node", cfg.NodeName),
		gwMAC:     gw,
		atts:      map[string]*attachment{},
		local:     map[vniIP]string{},
		vpcs:      map[string]*vpcState{},
		nodes:     map[string]vpc.Node{},
		listening: make(chan struct{}),

		nodeWatchDone: make(chan struct{}),
		epWatchDone:   make(chan struct{}),
	}
	a.notReady.Store("starting")
	a.m = newMetrics(a.drops)
	a.underlay = newUnderlayMonitor(a.m.reg)
	a.m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "genie_ipam_blocks", Help: "IPAM blocks this node holds."},
			func() float64 {
				if al := a.ipamAllocator(); al != nil {
					return float64(len(al.Blocks()))
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "genie_ipam_allocations", Help: "Addresses this node has allocated from its blocks."},
			func() float64 {
				if al := a.ipamAllocator(); al != nil {
					return float64(len(al.Allocations()))
				}
				return 0
			}))
	return a, nil
}

// ipamAllocator returns the allocator once start-up loaded it (metrics may
// be scraped before).
func (a *Agent) ipamAllocator() *ipam.Allocator {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ipam
}

// Ready is closed once the agent is ready to serve attachments (for tests
// and supervisors that run the agent in-process).
func (a *Agent) Ready() <-chan struct{} { return a.listening }

// Run starts the agent and serves until ctx ends, then shuts down: it stops
// serving, closes the store and closes the data plane without unpinning,
// so pods keep their connectivity while no agent runs.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.runCtx = ctx
	// Lock the socket before touching it, so a second agent cannot
	// unlink a running agent's socket.
	unlock, err := lockSocket(a.cfg.Socket)
	if err != nil {
		return err
	}
	defer unlock()
	// Serve the socket first: STATUS then reports why the agent is not
	// ready yet, and the other verbs ask the runtime to try again later.
	l, err := agentapi.Listen(a.cfg.Socket)
	if err != nil {
		return fmt.Errorf("serving socket: %w", err)
	}
	srv := &http.Server{Handler: agentapi.Handler(a), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(l) }()
	defer srv.Close()
	// Metrics and the probes' endpoints come up before start-up, so a
	// liveness probe does not kill an agent waiting for its store.
	if a.cfg.MetricsAddr != "" {
		addr, err := a.m.serve(ctx, a.cfg.MetricsAddr, a.cfg.Pprof, a.log, a.probeReady)
		if err != nil {
			a.log.Error("metrics disabled", "err", err)
		} else {
			a.log.Info("serving metrics", "addr", addr.String())
		}
	}
	if err := a.start(ctx); err != nil {
		srv.Close()
		cancel() // stops the watches start may have begun
		a.shutdown()
		return err
	}
	a.ready.Store(true)
	a.log.Info("agent ready", "socket", a.cfg.Socket, "underlay", a.node.UnderlayIP, "pod_mtu", a.podMTU)
	close(a.listening)

	select {
	case <-ctx.Done():
		err = nil
	case err = <-serveErr:
		err = fmt.Errorf("serving socket: %w", err)
	}
	a.ready.Store(false)
	a.notReady.Store("shutting down")
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = srv.Shutdown(sctx)
	scancel()
	cancel()
	a.shutdown()
	a.log.Info("agent stopped (data plane left running)")
	return err
}

// start performs every start-up step up to (not including) serving.
func (a *Agent) start(ctx context.Context) error {
	var err error
	if a.state, err = newStateStore(filepath.Join(a.cfg.StateDir, "attachments")); err != nil {
		return err
	}
	a.notReady.Store("connecting to store")
	cfg := a.cfg
	cfg.Logger = a.log
	st, err := OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	a.st = st

	ip, mac, ix, mtu, err := uplinkInfo(a.cfg.Uplink)
	if err != nil {
		return err
	}
	addr, _ := netip.AddrFromSlice(ip)
	a.uplinkIx = ix
	a.podMTU = mtu - datapath.EncapOverhead
	a.node = vpc.Node{Name: a.cfg.NodeName, UnderlayIP: addr, UnderlayMAC: mac, Uplink: a.cfg.Uplink, UplinkMTU: mtu, Heartbeat: time.Now(),
		Labels: a.cfg.Egress.NodeLabels}
	if err := a.st.RegisterNode(ctx, a.node); err != nil {
		return fmt.Errorf("registering node %q: %w", a.node.Name, err)
	}

	a.notReady.Store("loading data plane")
	dp, err := datapath.Open(datapath.Config{
		PinDir: a.cfg.PinDir, UnderlayIP: addr, UplinkIfindex: ix, UplinkMAC: mac, GatewayMAC: a.gwMAC,
		MapSizes: a.cfg.MapSizes, EndpointAttach: datapath.EndpointAttach(a.cfg.PodAttach),
		ProcSysNet: a.cfg.ProcSysNet,
	})
	if err != nil {
		return fmt.Errorf("opening data plane at %s: %w", a.cfg.PinDir, err)
	}
	a.mu.Lock()
	a.dp = dp
	a.mu.Unlock()
	a.m.setMapCapacity(dp.MapSizes())
	// After an upgrade that replaced maps, the new programs are attached
	// only once their maps are filled (upgrade.go).
	upgrading := a.reportUpgrade(dp)
	if !upgrading {
		if err := a.attachUplink(); err != nil {
			return err
		}
	}

	if err := a.startQoS(); err != nil {
		return err
	}

	a.notReady.Store("loading IPAM state")
	alloc, err := ipam.New(ctx, a.st, a.cfg.NodeName, filepath.Join(a.cfg.StateDir, "ipam"),
		ipam.Options{Logger: a.log.With("component", "ipam")})
	if err != nil {
		return fmt.Errorf("loading IPAM state: %w", err)
	}
	a.mu.Lock()
	a.ipam = alloc
	a.mu.Unlock()

	a.notReady.Store("syncing nodes")
	if err := a.startNodeWatch(ctx); err != nil {
		return err
	}
	// One watch follows the endpoints of all VPCs from here on; the VPCs
	// hosted here are listed as they are acquired.
	_, rev, err := a.st.ListNodes(ctx)
	if err != nil {
		return fmt.Errorf("reading store revision: %w", err)
	}
	if err := a.startEndpointMode(ctx, rev); err != nil { // directory.go
		return err
	}
	a.notReady.Store("restoring local endpoints")
	a.deferAttach = upgrading
	if err := a.restore(ctx); err != nil {
		return err
	}
	a.startNodeLifecycle(ctx)
	svcSynced := a.startServices(ctx) // service.go
	egSynced := a.startEgress(ctx)    // egress.go
	if upgrading {
		if err := a.finishUpgrade(ctx, svcSynced, egSynced); err != nil { // upgrade.go
			return err
		}
	}
	a.startUnderlayMonitor(ctx) // underlay.go
	return a.startTrace(ctx)    // trace.go
}

// shutdown releases the store and the data plane handles; pins stay.
func (a *Agent) shutdown() {
	// The watches stop with the run context; every map entry stays, so
	// pods keep forwarding.
	if a.epWatchStarted {
		<-a.epWatchDone
	}
	if a.nodeWatchStarted {
		<-a.nodeWatchDone
	}
	if a.dir != nil {
		a.dir.stop()
	}
	a.bg.Wait()
	if a.st != nil {
		if err := a.st.Close(); err != nil {
			a.log.Warn("closing store", "err", err)
		}
	}
	a.mu.Lock()
	if a.dp != nil && !a.dpClosed {
		a.dpClosed = true
		if err := a.dp.Close(); err != nil {
			a.log.Warn("closing data plane", "err", err)
		}
	}
	a.mu.Unlock()
}

// drops adapts datapath.Drops for the metrics collector.
func (a *Agent) drops() (map[string]uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dp == nil || a.dpClosed {
		return nil, nil // no data plane handle yet (or any more)
	}
	d, err := a.dp.Drops()
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(d))
	for r, n := range d {
		out[r.String()] = n
	}
	return out, nil
}

// restore re-adopts the attachments recorded in the state dir after a
// restart: complete ones whose host veth still exists are re-programmed
// (map entries rewritten, pod program re-attached in place, endpoint
// re-published); incomplete or vanished ones are undone. Then data plane
// entries, IPAM allocations and store endpoints of this node that belong to
// no attachment are removed.
func (a *Agent) restore(ctx context.Context) error {
	atts, errs := a.state.load()
	for _, err := range errs {
		a.log.Warn("skipping unreadable attachment record", "err", err)
	}
	var keep, unfinished []*attachment
	for _, at := range atts {
		link, err := netlink.LinkByName(at.HostIf)
		if !at.Complete || err != nil {
			a.log.Info("undoing stale attachment", "container", at.ContainerID, "if", at.IfName, "complete", at.Complete)
			at.Complete = false
			if errs := a.undo(ctx, at); len(errs) > 0 {
				// Kept (record and address) for a retried DEL or GC: its
				// store endpoint may still exist.
				a.log.Warn("stale attachment not fully undone", "container", at.ContainerID, "if", at.IfName, "err", errors.Join(errs...))
				a.mu.Lock()
				a.atts[at.key()] = at
				a.mu.Unlock()
				unfinished = append(unfinished, at)
			}
			continue
		}
		at.HostIndex = link.Attrs().Index
		keep = append(keep, at)
	}
	if err := a.removeStaleEntries(keep); err != nil {
		return err
	}
	for _, at := range keep {
		if err := a.programLocal(at); err != nil {
			return fmt.Errorf("restoring attachment %s/%s: %w", at.ContainerID, at.IfName, err)
		}
		a.mu.Lock()
		a.atts[at.key()] = at
		a.local[vniIP{at.VNI, at.IP}] = at.key()
		a.mu.Unlock()
		if err := a.state.save(at); err != nil {
			return err
		}
	}
	a.pruneQoS(append(keep, unfinished...)) // qos.go
	a.m.endpoints.WithLabelValues("local").Set(float64(len(keep)))
	// Re-publish our endpoints (the store may have lost them) and start
	// the watches of the hosted VPCs.
	for _, at := range keep {
		if ep, err := a.st.PutEndpoint(ctx, at.endpoint(a.cfg.NodeName)); err != nil {
			a.m.storeErrors.WithLabelValues("put_endpoint").Inc()
			a.log.Warn("re-publishing endpoint", "vpc", at.VPC, "ip", at.IP, "err", err)
		} else if err := a.publishDirectory(ctx, ep); err != nil {
			a.log.Warn("re-publishing endpoint to the directory", "vpc", at.VPC, "ip", at.IP, "err", err)
		}
		if _, err := a.acquireVPC(ctx, at.VPC); err != nil {
			return fmt.Errorf("watching vpc %q: %w", at.VPC, err)
		}
	}
	// IPAM allocations and store endpoints of this node without an
	// attachment are leaks from a crash: free them.
	valid := make([]string, 0, len(keep)+len(unfinished))
	validID := map[string]bool{}
	for _, at := range keep {
		valid = append(valid, at.owner())
		validID[at.VPC+"/"+at.owner()] = true
	}
	for _, at := range unfinished {
		valid = append(valid, at.owner()) // its address waits for its endpoint
	}
	// This node's endpoints lie in its blocks (the store enforces it):
	// list only the VPCs of its blocks and attachments, one at a time. A
	// listing of every endpoint of a 100k-endpoint cluster cost the
	// restarting agent ~200 MiB of RSS.
	vpcs := map[string]bool{}
	for _, b := range a.ipam.Blocks() {
		vpcs[b.VPC] = true
	}
	for _, at := range keep {
		vpcs[at.VPC] = true
	}
	if freed, err := a.ipam.GC(ctx, valid); err != nil {
		a.log.Warn("IPAM GC at start-up", "err", err)
	} else if len(freed) > 0 {
		a.log.Info("freed leaked addresses", "owners", freed)
	}
	for v := range vpcs {
		eps, _, err := a.st.ListEndpoints(ctx, v)
		if err != nil {
			a.m.storeErrors.WithLabelValues("list_endpoints").Inc()
			a.log.Warn("listing endpoints for start-up cleanup", "vpc", v, "err", err)
			continue
		}
		for _, e := range eps {
			if e.Node == a.cfg.NodeName && !validID[e.VPC+"/"+e.ID] {
				a.log.Info("deleting leaked endpoint", "vpc", e.VPC, "id", e.ID, "ip", e.IP)
				if err := a.st.DeleteEndpoint(ctx, e.VPC, e.ID); err != nil {
					a.m.storeErrors.WithLabelValues("delete_endpoint").Inc()
				}
			}
		}
	}
	return nil
}

// removeStaleEntries deletes local data plane entries no kept attachment
// backs, and remote entries of VPCs this node no longer hosts; remote
// entries of hosted VPCs are recorded in a.leftover and diffed by the
// VPC's first sync. It is the agent's only dump of the endpoints map.
func (a *Agent) removeStaleEntries(keep []*attachment) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	entries, err := a.dp.Endpoints()
	if err != nil {
		return fmt.Errorf("listing data plane endpoints: %w", err)
	}
	want := map[vniIP]bool{}
	hostedVNI := map[uint32]bool{}
	for _, at := range keep {
		want[vniIP{at.VNI, at.IP}] = true
		hostedVNI[at.VNI] = true
	}
	a.leftover = map[uint32]map[netip.Addr]bool{}
	for _, e := range entries {
		if !e.Local() && hostedVNI[e.VNI] {
			if a.leftover[e.VNI] == nil {
				a.leftover[e.VNI] = map[netip.Addr]bool{}
			}
			a.leftover[e.VNI][e.IP] = true
		}
		if (e.Local() && !want[vniIP{e.VNI, e.IP}]) || (!e.Local() && (!hostedVNI[e.VNI] || a.cfg.directoryMode())) {
			if err := a.dp.DeleteEndpoint(e.VNI, e.IP); err != nil {
				a.log.Warn("deleting stale data plane entry", "vni", e.VNI, "ip", e.IP, "err", err)
			}
			if e.Local() {
				_ = a.dp.DetachEndpoint(e.HostIfindex)
			}
		}
	}
	return nil
}

// programLocal writes a local endpoint to the data plane and attaches the
// pod program to its host veth.
func (a *Agent) programLocal(at *attachment) error {
	a.mu.Lock()
	err := a.dp.UpsertLocalEndpoint(at.qosEndpoint(datapath.LocalEndpoint{
		VNI: at.VNI, IP: at.IP, MAC: at.hwAddr(), HostIfindex: at.HostIndex, NodeNet: at.NodeNet,
	}))
	a.mu.Unlock()
	if err != nil {
		a.m.countMapFull("local", err)
		return fmt.Errorf("writing endpoint map: %w", err)
	}
	if a.deferAttach {
		a.deferred = append(a.deferred, at) // attached by finishUpgrade
		return nil
	}
	// The attach waits for an RCU grace period in the kernel (7-20 ms):
	// outside a.mu, so watch events and other pods' ADDs do not queue
	// behind it; the data plane serialises attaches itself.
	if err := a.dp.AttachEndpoint(at.HostIndex); err != nil {
		return fmt.Errorf("attaching pod program to %s: %w", at.HostIf, err)
	}
	return nil
}

// keyedMutex is a set of mutexes by key, created on demand.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// parseMAC parses a 6-byte unicast MAC.
func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("mac %q: %w", s, err)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("mac %q is not a 6-byte MAC", s)
	}
	if mac[0]&1 != 0 {
		return nil, fmt.Errorf("mac %q is a multicast address", s)
	}
	return mac, nil
}

var errNotReady = errors.New("node agent is not ready")
