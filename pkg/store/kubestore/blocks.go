package kubestore

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// ClaimBlock implements store.Store.
func (s *Store) ClaimBlock(ctx context.Context, vpcName, subnetName, node string) (store.Block, error) {
	return s.claim(ctx, vpcName, subnetName, node, netip.Addr{})
}

// ClaimBlockContaining implements store.Store.
func (s *Store) ClaimBlockContaining(ctx context.Context, vpcName, subnetName, node string, addr netip.Addr) (store.Block, error) {
	if !addr.IsValid() {
		return store.Block{}, fmt.Errorf("claim block of subnet %q for node %q: no address given: %w", vpcName+"/"+subnetName, node, vpc.ErrInvalid)
	}
	return s.claim(ctx, vpcName, subnetName, node, addr)
}

// claim creates the IPAMBlock object of the wanted block: its name is
// derived from the block's CIDR, so the API server's create-if-absent is
// the atomic claim. Blocks of a subnet are aligned and all of the subnet's
// BlockPrefixLen, so distinct names never overlap. A block naming another
// subnet UID is a leftover of an earlier subnet of the same name and is
// deleted.
func (s *Store) claim(ctx context.Context, vpcName, subnetName, node string, addr netip.Addr) (store.Block, error) {
	what := fmt.Sprintf("claim block of subnet %q for node %q", vpcName+"/"+subnetName, node)
	if err := vpc.ValidateNodeName(node); err != nil {
		return store.Block{}, fmt.Errorf("%s: %w", what, err)
	}
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		so, err := get[subnetObject](ctx, s, resSubnet, s.subnetName(vpcName, subnetName))
		if apierrors.IsNotFound(err) {
			return store.Block{}, noSubnet(what, vpcName, subnetName)
		}
		if err != nil {
			return store.Block{}, wrap(what, err)
		}
		sn, err := toSubnet(so)
		if err != nil {
			return store.Block{}, fmt.Errorf("%s: %w", what, err)
		}
		if so.Status.Deleting {
			return store.Block{}, fmt.Errorf("%s: %s is being deleted: %w", what, sn, store.ErrConflict)
		}
		if err := s.checkSubnet(ctx, what, so, sn); err != nil {
			return store.Block{}, err
		}
		objs, _, err := list[blockObject](ctx, s, resBlock, s.selector(LabelVPC, vpcName, LabelSubnet, subnetName), 0)
		if err != nil {
			return store.Block{}, wrap(what+": list blocks", err)
		}
		held := make(map[netip.Prefix]string, len(objs))
		for _, b := range objs {
			if b.Spec.SubnetUID != string(so.Metadata.UID) {
				err := s.delUID(ctx, resBlock, b.Metadata.Name, b.Metadata.UID)
				if apierrors.IsForbidden(err) {
					// Another node's stale block, which admission does
					// not let this agent delete: leave its range alone.
					if p, perr := netip.ParsePrefix(b.Spec.CIDR); perr == nil {
						held[p] = b.Spec.Node
					}
					continue
				}
				if err != nil {
					return store.Block{}, wrap(fmt.Sprintf("%s: delete stale block %s", what, b.Spec.CIDR), err)
				}
				continue
			}
			if p, err := netip.ParsePrefix(b.Spec.CIDR); err == nil {
				held[p] = b.Spec.Node
			}
		}
		var want netip.Prefix
		if addr.IsValid() {
			if !sn.CIDR.Contains(addr) {
				return store.Block{}, fmt.Errorf("%s: %s is outside %s: %w", what, addr, sn, vpc.ErrInvalid)
			}
			want = netip.PrefixFrom(addr, sn.BlockPrefixLen).Masked()
			switch owner, ok := held[want]; {
			case ok && owner == node:
				return store.Block{VPC: vpcName, Subnet: subnetName, CIDR: want, Node: node}, nil
			case ok:
				return store.Block{}, fmt.Errorf("%s: block %s containing %s is held by node %q: %w", what, want, addr, owner, store.ErrConflict)
			}
		} else if want = firstFreeBlock(sn, held); !want.IsValid() {
			return store.Block{}, fmt.Errorf("%s: all %d blocks of /%d in %s are claimed: %w", what, len(held), sn.BlockPrefixLen, sn, store.ErrSubnetFull)
		}
		o := &blockObject{
			header: s.newHeader(resBlock, s.blockName(vpcName, subnetName, want), LabelVPC, vpcName, LabelSubnet, subnetName),
			Spec:   blockSpec{VPC: vpcName, Subnet: subnetName, SubnetUID: string(so.Metadata.UID), CIDR: want.String(), Node: node},
		}
		o.Metadata.OwnerReferences = []metav1.OwnerReference{ownerRef(resSubnet, &so.Metadata)}
		o, err = create(ctx, s, resBlock, o)
		if apierrors.IsAlreadyExists(err) {
			continue // taken meanwhile: look again
		}
		if err != nil {
			return store.Block{}, wrap(fmt.Sprintf("%s: create block %s", what, want), err)
		}
		// A subnet deleted meanwhile would leave the block behind: check
		// and withdraw (DeleteSubnet deletes blocks after the subnet).
		cur, err := getOpt[subnetObject](ctx, s, resSubnet, so.Metadata.Name)
		if err != nil || cur == nil || cur.Metadata.UID != so.Metadata.UID || cur.Status.Deleting {
			_ = s.delUID(context.WithoutCancel(ctx), resBlock, o.Metadata.Name, o.Metadata.UID)
			if err != nil {
				return store.Block{}, wrap(what, err)
			}
			return store.Block{}, fmt.Errorf("%s: subnet deleted meanwhile: %w", what, store.ErrNotFound)
		}
		return store.Block{VPC: vpcName, Subnet: subnetName, CIDR: want, Node: node}, nil
	}
	return store.Block{}, try.Err()
}

