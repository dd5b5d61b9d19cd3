package agent

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net/netip"
	"time"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// vpcState is a VPC hosted on this node: its definition, a cache of its
// subnets, and its remote endpoints as programmed from the store.
type vpcState struct {
	name    string
	vpc     vpc.VPC
	subnets map[string]vpc.Subnet
	// refs counts local attachments (and in-flight attaches).
	refs int
	// synced is closed after the first list was programmed; syncErr is
	// set before if it failed.
	synced  chan struct{}
	syncErr error
	// syncing is set while the VPC is being listed: the endpoint watch
	// queues the VPC's events in pending meanwhile, and the sync applies
	// those newer than its listing.
	syncing bool
	pending []store.EndpointEvent
	// listedRev is the store revision of the last listing: watch events
	// at or below it are already part of it.
	listedRev int64
	// remote are the programmed remote endpoints by a hash of their ID
	// (real IDs are a 64-digit container ID plus the interface: 8 bytes
	// instead of ~70 per endpoint at 100k endpoints).
	remote map[epKey]remoteEP
	// byIP indexes remote by address (usually one key; two while an
	// address moves between endpoints), so that finding the endpoint that
	// owns an address is O(1), not a loop over the VPC under a.mu.
	byIP map[netip.Addr][]epKey
}

// syncChunk is how many endpoints a VPC sync or removal programs per
// hold of a.mu: ADDs and watch events of other VPCs wait for one chunk
// (about 0.3 ms of map updates), not for a whole 10k-endpoint VPC.
const syncChunk = 256

func newVPCState(name string) *vpcState {
	return &vpcState{name: name, refs: 1, synced: make(chan struct{}), syncing: true,
		subnets: map[string]vpc.Subnet{}, remote: map[epKey]remoteEP{}, byIP: map[netip.Addr][]epKey{}}
}

// ownerOf returns a remote endpoint of vs with address ip; a.mu is held.
func (vs *vpcState) ownerOf(ip netip.Addr) (remoteEP, bool) {
	for _, k := range vs.byIP[ip] {
		if r, ok := vs.remote[k]; ok {
			return r, true
		}
	}
	return remoteEP{}, false
}

func (vs *vpcState) indexIP(ip netip.Addr, k epKey) {
	vs.byIP[ip] = append(vs.byIP[ip], k)
}

func (vs *vpcState) unindexIP(ip netip.Addr, k epKey) {
	ks := vs.byIP[ip]
	for i, x := range ks {
		if x == k {
			ks = append(ks[:i], ks[i+1:]...)
			break
		}
	}
	if len(ks) == 0 {
		delete(vs.byIP, ip)
	} else {
		vs.byIP[ip] = ks
	}
}

// epKey is a 64-bit hash of an endpoint ID (per process seed). A collision
// needs two IDs among a node's remote endpoints to hash alike: at 100k
// endpoints about 3e-10.
type epKey uint64

var epSeed = maphash.MakeSeed()

func keyOf(id string) epKey { return epKey(maphash.String(epSeed, id)) }

type remoteEP struct {
	ip   netip.Addr
	mac  [6]byte
	node string
}

// resyncBackoff bounds how fast a failing watch is retried.
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// acquireVPC takes a reference on the VPC, listing it if this is the first
// local attachment; it returns once the VPC's current remote endpoints are
// in the data plane. From then on the endpoint watch keeps them current.
func (a *Agent) acquireVPC(ctx context.Context, name string) (vpc.VPC, error) {
	a.mu.Lock()
	vs := a.vpcs[name]
	if vs != nil {
		vs.refs++
		a.mu.Unlock()
		select {
		case <-vs.synced:
		case <-ctx.Done():
			a.releaseState(vs)
			return vpc.VPC{}, ctx.Err()
		}
		if vs.syncErr != nil {
			return vpc.VPC{}, vs.syncErr
		}
		return vs.vpc, nil
	}
	vs = newVPCState(name)
	a.vpcs[name] = vs
	a.mu.Unlock()
	a.joinWatch(name)

	v, err := a.st.GetVPC(ctx, name)
	if err != nil {
		a.m.storeErrors.WithLabelValues("get_vpc").Inc()
	} else {
		a.mu.Lock()
		vs.vpc = v
		a.mu.Unlock()
		err = a.syncVPC(ctx, vs)
	}
	if err != nil {
		// The first pod must see a programmed VPC: fail, and undo what
		// the partial sync programmed. Waiters see syncErr.
		a.mu.Lock()
		if a.vpcs[name] == vs {
			delete(a.vpcs, name)
		}
		vs.syncErr = err
		a.mu.Unlock()
		a.dropRemotes(vs)
		close(vs.synced)
		return vpc.VPC{}, err
	}
	a.m.watches.Inc()
	close(vs.synced)
	return v, nil
}

