package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cni-genie/cni-genie/pkg/directory"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// The endpoint directory's layout (see doc.go): every endpoint has a
// second key, written and deleted in the same transaction as the endpoint,
//
//	<prefix>/directory/<shard, 5 hex digits>/<vni>/<ip> → {"node":…,"mac":…}
//
// so that a holder of the directory (package directory) lists and watches
// only the shards it holds. A record's Version is the key's mod_revision.

var _ store.DirectorySource = (*Store)(nil)

// dirValue is the value of a directory key.
type dirValue struct {
	Node string `json:"node"`
	MAC  string `json:"mac,omitempty"`
}

// maxShardWatches is the number of held shards up to which WatchShards
// opens one prefix watch per shard (multiplexed by clientv3 on one gRPC
// stream); above it, one watch of the whole directory filtered here is
// cheaper than thousands of watchers (a small cluster, where each node
// holds a large fraction of the shards anyway).
var maxShardWatches = 256

// listShardsBatch bounds the range reads of one ListShards transaction
// (etcd refuses transactions of more than --max-txn-ops, 128 by default).
const listShardsBatch = 64

// DirectoryShards returns the number of directory shards the store lays
// its directory keys out by.
func (s *Store) DirectoryShards() int { return s.shards }

func (s *Store) dirPrefix() string { return s.prefix + "/directory/" }

func (s *Store) dirShardPrefix(sh uint32) string {
	return fmt.Sprintf("%s/directory/%05x/", s.prefix, sh)
}

func (s *Store) dirKey(vni uint32, ip netip.Addr) string {
	k := directory.Key{VNI: vni, IP: ip}
	return fmt.Sprintf("%s%d/%s", s.dirShardPrefix(k.Shard(s.shards)), vni, ip)
}

// dirPut is the operation writing e's directory key (e.VNI is set).
func (s *Store) dirPut(e vpc.Endpoint) clientv3.Op {
	v := dirValue{Node: e.Node}
	if len(e.MAC) > 0 {
		v.MAC = e.MAC.String()
	}
	b, _ := json.Marshal(v)
	return clientv3.OpPut(s.dirKey(e.VNI, e.IP), string(b))
}

// parseDirKV decodes a directory key and value into a record.
func (s *Store) parseDirKV(key string, val []byte, rev int64) (directory.Record, error) {
	rest, ok := strings.CutPrefix(key, s.dirPrefix())
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 3 {
		return directory.Record{}, fmt.Errorf("directory key %q: not <shard>/<vni>/<ip>", key)
	}
	vni, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil {
		return directory.Record{}, fmt.Errorf("directory key %q: vni: %w", key, err)
	}
	ip, err := netip.ParseAddr(parts[2])
	if err != nil {
		return directory.Record{}, fmt.Errorf("directory key %q: ip: %w", key, err)
	}
	r := directory.Record{Key: directory.Key{VNI: uint32(vni), IP: ip}, Version: uint64(rev)}
	if val != nil {
		var v dirValue
		if err := json.Unmarshal(val, &v); err != nil {
			return directory.Record{}, fmt.Errorf("directory key %q: decode: %w", key, err)
		}
		r.Node = v.Node
		if v.MAC != "" {
			m, err := net.ParseMAC(v.MAC)
			if err != nil || len(m) != 6 {
				return directory.Record{}, fmt.Errorf("directory key %q: mac %q: %w", key, v.MAC, vpc.ErrInvalid)
			}
			copy(r.MAC[:], m)
		}
	}
	return r, nil
}

// ListShards implements directory.Source: one range read per shard
// prefix, batched in transactions; every batch after the first reads at
// the first one's revision, so the listing is one consistent snapshot.
func (s *Store) ListShards(ctx context.Context, shards []uint32) ([]directory.Record, int64, error) {
	what := fmt.Sprintf("list %d directory shard(s)", len(shards))
	var out []directory.Record
	var rev int64
	for i := 0; i < len(shards); i += listShardsBatch {
		batch := shards[i:min(i+listShardsBatch, len(shards))]
		ops := make([]clientv3.Op, 0, len(batch))
		for _, sh := range batch {
			opts := []clientv3.OpOption{clientv3.WithPrefix()}
			if rev > 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			ops = append(ops, clientv3.OpGet(s.dirShardPrefix(sh), opts...))
		}
		rs, r, err := s.read(ctx, ops...)
		if err != nil {
			if rev > 0 && errors.Is(err, rpctypes.ErrCompacted) {
				return nil, 0, fmt.Errorf("%s: %w", what, directory.ErrSourceCompacted)
			}
			return nil, 0, fmt.Errorf("%s: %w", what, err)
		}
		if rev == 0 {
			rev = r
		}
		for _, g := range rs {
			for _, kv := range g.Kvs {
				rec, err := s.parseDirKV(string(kv.Key), kv.Value, kv.ModRevision)
				if err != nil {
					return nil, 0, fmt.Errorf("%s: %w", what, err)
				}
				out = append(out, rec)
			}
		}
	}
	if rev == 0 { // no shard asked: the current revision
		r, err := s.kv.Get(ctx, s.dirPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", what, err)
		}
		rev = r.Header.Revision
	}
	return out, rev, nil
}

