package kubestore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kwatch "k8s.io/apimachinery/pkg/watch"
	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"

	"github.com/cni-genie/cni-genie/pkg/egress"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

var (
	_ store.EgressStore = (*Store)(nil)
	_ store.BeatStore   = (*Store)(nil)
)

// egressObject is a VPCEgressGateway (deploy/crds/genie.cni.io_vpcegressgateways.yaml).
// Object name: <vpc>.<name>, so creating it is the "name unique in the
// VPC" rule.
type egressObject struct {
	header
	Spec egress.Gateway `json:"spec"`
}

func (s *Store) egressName(v, n string) string { return s.name(v, n) }

// egressErr maps egress.ErrConflict and ErrUnknown to the store's errors.
func egressErr(err error) error {
	switch {
	case errors.Is(err, egress.ErrConflict):
		return fmt.Errorf("%w: %w", err, store.ErrConflict)
	case errors.Is(err, egress.ErrUnknown):
		return fmt.Errorf("%w: %w", err, store.ErrNotFound)
	}
	return err
}

// CreateEgressGateway implements store.EgressStore.
func (s *Store) CreateEgressGateway(ctx context.Context, g egress.Gateway) (egress.Gateway, error) {
	return s.putEgress(ctx, fmt.Sprintf("create %s", g), g, false)
}

// UpdateEgressGateway implements store.EgressStore.
func (s *Store) UpdateEgressGateway(ctx context.Context, g egress.Gateway) (egress.Gateway, error) {
	return s.putEgress(ctx, fmt.Sprintf("update %s", g), g, true)
}

// putEgress checks g against the VPC, the nodes and the VPC's other
// gateways, then creates it (the object name makes the name unique) or
// updates it with the resourceVersion read. Two concurrent writes of
// different gateways giving one node two addresses in one VPC are not
// serialised here (the API server has no multi-object transaction); the
// agents then use one address (the first gateway by name).
func (s *Store) putEgress(ctx context.Context, what string, g egress.Gateway, update bool) (egress.Gateway, error) {
	g = g.WithDefaults()
	if err := g.Validate(); err != nil {
		return egress.Gateway{}, fmt.Errorf("%s: %w", what, err)
	}
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		var vo *vpcObject
		var nodeObjs []*nodeObject
		var gwObjs []*egressObject
		var verr, nerr, gerr error
		parallel(
			func() error { vo, verr = get[vpcObject](ctx, s, resVPC, s.vpcName(g.VPC)); return nil },
			func() error { nodeObjs, _, nerr = list[nodeObject](ctx, s, resNode, s.selector(), 0); return nil },
			func() error {
				gwObjs, _, gerr = list[egressObject](ctx, s, resEgress, s.selector(LabelVPC, g.VPC), 0)
				return nil
			},
		)
		if apierrors.IsNotFound(verr) {
			return egress.Gateway{}, noVPC(what, g.VPC)
		}
		if err := firstErr(verr, nerr, gerr); err != nil {
			return egress.Gateway{}, wrap(what, err)
		}
		parent, err := s.toVPC(vo)
		if err != nil {
			return egress.Gateway{}, fmt.Errorf("%s: %w", what, err)
		}
		nodes := make([]vpc.Node, 0, len(nodeObjs))
		for _, o := range nodeObjs {
			n, err := toNode(o)
			if err != nil {
				return egress.Gateway{}, fmt.Errorf("%s: %w", what, err)
			}
			nodes = append(nodes, n)
		}
		var cur *egressObject
		others := make([]egress.Gateway, 0, len(gwObjs))
		for _, o := range gwObjs {
			if o.Spec.Name == g.Name {
				cur = o
			}
			others = append(others, o.Spec)
		}
		if cur != nil && !update {
			return egress.Gateway{}, fmt.Errorf("%s: %w", what, store.ErrExists)
		}
		if cur == nil && update {
			return egress.Gateway{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
		}
		if err := egress.Check(g, parent, nodes, others); err != nil {
			return egress.Gateway{}, fmt.Errorf("%s: %w", what, egressErr(err))
		}
		if update {
			cur.Spec = g
			_, err = update_(ctx, s, cur)
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				continue
			}
		} else {
			o := &egressObject{header: s.newHeader(resEgress, s.egressName(g.VPC, g.Name), LabelVPC, g.VPC), Spec: g}
			o.Metadata.OwnerReferences = append(o.Metadata.OwnerReferences, ownerRef(resVPC, &vo.Metadata))
			_, err = create(ctx, s, resEgress, o)
			if apierrors.IsAlreadyExists(err) {
				return egress.Gateway{}, fmt.Errorf("%s: %w", what, store.ErrExists)
			}
		}
		if err != nil {
			return egress.Gateway{}, wrap(what, err)
		}
		return g, nil
	}
	return egress.Gateway{}, try.Err()
}

