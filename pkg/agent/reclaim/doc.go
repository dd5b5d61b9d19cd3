// Package reclaim frees the IPAM blocks, endpoints and node object of a
// node that died without cleaning up: geniectl node delete does it by
// hand (Node), and every agent runs a Reclaimer that does it once a node
// has been dead for a configured time (genied --node-reclaim-after).
//
// # Design notes
//
// Liveness. An agent re-registers its node with a fresh vpc.Node.Heartbeat
// every quarter of the reclaim time. A node is dead when its heartbeat is
// older than the reclaim time, or when its node object has been missing
// for that long while it still holds blocks (a node deleted from the
// store, or a store that keeps no heartbeat, as the Kubernetes backend:
// there, only the object's absence counts). Blocks are where a node's
// leftovers are found: its endpoints lie in its blocks (the store
// enforces it) and ipam.ReclaimNode deletes endpoints before blocks, so a
// half-done reclaim stays findable. Heartbeats cost one node write per
// node per interval, which every agent's node watch receives: with the
// default 10-minute reclaim time and 1,000 nodes that is about 7 events a
// second per agent (Kubernetes node Leases would make it free; the
// Kubernetes backend has no heartbeat today).
//
// Who reclaims. Every agent runs a Reclaimer, but only the live node with
// the smallest name sweeps (a deterministic choice from the node list,
// with no election round trip). Two agents may still sweep at once, when
// their node lists differ for a moment; that is safe because every step
// is idempotent and conditional: ipam.ReclaimNode skips what is gone and
// releases a block only while it is still the dead node's, and the node
// object is deleted only after its heartbeat was read again and found
// still stale. A node that comes back during a sweep re-registers first
// (fresh heartbeat: the sweep stops before its next deletion) and its
// agent re-publishes its endpoints and re-claims its free blocks at
// start-up (package ipam), so at worst it loses blocks another node took.
package reclaim
