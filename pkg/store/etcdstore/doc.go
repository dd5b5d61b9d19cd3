// Package etcdstore implements store.Store on etcd v3, and runs an
// embedded single-member etcd server for the standalone and sandbox modes.
//
// # Design notes
//
// Objects are JSON values (the encoding of package vpc) under one prefix,
// "/genie/v1" by default (Options.Prefix):
//
//	/genie/v1/vpcs/<vpc>                      VPC
//	/genie/v1/vni/<%08d vni>                  VPC name (VNI ownership)
//	/genie/v1/subnets/<vpc>/<subnet>          Subnet
//	/genie/v1/nodes/<node>                    Node
//	/genie/v1/endpoints/<vpc>/<id>            Endpoint (id = containerID/ifname)
//	/genie/v1/endpoint-ips/<vpc>/<ip>         endpoint id (one endpoint per IP)
//	/genie/v1/blocks/<vpc>/<subnet>/<cidr>    Block (cidr like 10.1.0.64/26)
//	/genie/v1/directory/<%05x shard>/<vni>/<ip>  {"node","mac"}: the endpoint's directory record
//
// The directory key (directory.go) is written and deleted in the same
// transaction as its endpoint, so that a holder of the endpoint directory
// (package directory) lists and watches only its shards: ListShards is one
// range read per shard prefix, batched in transactions at one revision;
// WatchShards is one prefix watch per shard up to 256 shards (multiplexed
// by clientv3 on one gRPC stream; their events carry a resume revision
// kept safe with etcd's progress notifications), else one watch of
// /directory/ filtered by shard. The shard count (Options.DirectoryShards,
// 4096 by default) is a cluster-wide constant. Endpoints written before
// this layout get their key when their agent restarts (it re-puts its
// endpoints) or from BackfillDirectory (geniectl directory backfill).
//
// Every uniqueness rule is an optimistic transaction: read the relevant
// keys at one revision, decide, then commit with compares that fail if
// anything read has changed, and retry on failure after a jittered
// backoff (store.Retrier; ErrBusy when it runs out). Concretely:
//   - CreateVPC picks the lowest VNI absent from /vni/ and commits the VPC
//     and VNI keys together if both are still absent (CreateRevision == 0),
//     so concurrent creators never share a VNI.
//   - CreateSubnet checks overlap against the siblings it read at revision
//     R and commits only if the VPC is the same object (CreateRevision)
//     and no key below /subnets/<vpc>/ has ModRevision > R, a range
//     compare: a sibling created meanwhile forces a re-check.
//   - DeleteVPC commits only if no key exists below /subnets/<vpc>/ and
//     /endpoints/<vpc>/ (range compare CreateRevision == 0 holds for an
//     empty range); DeleteSubnet only if no endpoint of the VPC changed
//     since it saw none of the subnet, and deletes the subnet's blocks
//     with it.
//   - ClaimBlock creates /blocks/<vpc>/<subnet>/<cidr> if absent and the
//     subnet is still the same object. Blocks of a subnet all have the
//     subnet's BlockPrefixLen and are aligned, so distinct keys never
//     overlap.
//   - PutEndpoint commits only if the IP index key is absent or already
//     names this endpoint, and the block containing the IP is held by the
//     endpoint's node (its key unchanged): a stale agent can never publish
//     an address another node owns.
//
// Watches start at the revision of a list (list-then-watch with no gap),
// use WithPrevKV so delete events carry the deleted object, and require a
// leader so a partitioned member fails the watch instead of going silent.
// Embedded servers compact history older than an hour; a watch from a
// compacted revision yields store.ErrCompacted.
//
// The embedded server listens on a unix socket by default
// (unix://<datadir>/etcd.sock): a filesystem socket is reachable from
// every network namespace of the host, which the sandbox relies on, and it
// needs no port. Its raft peer listener is a unix socket too (a single
// member never dials it). etcd's own logs are kept at warn level.
//
// Scale: VNI allocation and block claims read the whole VNI or block list
// of one subnet, O(VPCs) and O(blocks of a subnet); everything else is
// O(1) keys per operation. Contention costs retries, not correctness.
//
// Errors: every call no member answered before the caller's deadline (or
// without a leader) wraps store.ErrUnavailable and names the endpoints,
// so an agent reports "try again later" (CNI code 11), not a bad config.
package etcdstore