// DirectoryRecord implements store.DirectorySource (the VPC name is not
// needed here: the key names the VNI).
func (s *Store) DirectoryRecord(ctx context.Context, _ string, k directory.Key) (directory.Record, bool, error) {
	if err := k.Validate(); err != nil {
		return directory.Record{}, false, fmt.Errorf("get directory record: %w", err)
	}
	r, err := s.kv.Get(ctx, s.dirKey(k.VNI, k.IP))
	if err != nil {
		return directory.Record{}, false, fmt.Errorf("get directory record %s: %w", k, err)
	}
	if len(r.Kvs) == 0 {
		return directory.Record{}, false, nil
	}
	rec, err := s.parseDirKV(string(r.Kvs[0].Key), r.Kvs[0].Value, r.Kvs[0].ModRevision)
	if err != nil {
		return directory.Record{}, false, fmt.Errorf("get directory record %s: %w", k, err)
	}
	return rec, true, nil
}

// WatchShards implements directory.Source. Up to maxShardWatches shards
// it opens one prefix watch per shard; those streams are not ordered with
// each other, so every event carries as its Revision a resume point, the
// lowest revision up to which every stream is known complete (its last
// event, or etcd's progress notification, requested every second), not
// the event's own revision (that is Record.Version). Above the limit it
// watches the whole directory and drops other shards' events.
func (s *Store) WatchShards(ctx context.Context, shards []uint32, fromRevision int64) <-chan directory.SourceEvent {
	ch := make(chan directory.SourceEvent)
	set := make(map[uint32]bool, len(shards))
	for _, sh := range shards {
		set[sh] = true
	}
	if len(set) == 0 {
		close(ch)
		return ch
	}
	if len(set) > maxShardWatches {
		go s.watchAllShards(ctx, set, fromRevision, ch)
	} else {
		go s.watchEachShard(ctx, slices.Sorted(mapsKeys(set)), fromRevision, ch)
	}
	return ch
}