// releaseVPC drops a reference on a hosted VPC; the last one removes the
// VPC's remote endpoints from the data plane.
func (a *Agent) releaseVPC(name string) {
	a.mu.Lock()
	vs := a.vpcs[name]
	a.mu.Unlock()
	if vs != nil {
		a.releaseState(vs)
	}
}

func (a *Agent) releaseState(vs *vpcState) {
	a.mu.Lock()
	if a.vpcs[vs.name] != vs {
		// Its first sync failed; it is gone already.
		a.mu.Unlock()
		return
	}
	vs.refs--
	if vs.refs > 0 {
		a.mu.Unlock()
		return
	}
	// Unhosted under a.mu, so the endpoint watch drops its events from
	// now on; its entries go in chunks (dropRemotes).
	delete(a.vpcs, vs.name)
	a.m.watches.Dec()
	a.mu.Unlock()
	a.dropRemotes(vs)
}

// dropRemotes removes every remote entry of vs, which is no longer in
// a.vpcs, from the data plane, releasing a.mu every syncChunk entries so
// that ADDs do not wait for a whole VPC. An address a local endpoint uses,
// or that the VPC (hosted again meanwhile, as a new vpcState) has
// programmed since, is left alone.
func (a *Agent) dropRemotes(vs *vpcState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := vs.remote
	vs.remote, vs.byIP = map[epKey]remoteEP{}, map[netip.Addr][]epKey{}
	a.nRemote -= len(old)
	a.updateRemoteGaugeLocked()
	n := 0
	for _, r := range old {
		if n++; n%syncChunk == 0 {
			a.mu.Unlock()
			a.mu.Lock()
		}
		if a.dpClosed {
			return
		}
		if _, isLocal := a.local[vniIP{vs.vpc.VNI, r.ip}]; isLocal {
			continue
		}
		if nv := a.vpcs[vs.name]; nv != nil && nv.vpc.VNI == vs.vpc.VNI {
			if _, ok := nv.ownerOf(r.ip); ok {
				continue
			}
		}
		if err := a.dp.DeleteEndpoint(vs.vpc.VNI, r.ip); err != nil {
			a.log.Warn("removing remote endpoint of unhosted vpc", "vpc", vs.name, "ip", r.ip, "err", err)
		}
	}
}

// lookup resolves a VPC and one of its subnets, from the cache of a hosted
// VPC or else from the store.
func (a *Agent) lookup(ctx context.Context, vpcName, subnet string) (vpc.VPC, vpc.Subnet, error) {
	return a.lookupOpt(ctx, vpcName, subnet, false)
}

// lookupFresh is lookup bypassing the subnet cache (and refreshing it).
func (a *Agent) lookupFresh(ctx context.Context, vpcName, subnet string) (vpc.VPC, vpc.Subnet, error) {
	return a.lookupOpt(ctx, vpcName, subnet, true)
}

