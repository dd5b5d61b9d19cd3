package kubestore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/cni-genie/cni-genie/pkg/service"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

var _ store.ServiceStore = (*Store)(nil)

// serviceObject is a VPCService: the service as spec, its resolved
// backends as status (see deploy/crds/genie.cni.io_vpcservices.yaml).
type serviceObject struct {
	header
	Spec   service.Service `json:"spec"`
	Status serviceStatus   `json:"status,omitzero"`
}

type serviceStatus struct {
	// Resolved is set by PutServiceBackends: a record exists, even empty.
	Resolved bool              `json:"resolved,omitempty"`
	Backends []service.Backend `json:"backends,omitempty"`
}

// vipObject is a VPCServiceVIP: the claim of one VIP of a VPC.
type vipObject struct {
	header
	Spec vipSpec `json:"spec"`
}

type vipSpec struct {
	VPC     string `json:"vpc"`
	Service string `json:"service"`
	VIP     string `json:"vip"`
}

// defaultVIPStaleAfter is how old a claim without its service must be before it
// is collected: a claim is made just before its service, so a younger one
// may belong to a create in flight.
const defaultVIPStaleAfter = time.Minute

func (s *Store) serviceName(v, n string) string        { return s.name(v, n) }
func (s *Store) vipName(v string, a netip.Addr) string { return s.name(v, dashed(a)) }