func update_(ctx context.Context, s *Store, o *egressObject) (*egressObject, error) {
	return update(ctx, s, resEgress, o, false)
}

// GetEgressGateway implements store.EgressStore.
func (s *Store) GetEgressGateway(ctx context.Context, vpcName, name string) (egress.Gateway, error) {
	o, err := get[egressObject](ctx, s, resEgress, s.egressName(vpcName, name))
	if err != nil {
		return egress.Gateway{}, wrap(fmt.Sprintf("get egress gateway %q", vpcName+"/"+name), err)
	}
	return o.Spec, nil
}

// ListEgressGateways implements store.EgressStore.
func (s *Store) ListEgressGateways(ctx context.Context, vpcName string) ([]egress.Gateway, int64, error) {
	what := fmt.Sprintf("list egress gateways of vpc %q", vpcName)
	objs, rv, err := list[egressObject](ctx, s, resEgress, s.endpointSelector(vpcName), 0)
	if err != nil {
		return nil, 0, wrap(what, err)
	}
	rev, err := parseRV(rv)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", what, err)
	}
	out := make([]egress.Gateway, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.Spec)
	}
	slices.SortFunc(out, func(a, b egress.Gateway) int { return strings.Compare(a.Key(), b.Key()) })
	return out, rev, nil
}

// DeleteEgressGateway implements store.EgressStore.
func (s *Store) DeleteEgressGateway(ctx context.Context, vpcName, name string) error {
	what := fmt.Sprintf("delete egress gateway %q", vpcName+"/"+name)
	err := s.ri(resEgress).Delete(ctx, s.egressName(vpcName, name), deleteNow)
	if err != nil {
		return wrap(what, err)
	}
	return nil
}

// WatchEgressGateways implements store.EgressStore.
func (s *Store) WatchEgressGateways(ctx context.Context, fromRevision int64) <-chan store.EgressEvent {
	ch := make(chan store.EgressEvent)
	go watch(ctx, s, resEgress, s.selector(), fromRevision, "watch egress gateways", func(typ store.EventType, rev int64, o *egressObject) (store.EgressEvent, error) {
		return store.EgressEvent{Type: typ, Gateway: o.Spec, Revision: rev}, nil
	}, func(err error) store.EgressEvent {
		return store.EgressEvent{Type: store.EventError, Err: err}
	}, ch)
	return ch
}

// LabelBeat marks a heartbeat Lease with its node's name.
const LabelBeat = "genie.cni.io/beat"

// Heartbeats are coordination.k8s.io Leases named "<scope>.beat.<node>"
// ("genie-beat.<node>" unscoped) in Options.LeaseNamespace, labelled
// LabelBeat=<node>; a Beat updates the Lease's renewTime (one API write).
func (s *Store) beatLease(node string) string {
	if s.scope != "" {
		return s.scope + ".beat." + node
	}
	return "genie-beat." + node
}

func (s *Store) leases() (coordinationv1.LeaseInterface, error) {
	s.beatMu.Lock()
	defer s.beatMu.Unlock()
	if s.coord == nil {
		c, err := coordinationv1.NewForConfigAndClient(s.cfg, s.hc)
		if err != nil {
			return nil, err
		}
		s.coord = c
	}
	return s.coord.Leases(s.leaseNamespace()), nil
}

func (s *Store) beatSelector() string {
	sel := LabelBeat
	if s.scope != "" {
		sel += "," + LabelScope + "=" + s.scope
	} else {
		sel += ",!" + LabelScope
	}
	return sel
}