func (a *Agent) lookupOpt(ctx context.Context, vpcName, subnet string, fresh bool) (vpc.VPC, vpc.Subnet, error) {
	a.mu.Lock()
	vs := a.vpcs[vpcName]
	var v vpc.VPC
	if vs != nil {
		select {
		case <-vs.synced:
			v = vs.vpc
			if s, ok := vs.subnets[subnet]; ok && vs.syncErr == nil && !fresh {
				a.mu.Unlock()
				return v, s, nil
			}
		default:
		}
	}
	a.mu.Unlock()
	if !v.CIDR.IsValid() {
		var err error
		if v, err = a.st.GetVPC(ctx, vpcName); err != nil {
			a.m.storeErrors.WithLabelValues("get_vpc").Inc()
			return vpc.VPC{}, vpc.Subnet{}, err
		}
	}
	s, err := a.st.GetSubnet(ctx, vpcName, subnet)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			a.m.storeErrors.WithLabelValues("get_subnet").Inc()
		}
		return vpc.VPC{}, vpc.Subnet{}, err
	}
	s = s.WithDefaults()
	a.mu.Lock()
	if vs != nil && a.vpcs[vpcName] == vs {
		vs.subnets[subnet] = s
	}
	a.mu.Unlock()
	return v, s, nil
}

// syncVPC lists the VPC's endpoints and makes the data plane's remote
// entries of the VPC match, then applies the watch events queued during
// the listing that are newer than it. The listing is programmed in chunks
// of syncChunk, releasing a.mu in between, so ADDs of other pods do not
// wait for a whole VPC; the VPC's watch events keep queueing until the
// end (vs.syncing), and a VPC unhosted meanwhile stops the sync.
func (a *Agent) syncVPC(ctx context.Context, vs *vpcState) error {
	if a.cfg.directoryMode() {
		return nil // remote endpoints are learned on demand (directory.go)
	}
	a.mu.Lock()
	vs.syncing = true
	a.mu.Unlock()
	eps, rev, err := a.st.ListEndpoints(ctx, vs.vpc.Name)
	if err != nil {
		a.mu.Lock()
		vs.syncing, vs.pending = false, nil
		a.mu.Unlock()
		a.m.storeErrors.WithLabelValues("list_endpoints").Inc()
		return fmt.Errorf("listing endpoints of vpc %q: %w", vs.vpc.Name, err)
	}
	// hosted is called with a.mu held at the start of every chunk.
	hosted := func() bool {
		if a.vpcs[vs.name] == vs && !a.dpClosed {
			return true
		}
		vs.syncing, vs.pending = false, nil
		return false
	}
	seen := make(map[epKey]bool, len(eps))
	var errs []error
	for i := 0; i < len(eps); i += syncChunk {
		a.mu.Lock()
		if !hosted() {
			a.mu.Unlock()
			return nil
		}
		for _, e := range eps[i:min(i+syncChunk, len(eps))] {
			if e.Node == a.cfg.NodeName {
				continue
			}
			seen[keyOf(e.ID)] = true
			if err := a.putRemoteLocked(vs, e); err != nil {
				errs = append(errs, err)
			}
		}
		a.updateRemoteGaugeLocked()
		a.mu.Unlock()
	}
	// Entries the listing no longer has. Only this sync changes
	// vs.remote while vs.syncing (watch events queue), so ranging over it
	// across chunks is safe; releaseState replaces it (see hosted).
	a.mu.Lock()
	if !hosted() {
		a.mu.Unlock()
		return nil
	}
	remote, n := vs.remote, 0
	for id := range remote {
		if seen[id] {
			continue
		}
		if n++; n%syncChunk == 0 {
			a.updateRemoteGaugeLocked()
			a.mu.Unlock()
			a.mu.Lock()
			if !hosted() {
				a.mu.Unlock()
				return nil
			}
		}
		if err := a.deleteRemoteLocked(vs, id); err != nil {
			errs = append(errs, err)
		}
	}
	// Remote entries of this VNI the data plane has but we did not
	// program (left by a previous agent, found by the one map dump at
	// start-up) go as well. No dump here: at 1,000 hosted VPCs and 100k
	// entries a dump per VPC made start-up quadratic.
	if left := a.leftover[vs.vpc.VNI]; left != nil {
		delete(a.leftover, vs.vpc.VNI)
		n = 0
		for ip := range left {
			if n++; n%syncChunk == 0 {
				a.mu.Unlock()
				a.mu.Lock()
				if !hosted() {
					a.mu.Unlock()
					return nil
				}
			}
			_, isLocal := a.local[vniIP{vs.vpc.VNI, ip}]
			if _, want := vs.ownerOf(ip); !want && !isLocal {
				_ = a.dp.DeleteEndpoint(vs.vpc.VNI, ip)
			}
		}
	}
	vs.listedRev = rev
	pending := vs.pending
	vs.syncing, vs.pending = false, nil
	for _, ev := range pending {
		if ev.Revision > rev {
			if err := a.applyLocked(vs, ev); err != nil {
				errs = append(errs, err)
			}
		}
	}
	a.updateRemoteGaugeLocked()
	a.mu.Unlock()
	return errors.Join(errs...)
}

