package directory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of a Node's timing.
const (
	// DefaultAttemptTimeout bounds one lookup RPC before the next replica
	// is asked. A LAN round trip is well under a millisecond; 250 ms
	// leaves room for a loaded holder without stalling a miss for long.
	DefaultAttemptTimeout = 250 * time.Millisecond
	// DefaultSuspectFor is how long a holder that failed an attempt is
	// asked last, so that lookups do not each pay the attempt timeout
	// while membership has not yet declared it dead.
	DefaultSuspectFor = 2 * time.Second
	// DefaultMaxLearned bounds the records a node remembers having
	// looked up (the agent's LRU of remote entries is sized alike).
	DefaultMaxLearned = 1 << 16
)

// Config configures a Node.
type Config struct {
	// Self is this node as a member; Self.Name must be unique.
	Self Member
	// Shards (a power of two) and Replicas (R); 0 means DefaultShards
	// and DefaultReplicas. Every node of a cluster must use the same.
	Shards, Replicas int
	// Source is the durable truth holders load their shards from.
	Source Source
	// Transport carries lookups and invalidations to other nodes.
	Transport Transport
	// AttemptTimeout bounds each lookup RPC (DefaultAttemptTimeout).
	AttemptTimeout time.Duration
	// SuspectFor is how long a failed holder is tried last
	// (DefaultSuspectFor).
	SuspectFor time.Duration
	// MaxLearned bounds the learned set (DefaultMaxLearned).
	MaxLearned int
	// OnInvalidate is called, outside any lock, when a record this node
	// learned changed: the agent updates or deletes its direct entry.
	OnInvalidate func(Invalidation)
	// OnPlacement is called, from Run's goroutine, with every new
	// placement: the agent rewrites the shard-to-holder BPF array.
	OnPlacement func(*Placement)
	// OnHeld is called, from Run's goroutine and outside any lock, with
	// the records of held shards that appeared or changed (put) and the
	// keys that left them (a delete, or a dropped shard): the agent keeps
	// the holder's BPF forward map, which bounced packets are looked up
	// in, equal to the held records.
	OnHeld func(put []Record, deleted []Key)
	// Placements, when set, is shared by the nodes of one process so
	// each member set is placed once.
	Placements *PlacementCache
	// Registerer receives the metrics; nil keeps them private.
	Registerer prometheus.Registerer
	// Logger receives the node's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Node is one node's part of the directory: a holder of the shards the
// placement gives it (loaded from the Source, kept current by a watch,
// served over the Transport) and a looker that resolves any key through
// the holders of its shard and remembers what it learned so it can be
// invalidated. Create it with NewNode, feed it membership with SetMembers
// and run it with Run.
type Node struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	memMu   sync.Mutex
	pending []Member
	hasNew  bool
	wake    chan struct{}

	mu        sync.Mutex
	placement *Placement
	held      map[uint32]*shardState
	nrecords  int

	learnMu sync.Mutex
	learned map[Key]learned

	suspectMu sync.Mutex
	suspect   map[string]time.Time

	// Run's state.
	lastRev     int64
	watchCancel context.CancelFunc
	watchCh     <-chan SourceEvent
	needRelist  bool
}

type shardState struct {
	loaded  bool
	records map[ikey]entry
}

// ikey is a Key packed as vni<<32 | ipv4 (8 bytes, where Key is 28), the
// held records' map key.
type ikey uint64

func packKey(k Key) ikey {
	a := k.IP.As4()
	return ikey(uint64(k.VNI)<<32 | uint64(a[0])<<24 | uint64(a[1])<<16 | uint64(a[2])<<8 | uint64(a[3]))
}

func (k ikey) key() Key {
	v := uint32(k)
	return Key{VNI: uint32(k >> 32), IP: netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})}
}

// entry is a held record without its key (56 bytes) and the nodes that
// looked it up here.
type entry struct {
	node    string
	mac     [6]byte
	version uint64
	lookers []string
}

func newEntry(r Record) entry { return entry{node: r.Node, mac: r.MAC, version: r.Version} }