// Beat implements store.BeatStore.
func (s *Store) Beat(ctx context.Context, node string) error {
	what := fmt.Sprintf("heartbeat of node %q", node)
	li, err := s.leases()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	now := metav1.NewMicroTime(time.Now())
	name := s.beatLease(node)
	s.beatMu.Lock()
	l := s.beats[name]
	s.beatMu.Unlock()
	if l != nil {
		l = l.DeepCopy()
		l.Spec.RenewTime = &now
		nl, err := li.Update(ctx, l, metav1.UpdateOptions{})
		if err == nil {
			s.beatMu.Lock()
			s.beats[name] = nl
			s.beatMu.Unlock()
			return nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return wrap(what, err)
		}
	}
	cur, err := li.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		labels := map[string]string{LabelBeat: node}
		if s.scope != "" {
			labels[LabelScope] = s.scope
		}
		holder := node
		cur, err = li.Create(ctx, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec: coordv1.LeaseSpec{HolderIdentity: &holder, RenewTime: &now}}, metav1.CreateOptions{})
	case err == nil:
		cur.Spec.RenewTime = &now
		cur, err = li.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return wrap(what, err)
	}
	s.beatMu.Lock()
	s.beats[name] = cur
	s.beatMu.Unlock()
	return nil
}

// ListBeats implements store.BeatStore.
func (s *Store) ListBeats(ctx context.Context) ([]store.Beat, int64, error) {
	li, err := s.leases()
	if err != nil {
		return nil, 0, fmt.Errorf("list heartbeats: %w", err)
	}
	l, err := li.List(ctx, metav1.ListOptions{LabelSelector: s.beatSelector()})
	if err != nil {
		return nil, 0, wrap("list heartbeats", err)
	}
	rev, err := parseRV(l.ResourceVersion)
	if err != nil {
		return nil, 0, fmt.Errorf("list heartbeats: %w", err)
	}
	out := make([]store.Beat, 0, len(l.Items))
	for _, it := range l.Items {
		b := store.Beat{Node: it.Labels[LabelBeat]}
		if it.Spec.RenewTime != nil {
			b.Time = it.Spec.RenewTime.Time
		}
		out = append(out, b)
	}
	return out, rev, nil
}

// WatchBeats implements store.BeatStore with a plain watch of the Leases
// (a consumer relists after its EventError).
func (s *Store) WatchBeats(ctx context.Context, fromRevision int64) <-chan store.BeatEvent {
	ch := make(chan store.BeatEvent)
	go func() {
		defer close(ch)
		fail := func(err error) {
			select {
			case ch <- store.BeatEvent{Type: store.EventError, Err: fmt.Errorf("watch heartbeats: %w", err)}:
			case <-ctx.Done():
			}
		}
		li, err := s.leases()
		if err != nil {
			fail(err)
			return
		}
		o := metav1.ListOptions{LabelSelector: s.beatSelector()}
		if fromRevision > 0 {
			o.ResourceVersion = fmt.Sprint(fromRevision)
		}
		w, err := li.Watch(ctx, o)
		if err != nil {
			fail(err)
			return
		}
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					fail(errors.New("watch closed"))
					return
				}
				l, isLease := ev.Object.(*coordv1.Lease)
				if !isLease {
					fail(fmt.Errorf("watch event %s", ev.Type))
					return
				}
				out := store.BeatEvent{Node: l.Labels[LabelBeat]}
				out.Revision, _ = parseRV(l.ResourceVersion)
				switch ev.Type {
				case kwatch.Added, kwatch.Modified:
					out.Type = store.EventPut
				case kwatch.Deleted:
					out.Type = store.EventDelete
				default:
					continue
				}
				select {
				case ch <- out:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return ch
}

// DeleteBeat implements store.BeatStore.
func (s *Store) DeleteBeat(ctx context.Context, node string) error {
	li, err := s.leases()
	if err != nil {
		return fmt.Errorf("delete heartbeat of node %q: %w", node, err)
	}
	if err := li.Delete(ctx, s.beatLease(node), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return wrap(fmt.Sprintf("delete heartbeat of node %q", node), err)
	}
	return nil
}

// beatState is the Store's heartbeat client and last Leases written.
type beatState struct {
	beatMu sync.Mutex
	coord  *coordinationv1.CoordinationV1Client
	beats  map[string]*coordv1.Lease
}
