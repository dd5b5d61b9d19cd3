package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// vpcState is a VPC hosted on this node: its definition, a cache of its
// subnets, and the watch that programs its remote endpoints.
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
	cancel  context.CancelFunc
	// watchDone is closed when the watch goroutine returned.
	watchDone chan struct{}
	// done is closed when the VPC is no longer hosted and its remote
	// entries are gone from the data plane.
	done chan struct{}
	// remote are the programmed remote endpoints by endpoint ID.
	remote map[string]remoteEP
}

type remoteEP struct {
	ip   netip.Addr
	mac  string
	node string
}

// resyncBackoff bounds how fast a failing watch is retried.
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// acquireVPC takes a reference on the VPC, starting its watch if this is
// the first local attachment; it returns once the VPC's current remote
// endpoints are in the data plane.
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
	vs = &vpcState{name: name, refs: 1, synced: make(chan struct{}), done: make(chan struct{}), watchDone: make(chan struct{}),
		subnets: map[string]vpc.Subnet{}, remote: map[string]remoteEP{}}
	a.vpcs[name] = vs
	// A previous watch of this VPC may still be removing its entries.
	prev := a.stopping[name]
	a.mu.Unlock()
	if prev != nil {
		<-prev
	}

	v, err := a.st.GetVPC(ctx, name)
	var rev int64
	if err != nil {
		a.m.storeErrors.WithLabelValues("get_vpc").Inc()
	} else {
		a.mu.Lock()
		vs.vpc = v
		a.mu.Unlock()
		rev, err = a.syncVPC(ctx, vs)
	}
	if err != nil {
		// The first pod must see a programmed VPC: fail, and undo what
		// the partial sync programmed. Waiters see syncErr.
		a.mu.Lock()
		delete(a.vpcs, name)
		for id := range vs.remote {
			_ = a.deleteRemoteLocked(vs, id)
		}
		a.updateRemoteGaugeLocked()
		vs.syncErr = err
		a.mu.Unlock()
		close(vs.synced)
		close(vs.watchDone)
		close(vs.done)
		return vpc.VPC{}, err
	}
	wctx, cancel := context.WithCancel(a.runCtx)
	vs.cancel = cancel
	close(vs.synced)
	a.m.watches.Inc()
	go a.watchVPC(wctx, vs, rev)
	return v, nil
}