func (e entry) record(k ikey) Record {
	return Record{Key: k.key(), Node: e.node, MAC: e.mac, Version: e.version}
}

func (e entry) sameLocation(r Record) bool { return e.node == r.Node && e.mac == r.MAC }

type learned struct {
	version uint64
	via     string
}

// NewNode validates cfg and returns a Node holding nothing until its first
// SetMembers.
func NewNode(cfg Config) (*Node, error) {
	if cfg.Shards == 0 {
		cfg.Shards = DefaultShards
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = DefaultReplicas
	}
	if err := ValidateShape(cfg.Shards, cfg.Replicas); err != nil {
		return nil, fmt.Errorf("directory node %q: %w", cfg.Self.Name, err)
	}
	if cfg.Self.Name == "" || cfg.Source == nil || cfg.Transport == nil {
		return nil, fmt.Errorf("directory node %q: self name, source and transport are required", cfg.Self.Name)
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.SuspectFor <= 0 {
		cfg.SuspectFor = DefaultSuspectFor
	}
	if cfg.MaxLearned <= 0 {
		cfg.MaxLearned = DefaultMaxLearned
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	p, _ := NewPlacement(nil, cfg.Shards, cfg.Replicas)
	return &Node{
		cfg:       cfg,
		log:       log.With("component", "directory", "node", cfg.Self.Name),
		m:         newMetrics(cfg.Registerer),
		wake:      make(chan struct{}, 1),
		placement: p,
		held:      map[uint32]*shardState{},
		learned:   map[Key]learned{},
		suspect:   map[string]time.Time{},
		lastRev:   -1,
	}, nil
}

// SetMembers gives the node the current live members (including itself).
// It returns at once; Run applies the latest set, so a burst of changes
// costs one placement. The node keeps ms until then: do not modify it.
func (n *Node) SetMembers(ms []Member) {
	n.memMu.Lock()
	n.pending, n.hasNew = ms, true
	n.memMu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Placement returns the placement the node currently uses.
func (n *Node) Placement() *Placement {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.placement
}

// HeldShards returns the shards this node holds and has loaded, and those
// it is still loading, each in increasing order.
func (n *Node) HeldShards() (loaded, loading []uint32) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for s, st := range n.held {
		if st.loaded {
			loaded = append(loaded, s)
		} else {
			loading = append(loading, s)
		}
	}
	slices.Sort(loaded)
	slices.Sort(loading)
	return loaded, loading
}

// Records returns the number of records in the shards this node holds.
func (n *Node) Records() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nrecords
}

// Lookers returns the nodes remembered as having looked k up here.
func (n *Node) Lookers(k Key) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if st := n.held[k.Shard(n.cfg.Shards)]; st != nil {
		if e, ok := st.records[packKey(k)]; ok {
			return slices.Clone(e.lookers)
		}
	}
	return nil
}

// Run applies membership changes and source events until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	defer func() {
		if n.watchCancel != nil {
			n.watchCancel()
		}
	}()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.wake:
			n.memMu.Lock()
			ms, ok := n.pending, n.hasNew
			n.pending, n.hasNew = nil, false
			n.memMu.Unlock()
			if ok && !n.applyMembers(ctx, ms) {
				retry = time.After(time.Second)
			}
		case <-retry:
			retry = nil
			ok := true
			if n.needRelist {
				ok = n.restartAfterError(ctx)
			}
			if ok && !n.loadPending(ctx) {
				ok = false
			}
			if !ok {
				retry = time.After(time.Second)
			}
		case ev, ok := <-n.watchCh:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !ok || ev.Type == EventError {
				// The current watch ended by itself: the source failed
				// or compacted past us. Relist everything held.
				n.log.Warn("source watch failed; relisting held shards", "err", ev.Err)
				n.m.sourceRestarts.Inc()
				if !n.restartAfterError(ctx) {
					retry = time.After(time.Second)
				}
				continue
			}
			n.applyEvent(ev)
		}
	}
}

