package kubestore

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// PutEndpoint implements store.Store.
//
// The VPCEndpoint object is named after the VPC and the IP, so its create
// is the atomic "one endpoint per IP" rule. The EndpointIndex (named after
// a hash of the id) is written before the endpoint and deleted after it,
// so it exists whenever the endpoint does and DeleteEndpoint(id) always
// finds the IP. After creating an endpoint, PutEndpoint re-reads its
// subnet and block: if the subnet was fenced for deletion or the block
// released meanwhile, it withdraws the endpoint (see DeleteSubnet).
//
// A new endpoint costs three round trips: {read subnet, read block,
// create index} in parallel, create endpoint (now visible to watchers),
// re-read subnet and block.
func (s *Store) PutEndpoint(ctx context.Context, e vpc.Endpoint) (vpc.Endpoint, error) {
	what := fmt.Sprintf("put endpoint %q", e.Key())
	if err := e.Validate(); err != nil {
		return vpc.Endpoint{}, fmt.Errorf("%s: %w", what, err)
	}
	epName := s.endpointName(e.VPC, e.IP)
	lenKey := e.VPC + "/" + e.Subnet
	var madeIdx *indexObject // an index this call created
	ok := false
	defer func() {
		if !ok && madeIdx != nil {
			_ = s.delUID(context.WithoutCancel(ctx), resIndex, madeIdx.Metadata.Name, madeIdx.Metadata.UID)
		}
	}()
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		// One round of requests. The block is read speculatively with the
		// subnet's block length as last seen (a subnet's spec is
		// immutable), checked against the subnet read in the same round.
		// The index is created before the checks: that costs nothing when
		// they pass, and a failed put deletes it again (an index without
		// its endpoint holds nothing anyway).
		blen := vpc.DefaultBlockPrefixLen
		if n, ok := s.blockLens.Load(lenKey); ok {
			blen = n.(int)
		}
		blk := netip.PrefixFrom(e.IP, blen).Masked()
		var so *subnetObject
		var bo *blockObject
		var idx *indexObject
		var serr, berr, ierr error
		parallel(
			func() error {
				so, serr = get[subnetObject](ctx, s, resSubnet, s.subnetName(e.VPC, e.Subnet))
				return nil
			},
			func() error {
				bo, berr = getOpt[blockObject](ctx, s, resBlock, s.blockName(e.VPC, e.Subnet, blk))
				return nil
			},
			func() error {
				idx, ierr = create(ctx, s, resIndex, &indexObject{header: s.newHeader(resIndex, s.indexName(e.VPC, e.ID), LabelVPC, e.VPC),
					Spec: indexSpec{VPC: e.VPC, ID: e.ID, IP: e.IP.String(), Node: e.Node}})
				if ierr == nil {
					madeIdx = idx
				} else if apierrors.IsAlreadyExists(ierr) {
					idx, ierr = getOpt[indexObject](ctx, s, resIndex, s.indexName(e.VPC, e.ID))
				}
				return nil
			},
		)
		if apierrors.IsNotFound(serr) {
			if _, err := get[vpcObject](ctx, s, resVPC, s.vpcName(e.VPC)); apierrors.IsNotFound(err) {
				return vpc.Endpoint{}, noVPC(what, e.VPC)
			}
			return vpc.Endpoint{}, noSubnet(what, e.VPC, e.Subnet)
		}
		if err := firstErr(serr, berr, ierr); err != nil {
			return vpc.Endpoint{}, wrap(what, err)
		}
		sn, err := toSubnet(so)
		if err != nil {
			return vpc.Endpoint{}, fmt.Errorf("%s: %w", what, err)
		}
		if so.Status.Deleting {
			return vpc.Endpoint{}, fmt.Errorf("%s: %s is being deleted: %w", what, sn, store.ErrConflict)
		}
		if !sn.Assignable(e.IP) {
			return vpc.Endpoint{}, fmt.Errorf("%s: ip %s is not assignable in %s (gateway %s): %w", what, e.IP, sn, sn.Gateway, vpc.ErrInvalid)
		}
		if sn.BlockPrefixLen != blen {
			s.blockLens.Store(lenKey, sn.BlockPrefixLen)
			blk = netip.PrefixFrom(e.IP, sn.BlockPrefixLen).Masked()
			if bo, err = getOpt[blockObject](ctx, s, resBlock, s.blockName(e.VPC, e.Subnet, blk)); err != nil {
				return vpc.Endpoint{}, wrap(what, err)
			}
		}
		// The address must come from a block the endpoint's node holds.
		if bo == nil || bo.Spec.SubnetUID != string(so.Metadata.UID) {
			return vpc.Endpoint{}, fmt.Errorf("%s: ip %s: block %s of %s is not claimed by node %q: %w", what, e.IP, blk, sn, e.Node, store.ErrConflict)
		}
		if bo.Spec.Node != e.Node {
			return vpc.Endpoint{}, fmt.Errorf("%s: ip %s: block %s of %s is held by node %q, not %q: %w", what, e.IP, blk, sn, bo.Spec.Node, e.Node, store.ErrConflict)
		}
		if e.VNI, err = s.vniOf(ctx, what, e.VPC, so); err != nil {
			return vpc.Endpoint{}, err
		}
		if idx == nil {
			continue // deleted between its create and get: again
		}
		// An endpoint moving to another IP first withdraws its old address.
		if idx.Spec.IP != e.IP.String() {
			if old, err := netip.ParseAddr(idx.Spec.IP); err == nil {
				prev, err := getOpt[endpointObject](ctx, s, resEndpoint, s.endpointName(e.VPC, old))
				if err != nil {
					return vpc.Endpoint{}, wrap(what, err)
				}
				if prev != nil && prev.Spec.ID == e.ID {
					if err := s.del(ctx, resEndpoint, &prev.Metadata, true); apierrors.IsConflict(err) {
						continue
					} else if err != nil && !apierrors.IsNotFound(err) {
						return vpc.Endpoint{}, wrap(fmt.Sprintf("%s: withdraw old ip %s", what, old), err)
					}
				}
			}
			idx.Spec.IP, idx.Spec.Node = e.IP.String(), e.Node
			if _, err := update(ctx, s, resIndex, idx, false); apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				continue
			} else if err != nil {
				return vpc.Endpoint{}, wrap(what+": update index", err)
			}
		}

		spec := endpointSpecOf(e)
		shard := s.shardLabel(e.VNI, e.IP) // directory.go
		o := &endpointObject{header: s.newHeader(resEndpoint, epName, LabelVPC, e.VPC, LabelSubnet, e.Subnet, LabelShard, shard), Spec: spec}
		o, err = create(ctx, s, resEndpoint, o)
		if err == nil {
			if err := s.recheck(ctx, what, so, bo, blk, sn); err != nil {
				_ = s.delUID(context.WithoutCancel(ctx), resEndpoint, o.Metadata.Name, o.Metadata.UID)
				return vpc.Endpoint{}, err
			}
			ok = true
			return e, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return vpc.Endpoint{}, wrap(what, err)
		}
		// The IP has an endpoint: this one (an update) or another one.
		at, err := getOpt[endpointObject](ctx, s, resEndpoint, epName)
		if err != nil {
			return vpc.Endpoint{}, wrap(what, err)
		}
		if at == nil {
			continue // deleted meanwhile: again
		}
		if at.Spec.ID != e.ID {
			return vpc.Endpoint{}, fmt.Errorf("%s: ip %s is held by endpoint %q: %w", what, e.IP, e.VPC+"/"+at.Spec.ID, store.ErrConflict)
		}
		if reflect.DeepEqual(at.Spec, spec) && at.Metadata.Labels[LabelSubnet] == e.Subnet && at.Metadata.Labels[LabelShard] == shard {
			ok = true
			return e, nil
		}
		at.Spec = spec
		if at.Metadata.Labels == nil {
			at.Metadata.Labels = map[string]string{}
		}
		at.Metadata.Labels[LabelSubnet] = e.Subnet
		at.Metadata.Labels[LabelShard] = shard
		if _, err := update(ctx, s, resEndpoint, at, false); apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue
		} else if err != nil {
			return vpc.Endpoint{}, wrap(what, err)
		}
		ok = true
		return e, nil
	}
	return vpc.Endpoint{}, try.Err()
}

