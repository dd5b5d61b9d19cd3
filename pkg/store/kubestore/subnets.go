package kubestore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// CreateSubnet implements store.Store.
//
// The parent VPC's status is the per-VPC serialization point: the creator
// reads the VPC (resourceVersion R, no pendingSubnet), lists the siblings,
// checks overlap, then writes status.pendingSubnet with R as
// precondition. That write succeeds only if no other creation started
// since R, and every creation before R has materialized its Subnet (a
// pendingSubnet is cleared only after its Subnet exists), so the siblings
// listed were complete. The pending entry holds the whole subnet, so any
// client that finds it (a concurrent creator, DeleteVPC) can finish it:
// an interrupted creation never blocks the VPC.
func (s *Store) CreateSubnet(ctx context.Context, sn vpc.Subnet) (vpc.Subnet, error) {
	what := fmt.Sprintf("create subnet %q", sn.Key())
	sn = sn.WithDefaults()
	if err := vpc.ValidateName(sn.VPC); err != nil {
		return vpc.Subnet{}, fmt.Errorf("%s: vpc: %w", what, err)
	}
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		vo, err := get[vpcObject](ctx, s, resVPC, s.vpcName(sn.VPC))
		if apierrors.IsNotFound(err) {
			return vpc.Subnet{}, noVPC(what, sn.VPC)
		}
		if err != nil {
			return vpc.Subnet{}, wrap(what, err)
		}
		if vo.Status.PendingSubnet != nil {
			if err := s.rollForward(ctx, what, vo); err != nil {
				return vpc.Subnet{}, err
			}
			continue
		}
		parent, err := s.toVPC(vo)
		if err != nil {
			return vpc.Subnet{}, fmt.Errorf("%s: %w", what, err)
		}
		if err := sn.Validate(parent); err != nil {
			return vpc.Subnet{}, fmt.Errorf("%s: %w", what, err)
		}
		objs, _, err := list[subnetObject](ctx, s, resSubnet, s.selector(LabelVPC, sn.VPC), 0)
		if err != nil {
			return vpc.Subnet{}, wrap(what+": list subnets", err)
		}
		siblings := make([]vpc.Subnet, 0, len(objs))
		for _, o := range objs {
			if o.Spec.Name == sn.Name {
				return vpc.Subnet{}, fmt.Errorf("%s: %w", what, store.ErrExists)
			}
			x, err := toSubnet(o)
			if err != nil {
				return vpc.Subnet{}, fmt.Errorf("%s: %w", what, err)
			}
			siblings = append(siblings, x)
		}
		if err := vpc.CheckOverlap(sn, siblings); err != nil {
			return vpc.Subnet{}, fmt.Errorf("%s: %w: %w", what, err, store.ErrConflict)
		}
		// After the VPC read: a service whose fence preceded it has its
		// claim listed here (subnetFence).
		if err := s.checkSubnetVIPs(ctx, sn); err != nil {
			return vpc.Subnet{}, fmt.Errorf("%s: %w", what, err)
		}
		p := &pendingSubnet{Name: sn.Name, CIDR: sn.CIDR.String(), Gateway: sn.Gateway.String(),
			BlockPrefixLen: sn.BlockPrefixLen, Token: randomToken()}
		vo.Status.PendingSubnet = p
		vo, err = update(ctx, s, resVPC, vo, true)
		if apierrors.IsConflict(err) {
			continue
		}
		if apierrors.IsNotFound(err) {
			return vpc.Subnet{}, noVPC(what, sn.VPC)
		}
		if err != nil {
			return vpc.Subnet{}, wrap(what+": reserve", err)
		}
		merr := s.materialize(ctx, what, vo, p)
		if err := s.clearPending(ctx, what, vo, p.Token); err != nil {
			return vpc.Subnet{}, err
		}
		if merr != nil {
			return vpc.Subnet{}, merr
		}
		return sn, nil
	}
	return vpc.Subnet{}, try.Err()
}

// materialize creates the Subnet object of p. A subnet of that name
// created from the same pending entry (same token) is success; one from
// elsewhere is ErrExists.
func (s *Store) materialize(ctx context.Context, what string, vo *vpcObject, p *pendingSubnet) error {
	v := s.unscope(vo.Metadata.Name)
	o := &subnetObject{header: s.newHeader(resSubnet, s.subnetName(v, p.Name), LabelVPC, v),
		Spec: subnetSpec{VPC: v, Name: p.Name, CIDR: p.CIDR, Gateway: p.Gateway, BlockPrefixLen: p.BlockPrefixLen}}
	o.Metadata.Annotations = map[string]string{annotationToken: p.Token}
	o.Metadata.OwnerReferences = []metav1.OwnerReference{ownerRef(resVPC, &vo.Metadata)}
	_, err := create(ctx, s, resSubnet, o)
	if apierrors.IsAlreadyExists(err) {
		cur, gerr := get[subnetObject](ctx, s, resSubnet, o.Metadata.Name)
		if gerr == nil && cur.Metadata.Annotations[annotationToken] == p.Token {
			return nil
		}
		return fmt.Errorf("%s: %w", what, store.ErrExists)
	}
	if err != nil {
		return wrap(what+": create subnet object", err)
	}
	return nil
}