// applyMembers installs the placement of ms, drops the shards this node
// lost, and loads the ones it gained. It reports false when a load failed
// (Run retries).
func (n *Node) applyMembers(ctx context.Context, ms []Member) bool {
	var p *Placement
	var err error
	if n.cfg.Placements != nil {
		p, err = n.cfg.Placements.Get(ms, n.cfg.Shards, n.cfg.Replicas)
	} else {
		p, err = n.placement.Next(ms) // incremental for one join or leave
	}
	if err != nil {
		n.log.Error("bad member set", "err", err)
		return true
	}
	mine := map[uint32]bool{}
	for _, s := range p.ShardsOf(n.cfg.Self.Name) {
		mine[s] = true
	}
	var gone []Key
	n.mu.Lock()
	n.placement = p
	dropped, gained := 0, 0
	for s, st := range n.held {
		if !mine[s] {
			if n.cfg.OnHeld != nil {
				for k := range st.records {
					gone = append(gone, k.key())
				}
			}
			n.nrecords -= len(st.records)
			delete(n.held, s)
			dropped++
		}
	}
	for s := range mine {
		if n.held[s] == nil {
			n.held[s] = &shardState{records: map[ikey]entry{}}
			gained++
		}
	}
	n.m.shardsHeld.Set(float64(len(n.held)))
	n.m.records.Set(float64(n.nrecords))
	n.m.members.Set(float64(len(p.Members())))
	n.mu.Unlock()
	if len(gone) > 0 {
		n.cfg.OnHeld(nil, gone)
	}
	n.m.shardMoves.WithLabelValues("dropped").Add(float64(dropped))
	n.m.shardMoves.WithLabelValues("gained").Add(float64(gained))
	if gained+dropped > 0 {
		n.log.Debug("placement changed", "members", len(p.Members()), "gained", gained, "dropped", dropped)
	}
	if n.cfg.OnPlacement != nil {
		n.cfg.OnPlacement(p)
	}
	ok := n.loadPending(ctx)
	go n.relearn(ctx, p)
	return ok
}

// loadPending lists the held shards not loaded yet, installs them and
// restarts the watch to cover them.
func (n *Node) loadPending(ctx context.Context) bool {
	n.mu.Lock()
	var todo []uint32
	for s, st := range n.held {
		if !st.loaded {
			todo = append(todo, s)
		}
	}
	n.mu.Unlock()
	if len(todo) == 0 {
		return true
	}
	slices.Sort(todo)
	recs, rev, err := n.cfg.Source.ListShards(ctx, todo)
	if err != nil {
		n.log.Warn("loading shards from the source", "shards", len(todo), "err", err)
		return false
	}
	n.install(todo, recs, false)
	from := rev
	if n.lastRev >= 0 && n.lastRev < rev {
		from = n.lastRev
	}
	n.restartWatch(ctx, from)
	// Everything up to from is applied for every held shard; the new
	// watch replays the rest (harmless for the shards just listed).
	n.lastRev = from
	return true
}

// install replaces the contents of shards with recs (the records of a
// listing of exactly those shards) and marks them loaded. With diff set,
// lookers of records that changed or vanished are invalidated (a relist
// after a watch failure).
func (n *Node) install(shards []uint32, recs []Record, diff bool) {
	var pushes []push
	var puts []Record
	var dels []Key
	n.mu.Lock()
	counts := map[uint32]int{}
	for _, r := range recs {
		counts[r.Shard(n.cfg.Shards)]++
	}
	fresh := map[uint32]map[ikey]entry{}
	for _, s := range shards {
		if n.held[s] != nil {
			fresh[s] = make(map[ikey]entry, counts[s])
		}
	}
	for _, r := range recs {
		if m := fresh[r.Shard(n.cfg.Shards)]; m != nil {
			m[packKey(r.Key)] = newEntry(r)
		}
	}
	for s, m := range fresh {
		st := n.held[s]
		if diff {
			for k, old := range st.records {
				nw, ok := m[k]
				switch {
				case !ok:
					dels = append(dels, k.key())
					if len(old.lookers) > 0 {
						pushes = append(pushes, push{old.lookers, Invalidation{Record: Record{Key: k.key(), Version: old.version + 1}, Deleted: true}})
					}
					continue
				case !old.sameLocation(nw.record(k)) && len(old.lookers) > 0:
					pushes = append(pushes, push{old.lookers, Invalidation{Record: nw.record(k)}})
				}
				nw.lookers = old.lookers
				m[k] = nw
			}
		}
		if n.cfg.OnHeld != nil {
			for k, e := range m {
				if old, ok := st.records[k]; !ok || old.version != e.version {
					puts = append(puts, e.record(k))
				}
			}
		}
		n.nrecords += len(m) - len(st.records)
		st.records, st.loaded = m, true
	}
	n.m.records.Set(float64(n.nrecords))
	n.mu.Unlock()
	n.reportHeld(puts, dels)
	n.sendInvalidations(pushes)
}

