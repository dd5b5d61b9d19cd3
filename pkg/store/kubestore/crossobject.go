package kubestore

import (
	"context"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// checkSubnet enforces the cross-object rules of a subnet on the paths
// that use one (GetSubnet, ClaimBlock): it must lie inside its VPC's CIDR
// and overlap no sibling that takes precedence (see older). CreateSubnet
// guarantees both for the subnets it makes; a Subnet
// object written with kubectl skips it, and admission cannot see the VPC
// or the siblings. Such an object is then ignored by agents (no ADD gets
// an address from it, no block is claimed in it) with an error naming the
// conflict and wrapping vpc.ErrInvalid (CNI code 7), while the older,
// valid subnet keeps working; kubectl get and geniectl subnet list still
// show it, for an operator to delete.
func (s *Store) checkSubnet(ctx context.Context, what string, o *subnetObject, sn vpc.Subnet) error {
	var vo *vpcObject
	var siblings []*subnetObject
	var verr, lerr error
	parallel(
		func() error { vo, verr = get[vpcObject](ctx, s, resVPC, s.vpcName(sn.VPC)); return nil },
		func() error {
			siblings, _, lerr = list[subnetObject](ctx, s, resSubnet, s.selector(LabelVPC, sn.VPC), 0)
			return nil
		},
	)
	if apierrors.IsNotFound(verr) {
		return noVPC(what, sn.VPC)
	}
	if verr != nil {
		return wrap(what+": read vpc", verr)
	}
	if lerr != nil {
		return wrap(what+": list subnets", lerr)
	}
	parent, err := s.toVPC(vo)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := sn.Validate(parent); err != nil {
		return fmt.Errorf("%s: ignored (not made by geniectl?): %w", what, err)
	}
	for _, x := range siblings {
		if x.Metadata.UID == o.Metadata.UID || !older(x, o) {
			continue
		}
		other, err := toSubnet(x)
		if err != nil {
			continue
		}
		if other.CIDR.Overlaps(sn.CIDR) {
			return fmt.Errorf("%s: ignored (not made by geniectl?): %s overlaps the older subnet %q %s: %w",
				what, sn.CIDR, other.Key(), other.CIDR, vpc.ErrInvalid)
		}
	}
	return nil
}

// older reports whether a takes precedence over b: a subnet made by
// CreateSubnet (it carries the token of its reservation) over one made
// otherwise, then the one created first (creation times have a resolution
// of a second), then the name.
func older(a, b *subnetObject) bool {
	ma, mb := a.Metadata.Annotations[annotationToken] != "", b.Metadata.Annotations[annotationToken] != ""
	if ma != mb {
		return ma
	}
	ta, tb := a.Metadata.CreationTimestamp, b.Metadata.CreationTimestamp
	if !ta.Equal(&tb) {
		return ta.Before(&tb)
	}
	return strings.Compare(a.Metadata.Name, b.Metadata.Name) < 0
}