// vniOf returns the VNI of the subnet's VPC. VNIs are cached by VPC UID
// (found in the subnet's owner reference): a VPC's status.vni never
// changes once set, and a VPC recreated under the same name has a new UID.
func (s *Store) vniOf(ctx context.Context, what, vpcName string, so *subnetObject) (uint32, error) {
	var uid string
	for _, r := range so.Metadata.OwnerReferences {
		if r.Kind == resVPC.kind {
			uid = string(r.UID)
		}
	}
	if v, ok := s.vnis.Load(uid); ok && uid != "" {
		return v.(uint32), nil
	}
	vo, err := get[vpcObject](ctx, s, resVPC, s.vpcName(vpcName))
	if apierrors.IsNotFound(err) {
		return 0, noVPC(what, vpcName)
	}
	if err != nil {
		return 0, wrap(what, err)
	}
	if uid != "" && string(vo.Metadata.UID) != uid {
		return 0, fmt.Errorf("%s: %s belongs to an earlier vpc %q: %w", what, so.Spec.VPC+"/"+so.Spec.Name, vpcName, store.ErrConflict)
	}
	if vo, err = s.ensureVNI(ctx, what, vo); err != nil {
		return 0, err
	}
	s.vnis.Store(string(vo.Metadata.UID), vo.Status.VNI)
	return vo.Status.VNI, nil
}