func (n *Node) reportHeld(puts []Record, dels []Key) {
	if n.cfg.OnHeld != nil && len(puts)+len(dels) > 0 {
		n.cfg.OnHeld(puts, dels)
	}
}

func (n *Node) restartWatch(ctx context.Context, from int64) {
	if n.watchCancel != nil {
		n.watchCancel()
	}
	n.mu.Lock()
	shards := make([]uint32, 0, len(n.held))
	for s := range n.held {
		shards = append(shards, s)
	}
	n.mu.Unlock()
	slices.Sort(shards)
	wctx, cancel := context.WithCancel(ctx)
	n.watchCancel = cancel
	n.watchCh = n.cfg.Source.WatchShards(wctx, shards, from)
}

// restartAfterError relists every held shard (invalidating what changed
// meanwhile) and watches again from the listing. It reports false when
// the listing failed (Run retries).
func (n *Node) restartAfterError(ctx context.Context) bool {
	if n.watchCancel != nil {
		n.watchCancel()
		n.watchCancel, n.watchCh = nil, nil
	}
	n.needRelist = true
	n.mu.Lock()
	shards := make([]uint32, 0, len(n.held))
	for s := range n.held {
		shards = append(shards, s)
	}
	n.mu.Unlock()
	recs, rev, err := n.cfg.Source.ListShards(ctx, shards)
	if err != nil {
		n.log.Warn("relisting shards", "err", err)
		return false
	}
	n.needRelist = false
	n.install(shards, recs, true)
	n.restartWatch(ctx, rev)
	n.lastRev = rev
	return true
}

type push struct {
	to  []string
	inv Invalidation
}

// applyEvent applies one source change to a held, loaded shard and
// invalidates the record's lookers when the endpoint moved or vanished.
func (n *Node) applyEvent(ev SourceEvent) {
	if ev.Revision > n.lastRev {
		n.lastRev = ev.Revision
	}
	n.applyRecord(ev)
}

// applyRecord applies a put or delete to a held, loaded shard; it reports
// whether the node holds the shard loaded. Safe from any goroutine.
func (n *Node) applyRecord(ev SourceEvent) bool {
	k := ev.Record.Key
	var pushes []push
	var puts []Record
	var dels []Key
	n.mu.Lock()
	st := n.held[k.Shard(n.cfg.Shards)]
	if st == nil || !st.loaded {
		n.mu.Unlock()
		return false
	}
	ik := packKey(k)
	e, ok := st.records[ik]
	switch ev.Type {
	case EventPut:
		switch {
		case !ok:
			st.records[ik] = newEntry(ev.Record)
			n.nrecords++
			puts = append(puts, ev.Record)
		case e.version < ev.Record.Version:
			if !e.sameLocation(ev.Record) && len(e.lookers) > 0 {
				// Lookers that left the cluster are forgotten here.
				e.lookers = slices.DeleteFunc(e.lookers, func(l string) bool { return n.placement.Index(l) < 0 })
				pushes = append(pushes, push{slices.Clone(e.lookers), Invalidation{Record: ev.Record}})
			}
			nw := newEntry(ev.Record)
			nw.lookers = e.lookers
			st.records[ik] = nw
			puts = append(puts, ev.Record)
		}
	case EventDelete:
		if ok && e.version < ev.Record.Version {
			delete(st.records, ik)
			n.nrecords--
			dels = append(dels, k)
			if len(e.lookers) > 0 {
				pushes = append(pushes, push{e.lookers, Invalidation{Record: ev.Record, Deleted: true}})
			}
		}
	}
	n.m.records.Set(float64(n.nrecords))
	n.mu.Unlock()
	n.reportHeld(puts, dels)
	n.sendInvalidations(pushes)
	return true
}