// CreateService implements store.ServiceStore.
//
// The VIP is claimed first (create-if-absent of the VPCServiceVIP named
// after VPC and VIP), then the VPCService is created (named after VPC and
// name, the "name unique in the VPC" rule); a create that fails after its
// claim deletes the claim. An allocated VIP that lost its claim race is
// allocated again from a fresh list.
func (s *Store) CreateService(ctx context.Context, sv service.Service) (service.Service, error) {
	what := fmt.Sprintf("create service %q", sv.Key())
	sv = sv.WithDefaults()
	if err := sv.Validate(); err != nil {
		return service.Service{}, fmt.Errorf("%s: %w", what, err)
	}
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		// The VPC first, then the lists: a subnet whose creation was over
		// when the VPC was read is in the subnet list (see subnetFence).
		vo, err := get[vpcObject](ctx, s, resVPC, s.vpcName(sv.VPC))
		if apierrors.IsNotFound(err) {
			return service.Service{}, noVPC(what, sv.VPC)
		}
		if err != nil {
			return service.Service{}, wrap(what, err)
		}
		if vo.Status.PendingSubnet != nil {
			if err := s.rollForward(ctx, what, vo); err != nil {
				return service.Service{}, err
			}
			continue
		}
		var subnets []*subnetObject
		var svcs []*serviceObject
		var vips []*vipObject
		var serr, sverr, cerr error
		parallel(
			func() error {
				subnets, _, serr = list[subnetObject](ctx, s, resSubnet, s.selector(LabelVPC, sv.VPC), 0)
				return nil
			},
			func() error {
				svcs, _, sverr = list[serviceObject](ctx, s, resService, s.selector(LabelVPC, sv.VPC), 0)
				return nil
			},
			func() error {
				vips, _, cerr = list[vipObject](ctx, s, resVIP, s.selector(LabelVPC, sv.VPC), 0)
				return nil
			},
		)
		if err := firstErr(serr, sverr, cerr); err != nil {
			return service.Service{}, wrap(what, err)
		}
		parent, err := s.toVPC(vo)
		if err != nil {
			return service.Service{}, fmt.Errorf("%s: %w", what, err)
		}
		var sns []vpc.Subnet
		for _, o := range subnets {
			sn, err := toSubnet(o)
			if err != nil {
				return service.Service{}, fmt.Errorf("%s: %w", what, err)
			}
			sns = append(sns, sn)
		}
		live := map[string]netip.Addr{} // service name -> VIP
		for _, o := range svcs {
			if o.Spec.Name == sv.Name {
				return service.Service{}, fmt.Errorf("%s: %w", what, store.ErrExists)
			}
			live[o.Spec.Name] = o.Spec.VIP
		}
		// The VIPs held: those of the services, and the claims of creates
		// in flight. Stale claims are collected.
		others := make([]service.Service, 0, len(svcs)+len(vips))
		for _, o := range svcs {
			others = append(others, o.Spec)
		}
		for _, c := range vips {
			a, err := netip.ParseAddr(c.Spec.VIP)
			if err != nil || live[c.Spec.Service] == a {
				continue // an unparsable claim holds nothing; a live one is listed
			}
			if s.vipStale(c) {
				_ = s.delUID(ctx, resVIP, c.Metadata.Name, c.Metadata.UID)
				continue
			}
			others = append(others, service.Service{VPC: sv.VPC, Name: c.Spec.Service, VIP: a})
		}
		out := sv
		if !out.VIP.IsValid() {
			if out.VIP, err = service.AllocateVIP(parent.CIDR, sns, others); err != nil {
				return service.Service{}, fmt.Errorf("%s: %w", what, serviceErr(err))
			}
		}
		if err := service.Check(out, parent, sns, others); err != nil {
			return service.Service{}, fmt.Errorf("%s: %w", what, serviceErr(err))
		}

		claim, err := create(ctx, s, resVIP, &vipObject{header: s.newHeader(resVIP, s.vipName(sv.VPC, out.VIP), LabelVPC, sv.VPC),
			Spec: vipSpec{VPC: sv.VPC, Service: sv.Name, VIP: out.VIP.String()}})
		if apierrors.IsAlreadyExists(err) {
			if sv.VIP.IsValid() {
				// The requested VIP: someone claimed it since the list.
				c, gerr := getOpt[vipObject](ctx, s, resVIP, s.vipName(sv.VPC, out.VIP))
				if gerr == nil && c != nil && c.Spec.Service != sv.Name && !s.vipStale(c) {
					return service.Service{}, fmt.Errorf("%s: vip %s is held by service %q: %w", what, out.VIP, sv.VPC+"/"+c.Spec.Service, store.ErrConflict)
				}
			}
			continue // lost an allocation race, or a stale claim: again
		}
		if err != nil {
			return service.Service{}, wrap(what+": claim vip", err)
		}
		if err := s.subnetFence(ctx, vo); err != nil {
			_ = s.delUID(context.WithoutCancel(ctx), resVIP, claim.Metadata.Name, claim.Metadata.UID)
			if apierrors.IsConflict(err) {
				continue // a subnet creation (or another service) moved the VPC: check again
			}
			if apierrors.IsNotFound(err) {
				return service.Service{}, noVPC(what, sv.VPC)
			}
			return service.Service{}, wrap(what+": order against subnet creation", err)
		}
		o := &serviceObject{header: s.newHeader(resService, s.serviceName(sv.VPC, sv.Name), LabelVPC, sv.VPC), Spec: out}
		o.Metadata.OwnerReferences = append(o.Metadata.OwnerReferences, ownerRef(resVPC, &vo.Metadata))
		if _, err = create(ctx, s, resService, o); err != nil {
			_ = s.delUID(context.WithoutCancel(ctx), resVIP, claim.Metadata.Name, claim.Metadata.UID)
			if apierrors.IsAlreadyExists(err) {
				return service.Service{}, fmt.Errorf("%s: %w", what, store.ErrExists)
			}
			return service.Service{}, wrap(what, err)
		}
		return out, nil
	}
	return service.Service{}, try.Err()
}

// subnetFence orders a service creation against subnet creations, so a
// subnet never covers a VIP: after its VIP claim exists, CreateService
// bumps status.services of the VPC object vo it read (before listing the
// subnets) with vo's resourceVersion as precondition. CreateSubnet writes
// its pending entry under the same kind of precondition after listing the
// claims. The two writes are ordered: if the fence came first, the subnet
// creation read the VPC after it and so listed the claim; if the pending
// entry came first, the fence's precondition proves the VPC was read
// after it, and a pending entry is cleared only once its Subnet exists,
// so the subnet list (read after the VPC) held it. Either way the later
// one sees the other and refuses.
func (s *Store) subnetFence(ctx context.Context, vo *vpcObject) error {
	next := *vo
	next.Status.Services++
	upd, err := update(ctx, s, resVPC, &next, true)
	if err != nil {
		return err
	}
	if upd.Status.Services != next.Status.Services || upd.Metadata.ResourceVersion == vo.Metadata.ResourceVersion {
		// A VPC CRD older than status.services prunes it: the write is
		// a no-op and orders nothing.
		return fmt.Errorf("vpc %q: status.services was not stored (the VPC CRD predates it: apply deploy/crds)", vo.Metadata.Name)
	}
	return nil
}