// putRemoteLocked programs a remote endpoint; a.mu is held.
func (a *Agent) putRemoteLocked(vs *vpcState, e vpc.Endpoint) error {
	k := keyOf(e.ID)
	if old, ok := vs.remote[k]; ok && old.ip != e.IP {
		if err := a.deleteRemoteLocked(vs, k); err != nil {
			return err
		}
	}
	r := remoteEP{ip: e.IP, node: a.internLocked(e.Node)}
	copy(r.mac[:], e.MAC)
	if _, ok := vs.remote[k]; !ok {
		a.nRemote++
		vs.indexIP(r.ip, k)
	}
	vs.remote[k] = r
	if _, isLocal := a.local[vniIP{vs.vpc.VNI, e.IP}]; isLocal {
		// The address is (already or still) used by a local endpoint:
		// the store will settle it; never overwrite a local entry.
		return nil
	}
	return a.writeRemoteLocked(vs.vpc.VNI, r)
}

// internLocked returns one shared copy of a node name, so that 100k
// remote endpoints do not each hold their own; a.mu is held.
func (a *Agent) internLocked(node string) string {
	if n, ok := a.names[node]; ok {
		return n
	}
	if a.names == nil {
		a.names = map[string]string{}
	}
	a.names[node] = node
	return node
}

func (a *Agent) writeRemoteLocked(vni uint32, r remoteEP) error {
	n, ok := a.nodes[r.node]
	if !ok {
		// Programmed once the node shows up (see applyNode).
		return nil
	}
	if err := a.dp.UpsertRemoteEndpoint(datapath.RemoteEndpoint{VNI: vni, IP: r.ip, MAC: r.mac[:], NodeIP: n.UnderlayIP}); err != nil {
		a.m.countMapFull("remote", err)
		return fmt.Errorf("programming remote endpoint %s of vni %d on node %q: %w", r.ip, vni, r.node, err)
	}
	return nil
}

// deleteRemoteLocked removes a remote endpoint; a.mu is held.
func (a *Agent) deleteRemoteLocked(vs *vpcState, k epKey) error {
	r, ok := vs.remote[k]
	if !ok {
		return nil
	}
	delete(vs.remote, k)
	vs.unindexIP(r.ip, k)
	a.nRemote--
	if _, isLocal := a.local[vniIP{vs.vpc.VNI, r.ip}]; isLocal {
		return nil
	}
	if o, ok := vs.ownerOf(r.ip); ok {
		// Another endpoint took the address meanwhile.
		return a.writeRemoteLocked(vs.vpc.VNI, o)
	}
	if err := a.dp.DeleteEndpoint(vs.vpc.VNI, r.ip); err != nil {
		return fmt.Errorf("removing remote endpoint %s of vni %d: %w", r.ip, vs.vpc.VNI, err)
	}
	return nil
}

// updateRemoteGaugeLocked publishes the number of remote endpoints known
// (a counter kept by putRemoteLocked and deleteRemoteLocked: summing over
// 1,000 hosted VPCs on every event cost more than the event).
func (a *Agent) updateRemoteGaugeLocked() {
	a.m.endpoints.WithLabelValues("remote").Set(float64(a.nRemote))
}

