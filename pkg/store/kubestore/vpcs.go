package kubestore

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// CreateVPC implements store.Store. The VPC object is created first (the
// name is the uniqueness rule), then its VNI is claimed (see ensureVNI).
func (s *Store) CreateVPC(ctx context.Context, v vpc.VPC) (vpc.VPC, error) {
	what := fmt.Sprintf("create vpc %q", v.Name)
	v.VNI = 0
	if err := v.Validate(); err != nil {
		return vpc.VPC{}, fmt.Errorf("%s: %w", what, err)
	}
	o := &vpcObject{header: s.newHeader(resVPC, s.vpcName(v.Name)), Spec: vpcSpec{CIDR: v.CIDR.String(), MTU: v.MTU, QoSClass: v.QoSClass}}
	o, err := create(ctx, s, resVPC, o)
	if apierrors.IsAlreadyExists(err) {
		return vpc.VPC{}, fmt.Errorf("%s: %w", what, store.ErrExists)
	}
	if err != nil {
		return vpc.VPC{}, wrap(what, err)
	}
	o, err = s.ensureVNI(ctx, what, o)
	if err != nil {
		return vpc.VPC{}, err
	}
	return s.toVPC(o)
}

// ensureVNI returns o with its VNI set, claiming the lowest free one if
// it has none yet (a creation in progress or interrupted, or a VPC made
// with kubectl).
//
// A VNIClaim "vni-<n>" names the VPC's UID. A claim is stale when no VPC
// with that UID exists (the VPC was deleted; UIDs never come back) or
// when that VPC's status.vni is set to another VNI (a concurrent
// completer won). Since a claim is created only after its VPC, listing
// claims before VPCs cannot mistake a fresh claim for a stale one. Stale
// claims are deleted (UID precondition), so VNIs stay lowest-free.
func (s *Store) ensureVNI(ctx context.Context, what string, o *vpcObject) (*vpcObject, error) {
	var mine *vniClaimObject // a claim this call created
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		if o.Status.VNI != 0 {
			if mine != nil && mine.Spec.VNI != o.Status.VNI {
				_ = s.delUID(ctx, resVNIClaim, mine.Metadata.Name, mine.Metadata.UID)
			}
			return o, nil
		}
		if mine == nil {
			claims, _, err := list[vniClaimObject](ctx, s, resVNIClaim, s.selector(), 0)
			if err != nil {
				return nil, wrap(what+": list vni claims", err)
			}
			vpcs, _, err := list[vpcObject](ctx, s, resVPC, s.selector(), 0)
			if err != nil {
				return nil, wrap(what+": list vpcs", err)
			}
			owners := make(map[string]uint32, len(vpcs))
			for _, v := range vpcs {
				owners[string(v.Metadata.UID)] = v.Status.VNI
			}
			taken := make(map[uint32]bool, len(claims))
			for _, c := range claims {
				vni, ok := owners[c.Spec.VPCUID]
				if !ok || (vni != 0 && vni != c.Spec.VNI) {
					err := s.delUID(ctx, resVNIClaim, c.Metadata.Name, c.Metadata.UID)
					if apierrors.IsForbidden(err) {
						// An agent (AgentPolicyRules) may not delete
						// claims: leave it to geniectl, skip its VNI.
						taken[c.Spec.VNI] = true
						continue
					}
					if err != nil {
						return nil, wrap(fmt.Sprintf("%s: delete stale vni claim %q", what, c.Metadata.Name), err)
					}
					continue
				}
				taken[c.Spec.VNI] = true
				if c.Spec.VPCUID == string(o.Metadata.UID) && (mine == nil || c.Spec.VNI < mine.Spec.VNI) {
					mine = c // adopt the claim of an interrupted attempt
				}
			}
			if mine == nil {
				n := vpc.MinVNI
				for taken[n] {
					n++
				}
				if n > vpc.MaxVNI {
					return nil, fmt.Errorf("%s: %w", what, store.ErrVNIExhausted)
				}
				c := &vniClaimObject{header: s.newHeader(resVNIClaim, s.vniName(n)),
					Spec: vniClaimSpec{VNI: n, VPC: s.unscope(o.Metadata.Name), VPCUID: string(o.Metadata.UID)}}
				c.Metadata.OwnerReferences = []metav1.OwnerReference{ownerRef(resVPC, &o.Metadata)}
				c, err = create(ctx, s, resVNIClaim, c)
				if apierrors.IsAlreadyExists(err) {
					continue // another creator took n first
				}
				if err != nil {
					return nil, wrap(fmt.Sprintf("%s: claim vni %d", what, n), err)
				}
				mine = c
			}
		}
		next := *o
		next.Status.VNI = mine.Spec.VNI
		upd, err := update(ctx, s, resVPC, &next, true)
		if err == nil {
			return upd, nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return nil, wrap(what+": set vni", err)
		}
		// Changed or gone meanwhile: read it again.
		o, err = get[vpcObject](ctx, s, resVPC, o.Metadata.Name)
		if apierrors.IsNotFound(err) || (err == nil && string(o.Metadata.UID) != mine.Spec.VPCUID) {
			_ = s.delUID(ctx, resVNIClaim, mine.Metadata.Name, mine.Metadata.UID)
			return nil, fmt.Errorf("%s: deleted while its vni was set: %w", what, store.ErrNotFound)
		}
		if err != nil {
			return nil, wrap(what, err)
		}
	}
	return nil, try.Err()
}

