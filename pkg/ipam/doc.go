// Package ipam allocates pod addresses from per-node blocks of VPC
// subnets.
//
// # Design notes
//
// A node claims an aligned block of a subnet (a /26 in large subnets, at
// least 16 blocks per subnet in small ones, unless the subnet says
// otherwise; see vpc.Subnet.WithDefaults) atomically in the store, then hands out addresses from it
// locally: a pod ADD costs no store round trip while one of the node's
// blocks of that subnet has room. Two nodes never share a block (the store
// enforces one owner per block key with a create-if-absent transaction),
// so two nodes never hand out the same address; the store additionally
// refuses an endpoint whose IP is outside a block of its node.
//
// When all blocks of a subnet are full the allocator claims the lowest free
// block; when a block becomes empty it is released unless it is the node's
// last block of that subnet (to avoid claim/release churn for a single pod
// coming and going). A kept-empty block is re-verified against the store
// before it is used again, because an operator may have deleted the subnet
// (which deletes its blocks) meanwhile.
//
// The subnet's network, broadcast and gateway addresses are never handed
// out. Addresses within a block are chosen lowest-free-first, skipping
// (AllocateForPod) the addresses of the same pod's other allocations in
// any VPC: a pod in two VPCs with overlapping CIDRs gets a distinct address
// per interface, so its source address names its interface.
//
// ReclaimNode frees a dead node's endpoints and then its blocks
// (idempotent, safe to run concurrently; package agent/reclaim decides
// when).
//
// Allocations persist in a JSON state file (written to a temporary file
// and renamed, so a crash leaves the old or the new state; fsynced only with
// Options.Sync, see there), so they survive an agent restart. A corrupt file
// is set aside and the state rebuilt from the store. On start the file is cross-checked with the
// store: a block in use that the store lost is claimed again if still free,
// allocations in blocks another node now holds are dropped, blocks the store gives this node but the file lacks are adopted,
// and their addresses are recovered from the store's endpoints of this
// node. GC frees allocations of owners the runtime no longer knows, so a
// pod that vanished without a DEL leaks nothing.
//
// Concurrency: an allocation from a verified block with room takes only
// the allocator's mutex and makes no store round trip. Everything that
// needs the store (a block claim or re-verification, a subnet look-up, a
// block release) runs one at a time under a second mutex and makes its
// round trips with the first released, re-reading the state after each,
// so a slow claim never holds up ADDs served locally; a block being
// released is marked and skipped meanwhile. Only start-up (New) talks to
// the store under the mutex, before anyone can allocate.
//
// Scale: the state is O(pods on the node); a claim is one store
// transaction over the subnet's block list, O(blocks of the subnet).
package ipam