// recheck reads the subnet and block of a new endpoint again, after its
// create: both must be the same objects and the subnet not fenced.
func (s *Store) recheck(ctx context.Context, what string, so *subnetObject, bo *blockObject, blk netip.Prefix, sn vpc.Subnet) error {
	var so2 *subnetObject
	var bo2 *blockObject
	var serr, berr error
	parallel(
		func() error { so2, serr = getOpt[subnetObject](ctx, s, resSubnet, so.Metadata.Name); return nil },
		func() error { bo2, berr = getOpt[blockObject](ctx, s, resBlock, bo.Metadata.Name); return nil },
	)
	if err := firstErr(serr, berr); err != nil {
		return wrap(what+": recheck", err)
	}
	if so2 == nil || so2.Metadata.UID != so.Metadata.UID || so2.Status.Deleting {
		return fmt.Errorf("%s: %s was deleted meanwhile: %w", what, sn, store.ErrConflict)
	}
	if bo2 == nil || bo2.Metadata.UID != bo.Metadata.UID {
		return fmt.Errorf("%s: block %s of %s was released meanwhile: %w", what, blk, sn, store.ErrConflict)
	}
	return nil
}

// GetEndpoint implements store.Store: index, then endpoint.
func (s *Store) GetEndpoint(ctx context.Context, vpcName, id string) (vpc.Endpoint, error) {
	what := fmt.Sprintf("get endpoint %q", vpcName+"/"+id)
	o, _, err := s.findEndpoint(ctx, vpcName, id)
	if err != nil {
		return vpc.Endpoint{}, wrap(what, err)
	}
	if o == nil {
		return vpc.Endpoint{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	e, err := toEndpoint(o)
	if err != nil {
		return vpc.Endpoint{}, fmt.Errorf("%s: %w", what, err)
	}
	return e, nil
}

// findEndpoint returns the endpoint with id (nil if none) and its index
// (nil if none).
func (s *Store) findEndpoint(ctx context.Context, vpcName, id string) (*endpointObject, *indexObject, error) {
	idx, err := getOpt[indexObject](ctx, s, resIndex, s.indexName(vpcName, id))
	if err != nil || idx == nil {
		return nil, nil, err
	}
	ip, err := netip.ParseAddr(idx.Spec.IP)
	if err != nil {
		return nil, idx, nil
	}
	o, err := getOpt[endpointObject](ctx, s, resEndpoint, s.endpointName(vpcName, ip))
	if err != nil {
		return nil, nil, err
	}
	if o == nil || o.Spec.ID != id {
		return nil, idx, nil
	}
	return o, idx, nil
}

// DeleteEndpoint implements store.Store: endpoint, then index.
func (s *Store) DeleteEndpoint(ctx context.Context, vpcName, id string) error {
	what := fmt.Sprintf("delete endpoint %q", vpcName+"/"+id)
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		o, idx, err := s.findEndpoint(ctx, vpcName, id)
		if err != nil {
			return wrap(what, err)
		}
		if o != nil {
			if err := s.del(ctx, resEndpoint, &o.Metadata, false); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return wrap(what, err)
			}
		}
		if idx == nil {
			return nil
		}
		err = s.del(ctx, resIndex, &idx.Metadata, true)
		if apierrors.IsConflict(err) {
			continue // re-put meanwhile: look again
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return wrap(what+": delete index", err)
		}
		return nil
	}
	return try.Err()
}