// checkSubnetVIPs refuses subnet sn if it covers a VIP held in its VPC:
// a service's, or a claim of a creation in flight (a stale claim holds
// nothing).
func (s *Store) checkSubnetVIPs(ctx context.Context, sn vpc.Subnet) error {
	var svcs []*serviceObject
	var vips []*vipObject
	var sverr, cerr error
	parallel(
		func() error {
			svcs, _, sverr = list[serviceObject](ctx, s, resService, s.selector(LabelVPC, sn.VPC), 0)
			return nil
		},
		func() error {
			vips, _, cerr = list[vipObject](ctx, s, resVIP, s.selector(LabelVPC, sn.VPC), 0)
			return nil
		},
	)
	if err := firstErr(sverr, cerr); err != nil {
		return wrap("list services", err)
	}
	held := make([]service.Service, 0, len(svcs)+len(vips))
	for _, o := range svcs {
		held = append(held, o.Spec)
	}
	for _, c := range vips {
		a, err := netip.ParseAddr(c.Spec.VIP)
		if err != nil || s.vipStale(c) {
			continue
		}
		held = append(held, service.Service{VPC: sn.VPC, Name: c.Spec.Service, VIP: a})
	}
	return serviceErr(service.CheckSubnet(sn, held))
}

// vipStale reports whether claim c may be collected: old enough that its
// create is over, and its service does not hold it (the caller checked).
func (s *Store) vipStale(c *vipObject) bool {
	d := s.vipStaleAfter
	if d == 0 {
		d = defaultVIPStaleAfter
	}
	return time.Since(c.Metadata.CreationTimestamp.Time) > d
}

// serviceErr maps service.ErrConflict to store.ErrConflict.
func serviceErr(err error) error {
	if errors.Is(err, service.ErrConflict) {
		return fmt.Errorf("%w: %w", err, store.ErrConflict)
	}
	return err
}

// GetService implements store.ServiceStore.
func (s *Store) GetService(ctx context.Context, vpcName, name string) (service.Service, error) {
	what := fmt.Sprintf("get service %q", vpcName+"/"+name)
	o, err := get[serviceObject](ctx, s, resService, s.serviceName(vpcName, name))
	if err != nil {
		return service.Service{}, wrap(what, err)
	}
	return o.Spec, nil
}

func (s *Store) listServices(ctx context.Context, vpcName string) ([]*serviceObject, int64, error) {
	objs, rv, err := list[serviceObject](ctx, s, resService, s.endpointSelector(vpcName), 0)
	if err != nil {
		return nil, 0, err
	}
	rev, err := parseRV(rv)
	if err != nil {
		return nil, 0, err
	}
	slices.SortFunc(objs, func(a, b *serviceObject) int { return strings.Compare(a.Spec.Key(), b.Spec.Key()) })
	return objs, rev, nil
}

// ListServices implements store.ServiceStore.
func (s *Store) ListServices(ctx context.Context, vpcName string) ([]service.Service, int64, error) {
	objs, rev, err := s.listServices(ctx, vpcName)
	if err != nil {
		return nil, 0, wrap(fmt.Sprintf("list services of vpc %q", vpcName), err)
	}
	out := make([]service.Service, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.Spec)
	}
	return out, rev, nil
}