// ServePublish implements Handler: apply a record the hosting node just
// wrote to the store, ahead of this holder's watch (which later brings the
// same version, a no-op). A holder that does not hold the shard loaded
// refuses, so the publisher knows it is not yet served there.
func (n *Node) ServePublish(_ context.Context, pub Publication) (PublishResponse, error) {
	ev := SourceEvent{Type: EventPut, Record: pub.Record}
	if pub.Deleted {
		ev.Type = EventDelete
	}
	if pub.Record.Key.Validate() != nil || !n.applyRecord(ev) {
		return PublishResponse{Applied: false}, nil
	}
	return PublishResponse{Applied: true}, nil
}

// Publish pushes a record just written to the store (rec.Version is its
// store revision) to every holder of its shard in parallel, each bounded
// by the attempt timeout, and returns how many of them applied it. The
// hosting agent calls it before ADD returns, so that the record is served
// without waiting for the holders' store watch; the watch remains the
// guarantee when a holder misses the push.
func (n *Node) Publish(ctx context.Context, pub Publication) (int, error) {
	if err := pub.Record.Key.Validate(); err != nil {
		return 0, fmt.Errorf("publish: %w", err)
	}
	p := n.Placement()
	hs := p.Holders(pub.Record.Shard(n.cfg.Shards))
	acks := make(chan bool, len(hs))
	for _, h := range hs {
		m := p.Member(h)
		go func() {
			if m.Name == n.cfg.Self.Name {
				r, _ := n.ServePublish(ctx, pub)
				acks <- r.Applied
				return
			}
			actx, cancel := context.WithTimeout(ctx, n.cfg.AttemptTimeout)
			defer cancel()
			r, err := n.cfg.Transport.Publish(actx, m, pub)
			acks <- err == nil && r.Applied
		}()
	}
	applied := 0
	for range hs {
		if <-acks {
			applied++
		}
	}
	n.m.published.Add(float64(applied))
	if applied == 0 && len(hs) > 0 {
		return 0, fmt.Errorf("publish %s: %w", pub.Record.Key, ErrUnavailable)
	}
	return applied, nil
}

// sendInvalidations delivers pushes in the background, each with the
// attempt timeout, to the lookers that are still members.
func (n *Node) sendInvalidations(pushes []push) {
	if len(pushes) == 0 {
		return
	}
	p := n.Placement()
	go func() {
		for _, ps := range pushes {
			for _, to := range ps.to {
				i := p.Index(to)
				if i < 0 {
					continue
				}
				var err error
				if to == n.cfg.Self.Name {
					err = n.ServeInvalidate(context.Background(), ps.inv)
				} else {
					ctx, cancel := context.WithTimeout(context.Background(), n.cfg.AttemptTimeout)
					err = n.cfg.Transport.Invalidate(ctx, p.Member(i), ps.inv)
					cancel()
				}
				if err != nil {
					n.m.invFailed.Inc()
					n.log.Debug("pushing invalidation", "to", to, "key", ps.inv.Record.Key, "err", err)
					continue
				}
				n.m.invSent.Inc()
			}
		}
	}()
}

// ServeLookup implements Handler: answer from a held, loaded shard and
// remember the looker.
func (n *Node) ServeLookup(_ context.Context, req LookupRequest) (LookupResponse, error) {
	resp := n.serve(req)
	n.m.served.WithLabelValues(resp.Status.String()).Inc()
	return resp, nil
}