// GetVPC implements store.Store.
func (s *Store) GetVPC(ctx context.Context, name string) (vpc.VPC, error) {
	what := fmt.Sprintf("get vpc %q", name)
	o, err := get[vpcObject](ctx, s, resVPC, s.vpcName(name))
	if err != nil {
		return vpc.VPC{}, wrap(what, err)
	}
	if o, err = s.ensureVNI(ctx, what, o); err != nil {
		return vpc.VPC{}, err
	}
	return s.toVPC(o)
}

// ListVPCs implements store.Store.
func (s *Store) ListVPCs(ctx context.Context) ([]vpc.VPC, error) {
	objs, _, err := list[vpcObject](ctx, s, resVPC, s.selector(), 0)
	if err != nil {
		return nil, wrap("list vpcs", err)
	}
	out := make([]vpc.VPC, 0, len(objs))
	for _, o := range objs {
		if o, err = s.ensureVNI(ctx, fmt.Sprintf("list vpcs: vpc %q", o.Metadata.Name), o); err != nil {
			return nil, err
		}
		v, err := s.toVPC(o)
		if err != nil {
			return nil, fmt.Errorf("list vpcs: %w", err)
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b vpc.VPC) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// DeleteVPC implements store.Store. The delete carries the resourceVersion
// read while checking for subnets: a subnet creation passes through the
// VPC's status (pendingSubnet), so one that started after the check makes
// the delete fail with a Conflict and the check runs again.
func (s *Store) DeleteVPC(ctx context.Context, name string) error {
	what := fmt.Sprintf("delete vpc %q", name)
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		o, err := get[vpcObject](ctx, s, resVPC, s.vpcName(name))
		if err != nil {
			return wrap(what, err)
		}
		if o.Status.PendingSubnet != nil {
			if err := s.rollForward(ctx, what, o); err != nil {
				return err
			}
			continue
		}
		subnets, _, err := list[subnetObject](ctx, s, resSubnet, s.selector(LabelVPC, name), 0)
		if err != nil {
			return wrap(what+": list subnets", err)
		}
		if n := len(subnets); n > 0 {
			names := make([]string, 0, n)
			for _, sn := range subnets {
				names = append(names, sn.Spec.Name)
			}
			slices.Sort(names)
			return fmt.Errorf("%s: it has %d subnet(s) (%s): %w", what, n, strings.Join(names, ", "), store.ErrInUse)
		}
		eps, _, err := list[endpointObject](ctx, s, resEndpoint, s.selector(LabelVPC, name), 1)
		if err != nil {
			return wrap(what+": list endpoints", err)
		}
		if len(eps) > 0 {
			return fmt.Errorf("%s: it has endpoint(s) (%q): %w", what, eps[0].Spec.ID, store.ErrInUse)
		}
		err = s.del(ctx, resVPC, &o.Metadata, true)
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return wrap(what, err)
		}
		// Best effort from here: what is left is collected later.
		// Endpoint indexes left by interrupted puts (none has a live
		// endpoint: the VPC had none).
		_ = s.ri(resIndex).DeleteCollection(ctx, deleteNow, metav1.ListOptions{LabelSelector: s.selector(LabelVPC, name)})
		if o.Status.VNI != 0 {
			c, err := getOpt[vniClaimObject](ctx, s, resVNIClaim, s.vniName(o.Status.VNI))
			if err == nil && c != nil && c.Spec.VPCUID == string(o.Metadata.UID) {
				// Best effort: a claim left behind is stale and collected
				// by the next VNI allocation.
				_ = s.delUID(ctx, resVNIClaim, c.Metadata.Name, c.Metadata.UID)
			}
		}
		return nil
	}
	return try.Err()
}