// DeleteService implements store.ServiceStore: the service (and with it
// its backends, its status), then its VIP claim.
func (s *Store) DeleteService(ctx context.Context, vpcName, name string) error {
	what := fmt.Sprintf("delete service %q", vpcName+"/"+name)
	o, err := get[serviceObject](ctx, s, resService, s.serviceName(vpcName, name))
	if err != nil {
		return wrap(what, err)
	}
	if err := s.del(ctx, resService, &o.Metadata, false); err != nil {
		return wrap(what, err)
	}
	c, err := getOpt[vipObject](ctx, s, resVIP, s.vipName(vpcName, o.Spec.VIP))
	if err == nil && c != nil && c.Spec.Service == name {
		err = s.delUID(ctx, resVIP, c.Metadata.Name, c.Metadata.UID)
	}
	if err != nil {
		// The service is gone; its claim is collected when stale.
		return wrap(what+": release vip "+o.Spec.VIP.String(), err)
	}
	return nil
}

// PutServiceBackends implements store.ServiceStore: a status update of
// the service, so the record cannot outlive it.
func (s *Store) PutServiceBackends(ctx context.Context, b service.Backends) error {
	what := fmt.Sprintf("put backends of service %q", b.Key())
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		o, err := get[serviceObject](ctx, s, resService, s.serviceName(b.VPC, b.Service))
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("%s: service %q: %w", what, b.Key(), store.ErrNotFound)
		}
		if err != nil {
			return wrap(what, err)
		}
		o.Status = serviceStatus{Resolved: true, Backends: b.Backends}
		_, err = update(ctx, s, resService, o, true)
		if apierrors.IsConflict(err) {
			continue
		}
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("%s: service %q: %w", what, b.Key(), store.ErrNotFound)
		}
		if err != nil {
			return wrap(what, err)
		}
		return nil
	}
	return try.Err()
}

// ListServiceBackends implements store.ServiceStore.
func (s *Store) ListServiceBackends(ctx context.Context, vpcName string) ([]service.Backends, int64, error) {
	objs, rev, err := s.listServices(ctx, vpcName)
	if err != nil {
		return nil, 0, wrap(fmt.Sprintf("list service backends of vpc %q", vpcName), err)
	}
	var out []service.Backends
	for _, o := range objs {
		if o.Status.Resolved {
			out = append(out, backendsOf(o))
		}
	}
	return out, rev, nil
}

func backendsOf(o *serviceObject) service.Backends {
	return service.Backends{VPC: o.Spec.VPC, Service: o.Spec.Name, Backends: o.Status.Backends}
}

// WatchServices implements store.ServiceStore with one watch of the
// VPCServices: a put of an unresolved object is a service put (a create:
// the status subresource drops status on create), of a resolved one a
// backends put (the spec is immutable), a delete the delete
// of the service and, if it had one, of its backend record.
func (s *Store) WatchServices(ctx context.Context, vpcName string, fromRevision int64) <-chan store.ServiceEvent {
	raw := make(chan []store.ServiceEvent)
	go watch(ctx, s, resService, s.endpointSelector(vpcName), fromRevision, fmt.Sprintf("watch services of vpc %q", vpcName),
		func(typ store.EventType, rev int64, o *serviceObject) ([]store.ServiceEvent, error) {
			sv, b := o.Spec, backendsOf(o)
			svEv := store.ServiceEvent{Type: typ, Service: &sv, Revision: rev}
			bEv := store.ServiceEvent{Type: typ, Backends: &b, Revision: rev}
			switch {
			case typ == store.EventDelete && o.Status.Resolved:
				return []store.ServiceEvent{svEv, bEv}, nil
			case typ == store.EventDelete:
				return []store.ServiceEvent{svEv}, nil
			case !o.Status.Resolved:
				return []store.ServiceEvent{svEv}, nil
			default:
				return []store.ServiceEvent{bEv}, nil
			}
		}, func(err error) []store.ServiceEvent {
			return []store.ServiceEvent{{Type: store.EventError, Err: err}}
		}, raw)
	ch := make(chan store.ServiceEvent)
	go func() {
		defer close(ch)
		for evs := range raw {
			for _, ev := range evs {
				select {
				case ch <- ev:
				case <-ctx.Done():
					for range raw {
					}
					return
				}
			}
		}
	}()
	return ch
}
