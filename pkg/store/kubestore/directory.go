package kubestore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/cni-genie/cni-genie/pkg/directory"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// The endpoint directory's layout (see doc.go): every VPCEndpoint object
// carries the label genie.cni.io/shard=<shard> (decimal), written by
// PutEndpoint, so that a holder lists and watches its shards through a set
// selector the API server's watch cache evaluates. A record's Version is
// the object's resourceVersion parsed as an integer (etcd's revision under
// the API server; NewForConfig already refuses a server whose versions do
// not parse, see parseRV).

var _ store.DirectorySource = (*Store)(nil)

// LabelShard names the directory shard of a VPCEndpoint.
const LabelShard = "genie.cni.io/shard"

// maxSelectorShards is the number of shards up to which the set selector
// names each one; above it the selector is "has the label" and the other
// shards' objects are dropped here (a small cluster, where each node holds
// a large fraction of the shards, or a URL of many kilobytes otherwise).
var maxSelectorShards = 256

// DirectoryShards implements store.DirectorySource.
func (s *Store) DirectoryShards() int {
	sh := s.opts.DirectoryShards
	if sh <= 0 || sh&(sh-1) != 0 {
		return directory.DefaultShards
	}
	return sh
}

// shardLabel is the shard label value of the endpoint (vni, ip).
func (s *Store) shardLabel(vni uint32, ip netip.Addr) string {
	return strconv.FormatUint(uint64(directory.Key{VNI: vni, IP: ip}.Shard(s.DirectoryShards())), 10)
}

// shardSelector selects the endpoints of shards, and reports whether the
// caller must filter (the selector names no shard).
func (s *Store) shardSelector(shards []uint32) (string, map[uint32]bool) {
	set := make(map[uint32]bool, len(shards))
	for _, sh := range shards {
		set[sh] = true
	}
	if len(set) > maxSelectorShards {
		return s.selector() + "," + LabelShard, set
	}
	vals := make([]string, 0, len(set))
	for _, sh := range slices.Sorted(func(yield func(uint32) bool) {
		for k := range set {
			if !yield(k) {
				return
			}
		}
	}) {
		vals = append(vals, strconv.FormatUint(uint64(sh), 10))
	}
	return s.selector() + "," + LabelShard + " in (" + strings.Join(vals, ",") + ")", set
}

// recordOf converts an endpoint object to its directory record.
func recordOf(o *endpointObject, rev int64) (directory.Record, error) {
	ip, err := netip.ParseAddr(o.Spec.IP)
	if err != nil || !ip.Is4() {
		return directory.Record{}, fmt.Errorf("endpoint object %q: ip %q: %w", o.Metadata.Name, o.Spec.IP, vpc.ErrInvalid)
	}
	r := directory.Record{Key: directory.Key{VNI: o.Spec.VNI, IP: ip}, Node: o.Spec.Node, Version: uint64(rev)}
	if o.Spec.MAC != "" {
		m, err := net.ParseMAC(o.Spec.MAC)
		if err != nil || len(m) != 6 {
			return directory.Record{}, fmt.Errorf("endpoint object %q: mac %q: %w", o.Metadata.Name, o.Spec.MAC, vpc.ErrInvalid)
		}
		copy(r.MAC[:], m)
	}
	return r, nil
}

// inShards reports whether o belongs to one of set by its spec: a label
// that disagrees with the spec (written by hand) is not trusted.
func (s *Store) inShards(r directory.Record, set map[uint32]bool) bool {
	return r.VNI != 0 && set[r.Shard(s.DirectoryShards())]
}

// ListShards implements directory.Source: one paginated list with the
// shard set selector.
func (s *Store) ListShards(ctx context.Context, shards []uint32) ([]directory.Record, int64, error) {
	what := fmt.Sprintf("list %d directory shard(s)", len(shards))
	sel, set := s.shardSelector(shards)
	if len(set) == 0 {
		_, rv, err := list[endpointObject](ctx, s, resEndpoint, s.selector(), 1)
		if err != nil {
			return nil, 0, wrap(what, err)
		}
		rev, err := parseRV(rv)
		return nil, rev, err
	}
	objs, rv, err := list[endpointObject](ctx, s, resEndpoint, sel, 0)
	if err != nil {
		return nil, 0, wrap(what, err)
	}
	rev, err := parseRV(rv)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", what, err)
	}
	out := make([]directory.Record, 0, len(objs))
	for _, o := range objs {
		orev, err := parseRV(o.Metadata.ResourceVersion)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", what, err)
		}
		r, err := recordOf(o, orev)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", what, err)
		}
		if s.inShards(r, set) {
			out = append(out, r)
		}
	}
	return out, rev, nil
}