func mapsKeys(m map[uint32]bool) func(func(uint32) bool) {
	return func(yield func(uint32) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// dirEvent converts one etcd event of a directory key.
func (s *Store) dirEvent(ev *clientv3.Event) (directory.SourceEvent, error) {
	switch ev.Type {
	case mvccpb.PUT:
		r, err := s.parseDirKV(string(ev.Kv.Key), ev.Kv.Value, ev.Kv.ModRevision)
		return directory.SourceEvent{Type: directory.EventPut, Record: r, Revision: ev.Kv.ModRevision}, err
	default:
		r, err := s.parseDirKV(string(ev.Kv.Key), nil, ev.Kv.ModRevision)
		return directory.SourceEvent{Type: directory.EventDelete, Record: r, Revision: ev.Kv.ModRevision}, err
	}
}

func (s *Store) watchAllShards(ctx context.Context, set map[uint32]bool, from int64, ch chan<- directory.SourceEvent) {
	defer close(ch)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if from > 0 {
		opts = append(opts, clientv3.WithRev(from+1))
	}
	send := func(e directory.SourceEvent) bool {
		select {
		case ch <- e:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for wr := range s.cli.Watch(clientv3.WithRequireLeader(ctx), s.dirPrefix(), opts...) {
		if ctx.Err() != nil {
			return
		}
		if err := watchFailure(wr, from); err != nil {
			send(directory.SourceEvent{Type: directory.EventError, Err: err})
			return
		}
		for _, ev := range wr.Events {
			e, err := s.dirEvent(ev)
			if err != nil {
				send(directory.SourceEvent{Type: directory.EventError, Err: fmt.Errorf("watch directory: %w", err)})
				return
			}
			if !set[e.Record.Shard(s.shards)] {
				continue
			}
			if !send(e) {
				return
			}
		}
	}
	if ctx.Err() == nil {
		send(directory.SourceEvent{Type: directory.EventError, Err: errors.New("watch directory: watch channel closed (client closed?)")})
	}
}

// watchFailure maps a failed watch response to the Source's errors.
func watchFailure(wr clientv3.WatchResponse, from int64) error {
	if wr.CompactRevision != 0 {
		return fmt.Errorf("watch directory from revision %d: oldest kept %d: %w", from, wr.CompactRevision, directory.ErrSourceCompacted)
	}
	if err := wr.Err(); err != nil {
		return fmt.Errorf("watch directory: %w", err)
	}
	return nil
}

// watchEachShard merges one prefix watch per shard (see WatchShards).
func (s *Store) watchEachShard(ctx context.Context, shards []uint32, from int64, ch chan<- directory.SourceEvent) {
	defer close(ch)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// All watches share this context's metadata, hence one gRPC stream,
	// which RequestProgress asks for progress notifications.
	wctx := clientv3.WithRequireLeader(ctx)
	var mu sync.Mutex
	progress := make([]int64, len(shards))
	for i := range progress {
		progress[i] = from
	}
	safe := func() int64 { return slices.Min(progress) }
	out := make(chan directory.SourceEvent)
	done := make(chan struct{})
	var once sync.Once
	fail := func(err error) {
		once.Do(func() {
			select {
			case out <- directory.SourceEvent{Type: directory.EventError, Err: err}:
			case <-ctx.Done():
			}
			close(done)
		})
	}
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithProgressNotify()}
	if from > 0 {
		opts = append(opts, clientv3.WithRev(from+1))
	}
	for i, sh := range shards {
		wch := s.cli.Watch(wctx, s.dirShardPrefix(sh), opts...)
		go func() {
			for wr := range wch {
				if ctx.Err() != nil {
					return
				}
				if err := watchFailure(wr, from); err != nil {
					fail(err)
					return
				}
				if wr.IsProgressNotify() {
					mu.Lock()
					progress[i] = max(progress[i], wr.Header.Revision)
					mu.Unlock()
					continue
				}
				for _, ev := range wr.Events {
					e, err := s.dirEvent(ev)
					if err != nil {
						fail(fmt.Errorf("watch directory: %w", err))
						return
					}
					mu.Lock()
					progress[i] = max(progress[i], e.Revision-1)
					e.Revision = safe()
					mu.Unlock()
					select {
					case out <- e:
					case <-ctx.Done():
						return
					}
				}
				if n := len(wr.Events); n > 0 {
					mu.Lock()
					progress[i] = max(progress[i], wr.Events[n-1].Kv.ModRevision)
					mu.Unlock()
				}
			}
			if ctx.Err() == nil {
				fail(errors.New("watch directory: watch channel closed (client closed?)"))
			}
		}()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-tick.C:
			_ = s.cli.RequestProgress(wctx)
		case e := <-out:
			select {
			case ch <- e:
			case <-ctx.Done():
				return
			}
			if e.Type == directory.EventError {
				return
			}
		}
	}
}

// dirRecordOf is the directory record an endpoint's write stores, for
// tests and the backfill.
func dirRecordOf(e vpc.Endpoint) directory.Record {
	r := directory.Record{Key: directory.Key{VNI: e.VNI, IP: e.IP}, Node: e.Node}
	copy(r.MAC[:], e.MAC)
	return r
}

// BackfillDirectory writes the directory key of every endpoint that lacks
// one (endpoints written before the directory layout, by an agent that
// has not restarted since: a restarting agent re-puts its endpoints, which
// writes their keys). Each write is a transaction conditioned on the
// endpoint being unchanged, so it never resurrects a deleted endpoint.
// It returns how many keys it wrote.
func (s *Store) BackfillDirectory(ctx context.Context) (int, error) {
	eps, _, err := s.ListEndpoints(ctx, "")
	if err != nil {
		return 0, fmt.Errorf("backfill directory: %w", err)
	}
	n := 0
	for _, e := range eps {
		if e.VNI == 0 || !e.IP.Is4() {
			continue
		}
		r, err := s.kv.Get(ctx, s.endpointKey(e.VPC, e.ID))
		if err != nil {
			return n, fmt.Errorf("backfill directory: %w", err)
		}
		if len(r.Kvs) == 0 {
			continue
		}
		resp, err := s.kv.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(s.endpointKey(e.VPC, e.ID)), "=", r.Kvs[0].ModRevision),
			clientv3.Compare(clientv3.CreateRevision(s.dirKey(e.VNI, e.IP)), "=", 0),
		).Then(s.dirPut(e)).Commit()
		if err != nil {
			return n, fmt.Errorf("backfill directory: endpoint %q: %w", e.Key(), err)
		}
		if resp.Succeeded {
			n++
		}
	}
	return n, nil
}
