package ipam

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cni-genie/cni-genie/pkg/store"
)

// Reclaimed reports what ReclaimNode freed.
type Reclaimed struct {
	Endpoints []string      // "vpc/id" of the deleted endpoints
	Blocks    []store.Block // the released blocks
}

// ReclaimNode frees everything a node that is gone for good holds in the
// store: its endpoints are deleted and then its blocks released, so other
// nodes can claim them. Call it only for a node whose agent will not come
// back with its state (geniectl node delete, dead-node reclaim). If the
// agent does come back, it claims its blocks again where still free and
// the store refuses its endpoints whose address another node took
// meanwhile.
//
// It is idempotent and safe to run concurrently (several reclaimers, or
// a retry after a partial failure): a deleted endpoint or released block
// is skipped, a block release is conditional on the block still being the
// node's, and endpoints go before blocks, so a failure part-way leaves
// the node's remaining endpoints inside its remaining blocks, where the
// next run finds them. Only the VPCs of the node's blocks are listed (its
// endpoints lie in its blocks: the store enforces it).
func ReclaimNode(ctx context.Context, st store.Store, node string) (Reclaimed, error) {
	var out Reclaimed
	blocks, err := st.ListBlocks(ctx, "", "")
	if err != nil {
		return out, fmt.Errorf("reclaim node %q: %w", node, err)
	}
	var mine []store.Block
	vpcs := map[string]bool{}
	for _, b := range blocks {
		if b.Node == node {
			mine = append(mine, b)
			vpcs[b.VPC] = true
		}
	}
	var errs []error
	for v := range vpcs {
		eps, _, err := st.ListEndpoints(ctx, v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range eps {
			if e.Node != node {
				continue
			}
			if err := st.DeleteEndpoint(ctx, e.VPC, e.ID); err != nil {
				errs = append(errs, err)
				continue
			}
			out.Endpoints = append(out.Endpoints, e.Key())
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Keep the blocks: the endpoints left must stay inside them.
		return out, fmt.Errorf("reclaim node %q: %w", node, err)
	}
	for _, b := range mine {
		err := st.ReleaseBlock(ctx, b.VPC, b.Subnet, b.CIDR, node)
		if errors.Is(err, store.ErrConflict) {
			continue // another node holds it by now
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out.Blocks = append(out.Blocks, b)
	}
	slices.Sort(out.Endpoints)
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("reclaim node %q: %w", node, err)
	}
	return out, nil
}