// startEndpointWatch follows the endpoints of every VPC from rev on, with
// ONE store watch, for the agent's lifetime; events of VPCs not hosted here
// are dropped on arrival (see the package doc: 1,000 per-VPC watches cost
// more memory than the agent's whole budget). A failed watch resumes from
// the last revision seen; if that was compacted away, every hosted VPC is
// listed again. The data plane is left as it is on shutdown.
func (a *Agent) startEndpointWatch(ctx context.Context, rev int64) {
	a.epWatchStarted = true
	if w, ok := a.st.(store.VPCWatcher); ok {
		a.vpcw = newVPCWatch(w, rev)
		go a.runVPCWatch(ctx)
		return
	}
	go func() {
		defer close(a.epWatchDone)
		backoff := minBackoff
		for ctx.Err() == nil {
			compacted := false
			for ev := range a.st.WatchEndpoints(ctx, "", rev) {
				switch ev.Type {
				case store.EventPut, store.EventDelete:
					backoff = minBackoff
					rev = ev.Revision
					a.applyEndpoint(ev)
				case store.EventError:
					if ctx.Err() == nil {
						a.m.storeErrors.WithLabelValues("watch_endpoints").Inc()
						a.log.Warn("endpoint watch failed", "err", ev.Err, "resume_from", rev)
					}
					compacted = errors.Is(ev.Err, store.ErrCompacted)
				}
			}
			for ctx.Err() == nil {
				if !sleepCtx(ctx, backoff) {
					return
				}
				backoff = min(2*backoff, maxBackoff)
				if !compacted {
					break
				}
				r, err := a.resyncAll(ctx)
				if err != nil {
					a.log.Warn("endpoint resync failed", "err", err)
					continue
				}
				rev = r
				a.m.resyncs.Inc()
				break
			}
		}
	}()
}

