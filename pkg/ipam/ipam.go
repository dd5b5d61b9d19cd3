package ipam

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"

	"github.com/cni-genie/cni-genie/pkg/store"
)

// Errors returned by the allocator, wrapped with the owner, subnet and
// address concerned. A full subnet wraps store.ErrSubnetFull.
var (
	// ErrAddressInUse: a requested static address is held by another
	// owner, or lies in a block another node holds.
	ErrAddressInUse = errors.New("address in use")
	// ErrAddressReserved: a requested static address is the network,
	// broadcast or gateway address of its subnet, or outside the subnet.
	ErrAddressReserved = errors.New("address not assignable")
	// ErrOwnerConflict: the owner already holds an address in another
	// VPC/subnet, or a different address than the one requested.
	ErrOwnerConflict = errors.New("owner already has a different address")
)

// StateFile is the name of the allocator's state file inside its state
// directory.
const StateFile = "ipam.json"

// Options tunes an Allocator. The zero value is valid.
type Options struct {
	// Logger receives block claims/releases and recovery notes. Nil
	// discards.
	Logger *slog.Logger
	// Sync fsyncs the state file on every change, so it also survives a
	// power loss. Off by default: the atomic rename alone survives agent
	// crashes and restarts (the case that matters: after a reboot the
	// node's pods are gone, and New rebuilds what is still published from
	// the store). On this project's CI machine an fsync costs ~3 ms per
	// ADD or DEL.
	Sync bool
}

// Allocation is one address held by one owner.
type Allocation struct {
	// Owner identifies the holder, normally vpc.EndpointID(containerID,
	// ifname).
	Owner  string `json:"owner"`
	VPC    string `json:"vpc"`
	Subnet string `json:"subnet"`
	// IP is the address with the subnet's prefix length (10.1.0.7/24).
	IP netip.Prefix `json:"ip"`
	// Gateway is the subnet's gateway.
	Gateway netip.Addr `json:"gateway"`
	// Block is the node's block the address came from.
	Block netip.Prefix `json:"block"`
	// Pod groups the allocations of one pod (its container ID; empty: no
	// pod): AllocateForPod never gives two of them the same address.
	Pod string `json:"pod,omitempty"`
}

// Allocator hands out addresses from blocks its node claims in the store.
// It is safe for concurrent use; use one per node (per state directory).
type Allocator struct {
	impl
}

// New loads the allocator of node from stateDir (created if missing),
// cross-checks it with the blocks the store says node holds, and returns
// it. A block in use that the store lost is claimed again if still free;
// allocations in a block another node now holds (or whose subnet is gone
// or changed) are dropped and logged. Blocks the store assigns to node
// that the state file lacks are adopted, and addresses of node's endpoints
// in the store that the file lacks are recovered.
func New(ctx context.Context, st store.Store, node, stateDir string, opts Options) (*Allocator, error) {
	return newAllocator(ctx, st, node, stateDir, opts)
}

// Allocate returns the address of owner in vpcName/subnetName, allocating
// one if owner has none (idempotent per owner). A zero requested address
// means any free address; otherwise requested is honoured if it is free
// in a block this node holds or can claim, and refused with
// ErrAddressInUse / ErrAddressReserved if not. When the node's blocks of
// the subnet are full it claims another (one store transaction); else no
// store round trip is made. The network, broadcast and gateway addresses
// of the subnet are never handed out.
func (a *Allocator) Allocate(ctx context.Context, vpcName, subnetName, owner string, requested netip.Addr) (Allocation, error) {
	return a.allocate(ctx, vpcName, subnetName, owner, requested)
}

// AllocateForPod is Allocate for an owner that is one of pod's
// attachments: the address differs from the address of every other
// allocation of pod, in any VPC. A pod in two VPCs with overlapping CIDRs
// then has a distinct address on each interface, so a source address
// names the interface (and the VPC) a reply must leave through. A
// requested address another attachment of pod holds is refused with
// ErrAddressInUse.
func (a *Allocator) AllocateForPod(ctx context.Context, vpcName, subnetName, pod, owner string, requested netip.Addr) (Allocation, error) {
	return a.allocatePod(ctx, vpcName, subnetName, pod, owner, requested)
}

// Release frees owner's address (idempotent). A block left empty is
// released to the store unless it is the node's last block of its subnet.
func (a *Allocator) Release(ctx context.Context, owner string) error {
	return a.release(ctx, owner)
}

// GC frees the address of every owner not in valid (pods that vanished
// without a DEL) and returns the owners it freed, sorted.
func (a *Allocator) GC(ctx context.Context, valid []string) ([]string, error) {
	return a.gc(ctx, valid)
}

// Allocations returns the current allocations sorted by owner.
func (a *Allocator) Allocations() []Allocation { return a.allocations() }

// Get returns owner's allocation, if any.
func (a *Allocator) Get(owner string) (Allocation, bool) { return a.get(owner) }

// Blocks returns the blocks the node holds, sorted.
func (a *Allocator) Blocks() []store.Block { return a.heldBlocks() }

// Close releases the state directory (its lock). Allocations stay in the
// state file and blocks in the store, for the next New.
func (a *Allocator) Close() error { return a.close() }

// ReleaseEmptyBlocks releases every block without allocations, including
// the last one of a subnet (for node drain/shutdown), and returns them.
func (a *Allocator) ReleaseEmptyBlocks(ctx context.Context) ([]store.Block, error) {
	return a.releaseEmptyBlocks(ctx)
}
