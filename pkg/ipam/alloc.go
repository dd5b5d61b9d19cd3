package ipam

import (
	"context"
	"errors"
	"net/netip"

	"github.com/cni-genie/cni-genie/pkg/store"
)

var errTODO = errors.New("ipam: not implemented yet")

type impl struct{}

func newAllocator(ctx context.Context, st store.Store, node, stateDir string, opts Options) (*Allocator, error) {
	return nil, errTODO
}
func (a *impl) allocate(ctx context.Context, vpcName, subnetName, owner string, requested netip.Addr) (Allocation, error) {
	return Allocation{}, errTODO
}
func (a *impl) release(ctx context.Context, owner string) error               { return errTODO }
func (a *impl) gc(ctx context.Context, valid []string) ([]string, error)      { return nil, errTODO }
func (a *impl) allocations() []Allocation                                     { return nil }
func (a *impl) get(owner string) (Allocation, bool)                           { return Allocation{}, false }
func (a *impl) blocks() []store.Block                                         { return nil }
func (a *impl) releaseEmptyBlocks(ctx context.Context) ([]store.Block, error) { return nil, errTODO }