// releaseVPC drops a reference on a hosted VPC; the last one stops the
// VPC's watch and removes its remote endpoints from the data plane.
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
	name := vs.name
	if a.vpcs[name] != vs {
		// Its first sync failed; nothing runs.
		a.mu.Unlock()
		return
	}
	vs.refs--
	if vs.refs > 0 {
		a.mu.Unlock()
		return
	}
	delete(a.vpcs, name)
	a.stopping[name] = vs.done
	a.mu.Unlock()
	vs.cancel()
	<-vs.watchDone
	a.m.watches.Dec()
	a.mu.Lock()
	for id := range vs.remote {
		if err := a.deleteRemoteLocked(vs, id); err != nil {
			a.log.Warn("removing remote endpoint of unhosted vpc", "vpc", name, "err", err)
		}
	}
	a.updateRemoteGaugeLocked()
	if a.stopping[name] == vs.done {
		delete(a.stopping, name)
	}
	a.mu.Unlock()
	close(vs.done)
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
// entries of the VPC match; it returns the listing's revision.
func (a *Agent) syncVPC(ctx context.Context, vs *vpcState) (int64, error) {
	eps, rev, err := a.st.ListEndpoints(ctx, vs.vpc.Name)
	if err != nil {
		a.m.storeErrors.WithLabelValues("list_endpoints").Inc()
		return 0, fmt.Errorf("listing endpoints of vpc %q: %w", vs.vpc.Name, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := map[string]bool{}
	var errs []error
	for _, e := range eps {
		if e.Node == a.cfg.NodeName {
			continue
		}
		seen[e.ID] = true
		if err := a.putRemoteLocked(vs, e); err != nil {
			errs = append(errs, err)
		}
	}
	for id := range vs.remote {
		if !seen[id] {
			if err := a.deleteRemoteLocked(vs, id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Remote entries of this VNI the data plane has but we did not
	// program (left by a previous agent) go as well.
	if entries, err := a.dp.Endpoints(); err == nil {
		want := map[netip.Addr]bool{}
		for _, r := range vs.remote {
			want[r.ip] = true
		}
		for _, e := range entries {
			if e.VNI == vs.vpc.VNI && !e.Local() && !want[e.IP] {
				_ = a.dp.DeleteEndpoint(e.VNI, e.IP)
			}
		}
	}
	a.updateRemoteGaugeLocked()
	return rev, errors.Join(errs...)
}

// putRemoteLocked programs a remote endpoint; a.mu is held.
func (a *Agent) putRemoteLocked(vs *vpcState, e vpc.Endpoint) error {
	if old, ok := vs.remote[e.ID]; ok && old.ip != e.IP {
		if err := a.deleteRemoteLocked(vs, e.ID); err != nil {
			return err
		}
	}
	r := remoteEP{ip: e.IP, mac: e.MAC.String(), node: e.Node}
	vs.remote[e.ID] = r
	if _, isLocal := a.local[vniIP{vs.vpc.VNI, e.IP}]; isLocal {
		// The address is (already or still) used by a local endpoint:
		// the store will settle it; never overwrite a local entry.
		return nil
	}
	return a.writeRemoteLocked(vs.vpc.VNI, e.ID, r)
}

func (a *Agent) writeRemoteLocked(vni uint32, id string, r remoteEP) error {
	n, ok := a.nodes[r.node]
	if !ok {
		// Programmed once the node shows up (see applyNode).
		return nil
	}
	mac, _ := parseMAC(r.mac)
	if err := a.dp.UpsertRemoteEndpoint(datapath.RemoteEndpoint{VNI: vni, IP: r.ip, MAC: mac, NodeIP: n.UnderlayIP}); err != nil {
		a.m.countMapFull("remote", err)
		return fmt.Errorf("programming remote endpoint %s (%s on node %q): %w", id, r.ip, r.node, err)
	}
	return nil
}

// deleteRemoteLocked removes a remote endpoint; a.mu is held.
func (a *Agent) deleteRemoteLocked(vs *vpcState, id string) error {
	r, ok := vs.remote[id]
	if !ok {
		return nil
	}
	delete(vs.remote, id)
	if _, isLocal := a.local[vniIP{vs.vpc.VNI, r.ip}]; isLocal {
		return nil
	}
	for _, o := range vs.remote {
		if o.ip == r.ip {
			// Another endpoint took the address meanwhile.
			return a.writeRemoteLocked(vs.vpc.VNI, id, o)
		}
	}
	if err := a.dp.DeleteEndpoint(vs.vpc.VNI, r.ip); err != nil {
		return fmt.Errorf("removing remote endpoint %s (%s): %w", id, r.ip, err)
	}
	return nil
}

func (a *Agent) updateRemoteGaugeLocked() {
	n := 0
	for _, vs := range a.vpcs {
		n += len(vs.remote)
	}
	a.m.endpoints.WithLabelValues("remote").Set(float64(n))
}

// watchVPC applies the VPC's endpoint changes from rev on, re-listing
// after any watch failure, until ctx ends; then it closes vs.done. It
// leaves the data plane as it is: on agent shutdown the entries must stay,
// and releaseState removes them when the VPC is no longer hosted.
func (a *Agent) watchVPC(ctx context.Context, vs *vpcState, rev int64) {
	defer close(vs.watchDone)
	backoff := minBackoff
	needSync := rev == 0
	for ctx.Err() == nil {
		if needSync {
			r, err := a.syncVPC(ctx, vs)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				a.log.Warn("resync of vpc failed", "vpc", vs.vpc.Name, "err", err, "retry_in", backoff)
				if !sleepCtx(ctx, backoff) {
					return
				}
				backoff = min(2*backoff, maxBackoff)
				if r == 0 {
					continue
				}
			}
			rev = r
			a.m.resyncs.Inc()
		}
		needSync = true
		for ev := range a.st.WatchEndpoints(ctx, vs.vpc.Name, rev) {
			switch ev.Type {
			case store.EventPut, store.EventDelete:
				backoff = minBackoff
				rev = ev.Revision
				a.applyEndpoint(vs, ev)
			case store.EventError:
				if ctx.Err() == nil {
					a.m.storeErrors.WithLabelValues("watch_endpoints").Inc()
					a.log.Warn("endpoint watch failed, resyncing", "vpc", vs.vpc.Name, "err", ev.Err)
				}
			}
		}
		if ctx.Err() == nil && !sleepCtx(ctx, backoff) {
			return
		}
	}
}

func (a *Agent) applyEndpoint(vs *vpcState, ev store.EndpointEvent) {
	e := ev.Endpoint
	if e.Node == a.cfg.NodeName {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var err error
	if ev.Type == store.EventPut {
		err = a.putRemoteLocked(vs, e)
	} else {
		err = a.deleteRemoteLocked(vs, e.ID)
	}
	if err != nil {
		a.log.Warn("applying endpoint change", "vpc", vs.vpc.Name, "id", e.ID, "type", ev.Type.String(), "err", err)
	}
	a.updateRemoteGaugeLocked()
}

// startNodeWatch lists the nodes (programming their underlay MACs) and
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
	defer a.mu.Unlock()
	old, had := a.nodes[n.Name]
	if t == store.EventDelete {
		if had {
			delete(a.nodes, n.Name)
			if err := a.dp.DeleteNode(old.UnderlayIP); err != nil {
				a.log.Warn("forgetting node", "node", n.Name, "err", err)
			}
		}
		return
	}
	if had && old.UnderlayIP == n.UnderlayIP && old.UnderlayMAC.String() == n.UnderlayMAC.String() {
		return
	}
	a.nodes[n.Name] = n
	if had && old.UnderlayIP != n.UnderlayIP {
		_ = a.dp.DeleteNode(old.UnderlayIP)
	}
	if n.Name != a.cfg.NodeName && len(n.UnderlayMAC) == 6 {
		if err := a.dp.UpsertNode(n.UnderlayIP, n.UnderlayMAC); err != nil {
			a.log.Warn("programming node", "node", n.Name, "err", err)
		}
	}
	// Remote endpoints of this node that waited for it, or whose
	// underlay address changed.
	for _, vs := range a.vpcs {
		for id, r := range vs.remote {
			if r.node != n.Name {
				continue
			}
			if _, isLocal := a.local[vniIP{vs.vpc.VNI, r.ip}]; isLocal {
				continue
			}
			if err := a.writeRemoteLocked(vs.vpc.VNI, id, r); err != nil {
				a.log.Warn("programming remote endpoint", "vpc", vs.vpc.Name, "id", id, "err", err)
			}
		}
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