func (n *Node) serve(req LookupRequest) LookupResponse {
	if req.Key.Validate() != nil {
		return LookupResponse{Status: StatusNotFound}
	}
	s := req.Key.Shard(n.cfg.Shards)
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.placement.Holds(n.cfg.Self.Name, s); !ok {
		return LookupResponse{Status: StatusNotHolder}
	}
	st := n.held[s]
	if st == nil || !st.loaded {
		return LookupResponse{Status: StatusLoading}
	}
	ik := packKey(req.Key)
	e, ok := st.records[ik]
	if !ok {
		return LookupResponse{Status: StatusNotFound}
	}
	if req.Looker != "" && !slices.Contains(e.lookers, req.Looker) {
		e.lookers = append(e.lookers, req.Looker)
		st.records[ik] = e
	}
	return LookupResponse{Status: StatusFound, Record: e.record(ik)}
}

// ServeInvalidate implements Handler: forget or update a learned record
// and tell the agent, unless the invalidation is older than what this
// node learned.
func (n *Node) ServeInvalidate(_ context.Context, inv Invalidation) error {
	k := inv.Record.Key
	n.learnMu.Lock()
	l, ok := n.learned[k]
	if ok && l.version >= inv.Record.Version {
		n.learnMu.Unlock()
		return nil
	}
	if inv.Deleted {
		delete(n.learned, k)
	} else if ok {
		n.learned[k] = learned{version: inv.Record.Version, via: l.via}
	}
	n.learnMu.Unlock()
	n.m.invReceived.Inc()
	if n.cfg.OnInvalidate != nil {
		n.cfg.OnInvalidate(inv)
	}
	return nil
}

// Lookup resolves k through the holders of its shard, highest rank first
// (holders that failed recently last), each attempt bounded by the
// attempt timeout, and remembers the answer so that the holder's
// invalidations reach this node. ErrNotFound when a ready holder has no
// record; ErrUnavailable when no holder answered.
func (n *Node) Lookup(ctx context.Context, k Key) (Record, error) {
	if err := k.Validate(); err != nil {
		return Record{}, fmt.Errorf("lookup: %w", err)
	}
	start := time.Now()
	p := n.Placement()
	order := n.order(p, k.Shard(n.cfg.Shards))
	req := LookupRequest{Key: k, Looker: n.cfg.Self.Name}
	var lastErr error = errors.New("no members")
	failed := false
	for _, m := range order {
		var resp LookupResponse
		var err error
		if m.Name == n.cfg.Self.Name {
			resp = n.serve(req)
		} else {
			actx, cancel := context.WithTimeout(ctx, n.cfg.AttemptTimeout)
			resp, err = n.cfg.Transport.Lookup(actx, m, req)
			cancel()
		}
		if err != nil {
			n.m.attempts.WithLabelValues("error").Inc()
			n.markSuspect(m.Name)
			lastErr, failed = fmt.Errorf("holder %s: %w", m.Name, err), true
			if ctx.Err() != nil {
				break
			}
			continue
		}
		n.m.attempts.WithLabelValues(resp.Status.String()).Inc()
		switch resp.Status {
		case StatusFound:
			n.m.lookups.WithLabelValues("hit").Inc()
			d := time.Since(start)
			n.m.lookupSeconds.Observe(d.Seconds())
			if failed {
				n.m.failover.Observe(d.Seconds())
			}
			n.learn(resp.Record, m.Name)
			return resp.Record, nil
		case StatusNotFound:
			n.m.lookups.WithLabelValues("miss").Inc()
			return Record{}, fmt.Errorf("lookup %s: %w", k, ErrNotFound)
		default:
			lastErr, failed = fmt.Errorf("holder %s: %s", m.Name, resp.Status), true
		}
	}
	n.m.lookups.WithLabelValues("unavailable").Inc()
	return Record{}, fmt.Errorf("lookup %s: %w: %w", k, ErrUnavailable, lastErr)
}