// rollForward finishes the pending subnet creation found in vo.
func (s *Store) rollForward(ctx context.Context, what string, vo *vpcObject) error {
	p := vo.Status.PendingSubnet
	if err := s.materialize(ctx, what, vo, p); err != nil && !errors.Is(err, store.ErrExists) {
		return err
	}
	return s.clearPending(ctx, what, vo, p.Token)
}

// clearPending removes the pending entry with token from the VPC's status
// if it is still there.
func (s *Store) clearPending(ctx context.Context, what string, vo *vpcObject, token string) error {
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		if vo.Status.PendingSubnet == nil || vo.Status.PendingSubnet.Token != token {
			return nil
		}
		vo.Status.PendingSubnet = nil
		_, err := update(ctx, s, resVPC, vo, true)
		if err == nil || apierrors.IsNotFound(err) {
			return nil
		}
		if !apierrors.IsConflict(err) {
			return wrap(what+": clear pending subnet", err)
		}
		vo, err = get[vpcObject](ctx, s, resVPC, vo.Metadata.Name)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return wrap(what, err)
		}
	}
	return try.Err()
}

// GetSubnet implements store.Store.
func (s *Store) GetSubnet(ctx context.Context, vpcName, name string) (vpc.Subnet, error) {
	what := fmt.Sprintf("get subnet %q", vpcName+"/"+name)
	o, err := get[subnetObject](ctx, s, resSubnet, s.subnetName(vpcName, name))
	if err != nil {
		return vpc.Subnet{}, wrap(what, err)
	}
	sn, err := toSubnet(o)
	if err != nil {
		return vpc.Subnet{}, fmt.Errorf("%s: %w", what, err)
	}
	if err := s.checkSubnet(ctx, what, o, sn); err != nil {
		return vpc.Subnet{}, err
	}
	return sn, nil
}

// ListSubnets implements store.Store.
func (s *Store) ListSubnets(ctx context.Context, vpcName string) ([]vpc.Subnet, error) {
	what := fmt.Sprintf("list subnets of vpc %q", vpcName)
	sel := s.selector()
	if vpcName != "" {
		sel = s.selector(LabelVPC, vpcName)
	}
	objs, _, err := list[subnetObject](ctx, s, resSubnet, sel, 0)
	if err != nil {
		return nil, wrap(what, err)
	}
	out := make([]vpc.Subnet, 0, len(objs))
	for _, o := range objs {
		sn, err := toSubnet(o)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, sn)
	}
	slices.SortFunc(out, func(a, b vpc.Subnet) int { return strings.Compare(a.Key(), b.Key()) })
	return out, nil
}

// DeleteSubnet implements store.Store. It fences first (status.deleting,
// written with the subnet's resourceVersion), then looks for endpoints,
// then deletes with the fenced resourceVersion. PutEndpoint re-reads the
// subnet after creating an endpoint and withdraws it if the fence is up,
// so an endpoint created concurrently is either seen here or withdrawn.
func (s *Store) DeleteSubnet(ctx context.Context, vpcName, name string) error {
	what := fmt.Sprintf("delete subnet %q", vpcName+"/"+name)
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		o, err := get[subnetObject](ctx, s, resSubnet, s.subnetName(vpcName, name))
		if err != nil {
			return wrap(what, err)
		}
		if !o.Status.Deleting {
			o.Status.Deleting = true
			if o, err = update(ctx, s, resSubnet, o, true); apierrors.IsConflict(err) {
				continue
			} else if err != nil {
				return wrap(what+": fence", err)
			}
		}
		eps, _, err := list[endpointObject](ctx, s, resEndpoint, s.selector(LabelVPC, vpcName, LabelSubnet, name), 4)
		if err != nil {
			return wrap(what+": list endpoints", err)
		}
		if len(eps) > 0 {
			o.Status.Deleting = false
			_, _ = update(ctx, s, resSubnet, o, true) // best effort: lift the fence
			ids := make([]string, 0, len(eps))
			for _, e := range eps {
				ids = append(ids, e.Spec.ID)
			}
			more := ""
			if len(ids) > 3 {
				ids, more = ids[:3], ", ..."
			}
			return fmt.Errorf("%s: it has endpoint(s) %s%s: %w", what, strings.Join(ids, ", "), more, store.ErrInUse)
		}
		err = s.del(ctx, resSubnet, &o.Metadata, true)
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return wrap(what, err)
		}
		// The subnet's blocks go with it. A block left behind by a crash
		// here names the old subnet's UID and is collected by ClaimBlock.
		blocks, _, err := list[blockObject](ctx, s, resBlock, s.selector(LabelVPC, vpcName, LabelSubnet, name), 0)
		if err != nil {
			return wrap(what+": list blocks", err)
		}
		for _, b := range blocks {
			if b.Spec.SubnetUID != string(o.Metadata.UID) {
				continue
			}
			if err := s.delUID(ctx, resBlock, b.Metadata.Name, b.Metadata.UID); err != nil {
				return wrap(fmt.Sprintf("%s: delete block %s", what, b.Spec.CIDR), err)
			}
		}
		return nil
	}
	return try.Err()
}