// WatchShards implements directory.Source: one watch with the shard set
// selector, in revision order. A start revision the server no longer has
// ends the watch with directory.ErrSourceCompacted.
func (s *Store) WatchShards(ctx context.Context, shards []uint32, fromRevision int64) <-chan directory.SourceEvent {
	ch := make(chan directory.SourceEvent)
	sel, set := s.shardSelector(shards)
	if len(set) == 0 {
		close(ch)
		return ch
	}
	raw := make(chan directory.SourceEvent)
	go watch(ctx, s, resEndpoint, sel, fromRevision, fmt.Sprintf("watch %d directory shard(s)", len(set)),
		func(typ store.EventType, rev int64, o *endpointObject) (directory.SourceEvent, error) {
			r, err := recordOf(o, rev)
			ev := directory.SourceEvent{Type: directory.EventPut, Record: r, Revision: rev}
			if typ == store.EventDelete {
				ev.Type = directory.EventDelete
			}
			return ev, err
		}, func(err error) directory.SourceEvent {
			if errors.Is(err, store.ErrCompacted) {
				err = fmt.Errorf("%w: %w", directory.ErrSourceCompacted, err)
			}
			return directory.SourceEvent{Type: directory.EventError, Err: err}
		}, raw)
	go func() {
		defer close(ch)
		for ev := range raw {
			if ev.Type != directory.EventError && !s.inShards(ev.Record, set) {
				continue
			}
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

// DirectoryRecord implements store.DirectorySource: the endpoint object
// of {vpcName, k.IP}, if its VNI is k.VNI.
func (s *Store) DirectoryRecord(ctx context.Context, vpcName string, k directory.Key) (directory.Record, bool, error) {
	what := fmt.Sprintf("get directory record %s of vpc %q", k, vpcName)
	if err := k.Validate(); err != nil {
		return directory.Record{}, false, fmt.Errorf("%s: %w", what, err)
	}
	o, err := getOpt[endpointObject](ctx, s, resEndpoint, s.endpointName(vpcName, k.IP))
	if err != nil {
		return directory.Record{}, false, wrap(what, err)
	}
	if o == nil || o.Spec.VNI != k.VNI {
		return directory.Record{}, false, nil
	}
	rev, err := parseRV(o.Metadata.ResourceVersion)
	if err != nil {
		return directory.Record{}, false, fmt.Errorf("%s: %w", what, err)
	}
	r, err := recordOf(o, rev)
	if err != nil {
		return directory.Record{}, false, fmt.Errorf("%s: %w", what, err)
	}
	return r, true, nil
}

// BackfillDirectory labels every endpoint object that lacks its shard
// label, or carries a wrong one (objects written before the directory
// layout by an agent that has not restarted since: a restarting agent
// re-puts its endpoints, which labels them). Updates are conditioned on
// the object's resourceVersion; a conflict skips the object (it changed,
// and its writer labelled it). It returns how many objects it labelled.
func (s *Store) BackfillDirectory(ctx context.Context) (int, error) {
	objs, _, err := list[endpointObject](ctx, s, resEndpoint, s.selector(), 0)
	if err != nil {
		return 0, wrap("backfill directory", err)
	}
	n := 0
	for _, o := range objs {
		ip, err := netip.ParseAddr(o.Spec.IP)
		if err != nil || o.Spec.VNI == 0 {
			continue
		}
		want := s.shardLabel(o.Spec.VNI, ip)
		if o.Metadata.Labels[LabelShard] == want {
			continue
		}
		if o.Metadata.Labels == nil {
			o.Metadata.Labels = map[string]string{}
		}
		o.Metadata.Labels[LabelShard] = want
		if _, err := update(ctx, s, resEndpoint, o, false); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				continue
			}
			return n, wrap(fmt.Sprintf("backfill directory: endpoint %q", o.Metadata.Name), err)
		}
		n++
	}
	return n, nil
}