// order returns shard s's holders, rank order, suspected ones last.
func (n *Node) order(p *Placement, s uint32) []Member {
	hs := p.Holders(s)
	out := make([]Member, 0, len(hs))
	var late []Member
	now := time.Now()
	n.suspectMu.Lock()
	for _, h := range hs {
		m := p.Member(h)
		if t, ok := n.suspect[m.Name]; ok && now.Sub(t) < n.cfg.SuspectFor {
			late = append(late, m)
			continue
		}
		out = append(out, m)
	}
	n.suspectMu.Unlock()
	return append(out, late...)
}

func (n *Node) markSuspect(name string) {
	n.suspectMu.Lock()
	n.suspect[name] = time.Now()
	if len(n.suspect) > 1024 {
		for k, t := range n.suspect {
			if time.Since(t) > n.cfg.SuspectFor {
				delete(n.suspect, k)
			}
		}
	}
	n.suspectMu.Unlock()
}

func (n *Node) learn(r Record, via string) {
	n.learnMu.Lock()
	defer n.learnMu.Unlock()
	if _, ok := n.learned[r.Key]; !ok && len(n.learned) >= n.cfg.MaxLearned {
		for k := range n.learned { // evict an arbitrary entry
			delete(n.learned, k)
			break
		}
	}
	n.learned[r.Key] = learned{version: r.Version, via: via}
}

// Forget drops k from the learned set (the agent evicted its entry): its
// holders' invalidations are then ignored.
func (n *Node) Forget(k Key) {
	n.learnMu.Lock()
	delete(n.learned, k)
	n.learnMu.Unlock()
}

// Learned returns the number of records this node remembers looking up.
func (n *Node) Learned() int {
	n.learnMu.Lock()
	defer n.learnMu.Unlock()
	return len(n.learned)
}

// relearn looks up again every learned key whose answering holder no
// longer holds its shard in p, so that a holder of the new placement
// remembers this node as a looker; a record that changed meanwhile is
// reported through OnInvalidate as if a holder had pushed it.
func (n *Node) relearn(ctx context.Context, p *Placement) {
	type item struct {
		k Key
		l learned
	}
	var todo []item
	n.learnMu.Lock()
	for k, l := range n.learned {
		if _, ok := p.Holds(l.via, k.Shard(n.cfg.Shards)); !ok {
			todo = append(todo, item{k, l})
		}
	}
	n.learnMu.Unlock()
	for _, it := range todo {
		if ctx.Err() != nil || n.Placement() != p {
			return // a newer placement runs its own relearn
		}
		r, err := n.Lookup(ctx, it.k)
		switch {
		case errors.Is(err, ErrNotFound):
			n.Forget(it.k)
			n.notify(Invalidation{Record: Record{Key: it.k, Version: it.l.version + 1}, Deleted: true})
		case err != nil:
			n.log.Debug("relearning", "key", it.k, "err", err)
		case r.Version > it.l.version:
			n.notify(Invalidation{Record: r})
		}
	}
}

func (n *Node) notify(inv Invalidation) {
	n.m.invReceived.Inc()
	if n.cfg.OnInvalidate != nil {
		n.cfg.OnInvalidate(inv)
	}
}

// Holders returns the members that hold k's shard in the node's current
// placement, highest rank first: "which nodes hold it" for geniectl.
func (n *Node) Holders(k Key) []Member {
	p := n.Placement()
	hs := p.Holders(k.Shard(n.cfg.Shards))
	out := make([]Member, len(hs))
	for i, h := range hs {
		out[i] = p.Member(h)
	}
	return out
}

// ServeRing implements RingHandler: this node's view of the ring.
func (n *Node) ServeRing(_ context.Context, _ RingRequest) (RingResponse, error) {
	p := n.Placement()
	loaded, loading := n.HeldShards()
	return RingResponse{Self: n.cfg.Self.Name, Members: slices.Clone(p.Members()), Shards: n.cfg.Shards, Replicas: n.cfg.Replicas,
		Loaded: loaded, Loading: loading, Records: n.Records(), Learned: n.Learned()}, nil
}