// ListEndpoints implements store.Store.
func (s *Store) ListEndpoints(ctx context.Context, vpcName string) ([]vpc.Endpoint, int64, error) {
	what := fmt.Sprintf("list endpoints of vpc %q", vpcName)
	objs, rv, err := list[endpointObject](ctx, s, resEndpoint, s.endpointSelector(vpcName), 0)
	if err != nil {
		return nil, 0, wrap(what, err)
	}
	rev, err := parseRV(rv)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", what, err)
	}
	out := make([]vpc.Endpoint, 0, len(objs))
	for _, o := range objs {
		e, err := toEndpoint(o)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b vpc.Endpoint) int {
		if c := strings.Compare(a.VPC, b.VPC); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, rev, nil
}

func (s *Store) endpointSelector(vpcName string) string {
	if vpcName == "" {
		return s.selector()
	}
	return s.selector(LabelVPC, vpcName)
}

// WatchEndpoints implements store.Store. Delete events carry the whole
// endpoint as last stored. An endpoint that moves to another IP is seen
// as a delete of the old address followed by a put of the new one.
func (s *Store) WatchEndpoints(ctx context.Context, vpcName string, fromRevision int64) <-chan store.EndpointEvent {
	ch := make(chan store.EndpointEvent)
	go watch(ctx, s, resEndpoint, s.endpointSelector(vpcName), fromRevision, fmt.Sprintf("watch endpoints of vpc %q", vpcName),
		func(typ store.EventType, rev int64, o *endpointObject) (store.EndpointEvent, error) {
			e, err := toEndpoint(o)
			return store.EndpointEvent{Type: typ, Endpoint: e, Revision: rev}, err
		}, func(err error) store.EndpointEvent {
			return store.EndpointEvent{Type: store.EventError, Err: err}
		}, ch)
	return ch
}

// WatchEndpointsIn is WatchEndpoints for a set of VPCs through one watch:
// the API server filters on the genie.cni.io/vpc label ("in (a, b)"), so
// an agent that hosts some VPCs receives only their endpoints over a
// single stream, where WatchEndpoints(ctx, "", rev) would send it every
// endpoint of the cluster. When the set changes, cancel and watch the new
// set from the last revision seen (for VPCs added, list them first). An
// empty set watches nothing and returns a closed channel.
func (s *Store) WatchEndpointsIn(ctx context.Context, vpcNames []string, fromRevision int64) <-chan store.EndpointEvent {
	ch := make(chan store.EndpointEvent)
	if len(vpcNames) == 0 {
		close(ch)
		return ch
	}
	names := slices.Clone(vpcNames)
	slices.Sort(names)
	names = slices.Compact(names)
	sel := s.selector() + "," + LabelVPC + " in (" + strings.Join(names, ",") + ")"
	go watch(ctx, s, resEndpoint, sel, fromRevision, fmt.Sprintf("watch endpoints of %d vpc(s)", len(names)),
		func(typ store.EventType, rev int64, o *endpointObject) (store.EndpointEvent, error) {
			e, err := toEndpoint(o)
			return store.EndpointEvent{Type: typ, Endpoint: e, Revision: rev}, err
		}, func(err error) store.EndpointEvent {
			return store.EndpointEvent{Type: store.EventError, Err: err}
		}, ch)
	return ch
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
