package ipam

import (
	"context"
	"errors"
	"fmt"

	"github.com/cni-genie/cni-genie/pkg/store"
)

// Reclaimed reports what ReclaimNode freed.
type Reclaimed struct {
	Endpoints []string      // "vpc/id" of the deleted endpoints
	Blocks    []store.Block // the released blocks
}

// ReclaimNode frees everything a node that is gone for good holds in the
// store: its endpoints are deleted and its blocks released, so other nodes
// can claim them. Call it only for a node whose agent will not come back
// with its state (geniectl node delete, node-loss GC). If the agent does
// come back, it claims its blocks again where still free and the store
// refuses its endpoints whose address another node took meanwhile.
func ReclaimNode(ctx context.Context, st store.Store, node string) (Reclaimed, error) {
	var out Reclaimed
	eps, _, err := st.ListEndpoints(ctx, "")
	if err != nil {
		return out, fmt.Errorf("reclaim node %q: %w", node, err)
	}
	var errs []error
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
	blocks, err := st.ListBlocks(ctx, "", "")
	if err != nil {
		return out, fmt.Errorf("reclaim node %q: %w", node, err)
	}
	for _, b := range blocks {
		if b.Node != node {
			continue
		}
		if err := st.ReleaseBlock(ctx, b.VPC, b.Subnet, b.CIDR, node); err != nil {
			errs = append(errs, err)
			continue
		}
		out.Blocks = append(out.Blocks, b)
	}
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("reclaim node %q: %w", node, err)
	}
	return out, nil
}