// firstFreeBlock returns the lowest block of sn not in held with at least
// one assignable address, or the zero prefix.
func firstFreeBlock(sn vpc.Subnet, held map[netip.Prefix]string) netip.Prefix {
	step := uint64(1) << (32 - sn.BlockPrefixLen)
	size := uint64(1) << (32 - sn.CIDR.Bits())
	a4 := sn.CIDR.Addr().As4()
	base := uint64(a4[0])<<24 | uint64(a4[1])<<16 | uint64(a4[2])<<8 | uint64(a4[3])
	for off := uint64(0); off < size; off += step {
		v := base + off
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), sn.BlockPrefixLen)
		if _, ok := held[p]; ok {
			continue
		}
		free := int(step)
		for _, r := range []netip.Addr{sn.CIDR.Addr(), vpc.LastAddr(sn.CIDR), sn.Gateway} {
			if p.Contains(r) {
				free--
			}
		}
		if free > 0 {
			return p
		}
	}
	return netip.Prefix{}
}

// ReleaseBlock implements store.Store.
func (s *Store) ReleaseBlock(ctx context.Context, vpcName, subnetName string, block netip.Prefix, node string) error {
	what := fmt.Sprintf("release block %s of subnet %q for node %q", block, vpcName+"/"+subnetName, node)
	if !block.IsValid() {
		return fmt.Errorf("%s: no block given: %w", what, vpc.ErrInvalid)
	}
	try := store.NewRetrier(what)
	for try.Next(ctx) {
		o, err := getOpt[blockObject](ctx, s, resBlock, s.blockName(vpcName, subnetName, block))
		if err != nil {
			return wrap(what, err)
		}
		if o == nil {
			return nil
		}
		if o.Spec.Node != node {
			return fmt.Errorf("%s: held by node %q: %w", what, o.Spec.Node, store.ErrConflict)
		}
		err = s.del(ctx, resBlock, &o.Metadata, true)
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return wrap(what, err)
		}
		return nil
	}
	return try.Err()
}

// ListBlocks implements store.Store.
func (s *Store) ListBlocks(ctx context.Context, vpcName, subnetName string) ([]store.Block, error) {
	what := fmt.Sprintf("list blocks of subnet %q", vpcName+"/"+subnetName)
	var sel string
	switch {
	case vpcName == "":
		sel = s.selector()
	case subnetName == "":
		sel = s.selector(LabelVPC, vpcName)
	default:
		sel = s.selector(LabelVPC, vpcName, LabelSubnet, subnetName)
	}
	objs, _, err := list[blockObject](ctx, s, resBlock, sel, 0)
	if err != nil {
		return nil, wrap(what, err)
	}
	out := make([]store.Block, 0, len(objs))
	for _, o := range objs {
		b, err := toBlock(o)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b store.Block) int {
		if c := strings.Compare(a.VPC, b.VPC); c != 0 {
			return c
		}
		if c := strings.Compare(a.Subnet, b.Subnet); c != 0 {
			return c
		}
		return a.CIDR.Addr().Compare(b.CIDR.Addr())
	})
	return out, nil
}