// resyncAll lists every hosted VPC again after the endpoint watch lost its
// history, and returns a revision to watch from: read before the listings,
// so that no change falls between a listing and the new watch.
func (a *Agent) resyncAll(ctx context.Context) (int64, error) {
	_, rev, err := a.st.ListNodes(ctx)
	if err != nil {
		return 0, err
	}
	a.mu.Lock()
	vs := make([]*vpcState, 0, len(a.vpcs))
	for _, v := range a.vpcs {
		vs = append(vs, v)
	}
	a.mu.Unlock()
	var errs []error
	for _, v := range vs {
		select {
		case <-v.synced: // a first sync in progress finishes first
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		a.mu.Lock()
		hosted := a.vpcs[v.name] == v
		a.mu.Unlock()
		if !hosted {
			continue
		}
		if err := a.syncVPC(ctx, v); err != nil {
			errs = append(errs, err)
		}
	}
	return rev, errors.Join(errs...)
}

// applyEndpoint applies one watch event if its VPC is hosted here.
func (a *Agent) applyEndpoint(ev store.EndpointEvent) {
	e := ev.Endpoint
	if e.Node == a.cfg.NodeName {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	vs := a.vpcs[e.VPC]
	switch {
	case vs == nil:
		return // not hosted here: the node does not learn it
	case vs.syncing:
		vs.pending = append(vs.pending, ev)
		return
	case ev.Revision <= vs.listedRev:
		return // already part of the listing
	}
	if err := a.applyLocked(vs, ev); err != nil {
		a.log.Warn("applying endpoint change", "vpc", vs.name, "id", e.ID, "type", ev.Type.String(), "err", err)
	}
	a.updateRemoteGaugeLocked()
}

func (a *Agent) applyLocked(vs *vpcState, ev store.EndpointEvent) error {
	if ev.Endpoint.Node == a.cfg.NodeName {
		return nil
	}
	if ev.Type == store.EventPut {
		if err := a.putRemoteLocked(vs, ev.Endpoint); err != nil {
			return err
		}
		if p := ev.Endpoint.Published; !p.IsZero() {
			a.m.propagation.Observe(time.Since(p).Seconds())
		}
		return nil
	}
	return a.deleteRemoteLocked(vs, keyOf(ev.Endpoint.ID))
}

// startNodeWatch lists the nodes (their underlay addresses and MTUs) and
// watches them for the agent's lifetime.
func (a *Agent) startNodeWatch(ctx context.Context) error {
	rev, err := a.syncNodes(ctx)
	if err != nil {
		return err
	}
	a.nodeWatchStarted = true
	go func() {
		defer close(a.nodeWatchDone)
		backoff := minBackoff
		for ctx.Err() == nil {
			for ev := range a.st.WatchNodes(ctx, rev) {
				switch ev.Type {
				case store.EventPut, store.EventDelete:
					rev = ev.Revision
					backoff = minBackoff
					a.applyNode(ev.Type, ev.Node)
				case store.EventError:
					if ctx.Err() == nil {
						a.m.storeErrors.WithLabelValues("watch_nodes").Inc()
						a.log.Warn("node watch failed, resyncing", "err", ev.Err)
					}
				}
			}
			for ctx.Err() == nil {
				if !sleepCtx(ctx, backoff) {
					return
				}
				backoff = min(2*backoff, maxBackoff)
				if r, err := a.syncNodes(ctx); err == nil {
					rev = r
					a.m.resyncs.Inc()
					break
				} else {
					a.log.Warn("node resync failed", "err", err)
				}
			}
		}
	}()
	return nil
}

func (a *Agent) syncNodes(ctx context.Context) (int64, error) {
	nodes, rev, err := a.st.ListNodes(ctx)
	if err != nil {
		a.m.storeErrors.WithLabelValues("list_nodes").Inc()
		return 0, fmt.Errorf("listing nodes: %w", err)
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		seen[n.Name] = true
		a.applyNode(store.EventPut, n)
	}
	a.mu.Lock()
	var gone []vpc.Node
	for name, n := range a.nodes {
		if !seen[name] {
			gone = append(gone, n)
		}
	}
	a.mu.Unlock()
	for _, n := range gone {
		a.applyNode(store.EventDelete, n)
	}
	return rev, nil
}

// applyNode records a node's underlay address and MAC in the data plane
// and (re)programs the remote endpoints hosted on it.
func (a *Agent) applyNode(t store.EventType, n vpc.Node) {
	a.mu.Lock()
	old, had := a.nodes[n.Name]
	if t == store.EventDelete {
		if had {
			delete(a.nodes, n.Name)
			if err := a.dp.DeleteNode(old.UnderlayIP); err != nil {
				a.log.Warn("forgetting node", "node", n.Name, "err", err)
			}
		}
		a.mu.Unlock()
		return
	}
	if had && old.UnderlayIP == n.UnderlayIP && old.UnderlayMAC.String() == n.UnderlayMAC.String() && old.UplinkMTU == n.UplinkMTU {
		a.mu.Unlock()
		return // a heartbeat
	}
	a.nodes[n.Name] = n
	a.kickUnderlay() // underlay.go
	if had && old.UnderlayIP != n.UnderlayIP {
		_ = a.dp.DeleteNode(old.UnderlayIP)
	}
	if n.Name != a.cfg.NodeName && len(n.UnderlayMAC) == 6 {
		if err := a.dp.UpsertNode(n.UnderlayIP, n.UnderlayMAC); err != nil {
			a.log.Warn("programming node", "node", n.Name, "err", err)
		}
	}
	if had && old.UnderlayIP == n.UnderlayIP {
		// MAC or MTU only: remote entries carry the node's IP, not these.
		a.mu.Unlock()
		return
	}
	// Remote endpoints of this node that waited for it, or whose
	// underlay address changed: one hosted VPC per hold of a.mu.
	hosted := make([]*vpcState, 0, len(a.vpcs))
	for _, vs := range a.vpcs {
		hosted = append(hosted, vs)
	}
	a.mu.Unlock()
	for _, vs := range hosted {
		a.mu.Lock()
		if a.vpcs[vs.name] == vs && !a.dpClosed {
			for _, r := range vs.remote {
				if r.node != n.Name {
					continue
				}
				if _, isLocal := a.local[vniIP{vs.vpc.VNI, r.ip}]; isLocal {
					continue
				}
				if err := a.writeRemoteLocked(vs.vpc.VNI, r); err != nil {
					a.log.Warn("programming remote endpoint", "vpc", vs.vpc.Name, "err", err)
				}
			}
		}
		a.mu.Unlock()
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
