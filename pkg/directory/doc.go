// Package directory is the endpoint directory: a DHT of endpoint records
// ({vni, ip} → hosting node, MAC, version) partitioned over the live nodes
// by rendezvous hashing into virtual shards, each held by R nodes, learned
// on demand by the nodes that talk to an endpoint, and surviving node loss.
// The store stays the durable truth; the directory is a cache of it that
// is sharded, replicated and pushed.
//
// This package is the library; genied runs it with --endpoint-mode
// directory (pkg/agent/directory.go) and the BPF data plane uses it
// through bpf/lib/directory.h (the last section).
//
// # Placement
//
// A key's shard is
//
//	shard = Mix64(uint64(vni)<<32 | uint64(ipv4)) & (shards-1)
//
// with Mix64 MurmurHash3's fmix64 (ShardOf; shards is a power of two,
// DefaultShards = 4096). The function is a few shifts, xors and two 64-bit
// multiplies, so the BPF program computes it too; TestShardOfGolden pins
// values for a C-side fixture to match.
//
// The holders of shard s are the R members (DefaultReplicas = 3) with the
// highest weight Mix64(fnv1a(name) ^ Mix64(s + φ)): rendezvous (HRW)
// hashing, ties broken by name. Every node computes the same Placement
// from the same member set in any order; a join or a leave changes the
// holder set of only the shards whose top R the member enters or leaves,
// R/(N+1) of them, and moves nothing between the other members
// (TestPlacementJoinLeaveMovesRoverN, TestSimulation check it exactly).
// NewPlacement costs one Mix64 per (shard, member): 52 ms at 1,000 nodes
// and 4096 shards, 0.67 s at 10,000 (BenchmarkPlacement). The shard count
// must exceed the node count several times for balance (with 4096 shards
// at 10,000 nodes most nodes hold one shard or none; at 1,000 the fullest
// node holds 2.1x the mean): use about 16 shards per node, e.g. 65,536
// for 10,000 nodes. Placement.Next, which Node uses, updates a placement
// incrementally on one join (one weight per shard against the stored R-th)
// or one leave (only the leaver's shards are ranked again): 13-34 ms at
// 1,000-10,000 nodes and 65,536 shards, equal to a full placement
// (TestPlacementNextEqualsFull). The price is the per-shard weights: a
// placement of 10,000 nodes and 65,536 shards is 4.1 MiB.
//
// # Membership and failure detection
//
// Gossip wraps hashicorp/memberlist on the underlay. Each node publishes
// its directory RPC address as memberlist node metadata (NodeMeta, JSON
// {"rpc":"ip:port"}); the live members feed Node.SetMembers. A crash
// (Gossip.Shutdown without Leave) is found by probing; Leave removes a
// node at once.
//
// memberlist's DefaultLANConfig takes 12-72 s to declare a crashed node
// dead at 100-1,000 nodes. FastLANConfig sets:
//
//	ProbeInterval           200 ms (1 s)   each node probes one member per interval
//	ProbeTimeout            100 ms (500 ms) direct ack deadline, then indirect probes
//	SuspicionMult           2      (4)     suspect → dead after 2·log10(N)·ProbeInterval
//	SuspicionMaxTimeoutMult 4      (6)     unused at SuspicionMult 2 (see below)
//	GossipInterval          50 ms  (200 ms) dissemination of the dead message
//	GossipNodes             4      (3)
//	GossipToTheDeadTime     5 s    (30 s)
//	TCPTimeout              2 s    (10 s)
//
// memberlist waits for SuspicionMult-2 independent confirmations before
// shortening a suspicion from its maximum to its minimum; at 2 it expects
// none and uses the minimum at once. The suspicion timeout is then
// 0.68 s at 50 nodes, 1.2 s at 1,000, and
// detection adds at most one probe interval plus the probe timeout: about
// a second on a LAN (BENCHMARKS.md, "Directory": detection and
// convergence of a crash among 50 real members on 127.0.0.1, against the
// defaults in the same run).
//
// The price is bandwidth and tolerance. Probing is 5 ping/ack pairs a
// second per node (about 1 KB/s each way, against 0.2 KB/s by default),
// the same at any cluster size; a membership change is gossiped
// 4·log10(N+1) times by every node (about 1.2 KB per node per change at
// 1,000 nodes); the full-state push/pull (30 s, scaled by memberlist to
// 180 s at 1,000 nodes) carries about 100 B per member. Tolerance: a node
// that cannot answer within the probe timeout, and whose indirect probes
// also fail, is suspected, and must refute within the suspicion timeout
// (0.7-1.2 s) or be declared dead. Lifeguard's awareness (memberlist's
// AwarenessMaxMultiplier, 8) stretches a node's own timeouts when it sees
// itself slow. A GC or CPU stall longer than about a second therefore
// costs a false death, which moves R/N of the shards twice. Measured: with
// 50 members in one process on 2 loaded cores (load average ~25) members
// flapped; at load ~10-15 there were no false deaths. Real nodes have
// their own CPUs; on a congested network raise ProbeTimeout and
// SuspicionMult together.
//
// # Holders
//
// A Node holds the shards its placement gives it. On a membership change
// it drops the shards it lost at once and marks the ones it gained as
// loading (lookups there answer StatusLoading, so clients go to a replica
// that still has them), lists only the gained shards from the Source, then
// restarts its one watch over all held shards from the oldest revision it
// still needs (events seen twice are harmless: a larger version always
// wins). Re-replication is this same step: when holders die, the next
// ranked members load the shard, so every shard has R loaded copies again
// once membership converges (TestNodeKillTwoOfThreeHolders,
// TestRealClusterFailover). If the watch fails or the source compacted
// past it, the node relists every held shard and invalidates the lookers
// of whatever changed meanwhile (TestNodeRelistAfterCompaction).
//
// Held records cost 8 bytes of key and 56 of value in a Go map, about
// 140-180 B each with the map's slack (the simulation measures it); a node
// holds R·E/N of E endpoints.
//
// # The Source: laying out the store by shard
//
// Source is the interface a holder needs: ListShards and WatchShards for a
// set of shards, records carrying the store's revision as Version.
// MemSource is the in-memory reference. Both store backends implement it
// (store.DirectorySource, tested by storetest.RunDirectory) so that a
// holder reads only its shards:
//
//   - etcd: the endpoint's directory record is a second key written in the
//     same transaction as the endpoint, <prefix>/directory/<shard as 5 hex
//     digits>/<vni>/<ip> → {node, mac}, deleted (and moved) with it;
//     Version is the key's mod_revision. ListShards is one range read per
//     shard prefix, batched in transactions at one revision; WatchShards is
//     one prefix watch per shard up to 256 shards (multiplexed by clientv3
//     on one gRPC stream; the streams are not ordered with each other, so
//     an event's Revision is a safe resume point, the oldest revision every
//     stream is known complete to, kept moving by etcd's progress
//     notifications), else one watch of the whole directory filtered by
//     shard (a small cluster, where a node holds a large share anyway).
//   - Kubernetes: PutEndpoint labels each VPCEndpoint object
//     genie.cni.io/shard=<n>; ListShards and WatchShards use the set
//     selector "genie.cni.io/shard in (a,b,...)" (up to 256 values; above,
//     the label's presence, filtered by the client), which the API
//     server's watch cache evaluates. Version is the resourceVersion
//     parsed as an integer (the backend already refuses a server whose
//     versions do not parse).
//
// The shard count is a cluster constant shared by the store's writers
// (--directory-shards; the agent refuses to start if the store lays out
// another). Endpoints written before the layout get their key or label
// when their agent restarts (it re-puts its endpoints) or from geniectl
// directory backfill; upgrade every agent (default vpc-sync mode), then
// switch the cluster to directory mode.
//
// # Lookups and the RPC
//
// Node.Lookup(key) asks the holders of the key's shard in rank order,
// each attempt bounded by AttemptTimeout (250 ms by default, well above a
// LAN round trip), and falls back to the next replica on an error, a
// timeout, StatusNotHolder (membership views briefly differ) or
// StatusLoading. StatusNotFound from a loaded holder is authoritative. A
// holder that failed an attempt is asked last for SuspectFor (2 s), so
// lookups do not each pay the timeout while memberlist has not yet
// declared it dead. A looker that holds the shard itself answers locally.
//
// The RPC is gRPC on the underlay with a hand-written service description
// and a JSON codec (no protoc, no generated code): gRPC is already in the
// module graph through etcd, and it gives one multiplexed HTTP/2
// connection per peer, the caller's deadline carried to the server, fast
// failure on a refused connection and keepalives. net/http would have
// worked as well; the messages are ~60 bytes and the choice is not on the
// packet path. The connection is not encrypted yet (mTLS through
// NewGRPCTransport's dial options and grpc.Creds on the server).
//
// Publish is the third RPC: the hosting node pushes a record it just
// wrote to the store to the holders of its shard, which apply it like a
// watch event (a larger version wins; a holder still loading the shard
// refuses and the publisher counts it as not applied).
//
// # Lookers and invalidation
//
// A holder remembers, per record, the nodes that looked it up (the Looker
// of the request). When the record moves (another node or MAC: an address
// reused on another node after a block release) or is deleted, the holder
// that has lookers pushes an Invalidation (the new record, or the deletion
// with its revision) to each, in the background, with the attempt
// timeout. The looker applies it only if it is newer than what it learned
// and calls OnInvalidate. Lookers are registered on the one holder that
// answered; when a membership change takes a shard away from that holder,
// the looker looks the key up again (re-registering with a current holder)
// and reports any change it finds as an invalidation, so nothing is missed
// across a failover. The learned set is bounded (MaxLearned).
//
// # Wiring into the agent and the data plane
//
// genied --endpoint-mode directory (pkg/agent/directory.go), per node:
//
//  1. The directory RPC listens on the node's underlay IP
//     (--directory-rpc-port, 4790); NewNode with the store's
//     DirectorySource, NewGRPCTransport and the agent's registry;
//     node.Run. JoinGossip binds the underlay IP (gossip port 4791) and
//     joins up to 5 of the store's nodes, freshest heartbeat first, before
//     the first placement (a node starting alone would hold and list every
//     shard); every 5 s the agent joins store nodes missing from its view
//     (a node that started alone, a healed split). OnChange: SetMembers,
//     Prune, Warm (connections and one empty lookup to each member, up to
//     256, so a first lookup pays no handshake) and the data plane's
//     member set. On shutdown, Gossip.Leave, so that the others re-place
//     at once.
//  2. OnPlacement(p) rewrites the entries of genie_dir_shard (shard →
//     holders' underlay IPv4s in rank order, at most 7) whose holder list
//     changed. BPF only indexes it.
//  3. OnHeld keeps genie_dir_held ({vni, ip} → node IP, MAC, version) equal
//     to the held records, node names resolved through the store's node
//     list (or the member set).
//  4. The pod program, on a miss in genie_endpoints (which holds only
//     local endpoints in this mode), uses genie_dir_lru (learned entries,
//     an LRU), then genie_dir_held, and otherwise encapsulates to the
//     first holder of ShardOf that is not this node, with the bounce mark,
//     and reports the miss through the rate-limited miss ring (one report
//     per key per second). The holder's uplink program forwards it to the
//     hosting node (lib/directory.h; docs/design.md has the trust model).
//  5. The agent's miss-ring reader calls node.Lookup (1 s overall, each
//     holder 250 ms) once per key in flight (singleflight) and installs
//     the answer in genie_dir_lru; later packets go direct. Misses of
//     inner sources reported by the uplink (a packet from a member whose
//     source this node never saw) are looked up the same way, which both
//     verifies the source from then on and gives the reply its entry.
//  6. OnInvalidate(inv) deletes or overwrites the genie_dir_lru entry if
//     it is older than inv.Record.Version (an absent entry stays absent).
//     Evictions by the LRU are not reported to the node: the learned set
//     is bounded by MaxLearned on its own, and an invalidation of an
//     evicted entry is a no-op.
//     At start the agent empties genie_dir_held and genie_dir_lru: a
//     previous run's entries may be stale (no invalidation reaches a
//     stopped agent); they fill again as shards load and flows miss, and
//     packets bounce meanwhile.
//  7. The cluster-wide endpoint watch is off: a node holds its local
//     endpoints, its shards and its learned entries. vpc-sync stays the
//     default mode.
//
// Readiness: after ADD writes the endpoint, the agent reads the record's
// store version (DirectoryRecord) and publishes it; ADD returns once a
// holder applied it (ADD fails with "try again" if none did), so a first
// packet from any node reaches the new pod through a holder; the holders'
// store watch brings the record to a holder the push missed. DEL publishes
// the deletion (version put+1, a lower bound of the deletion's revision)
// in the background.
//
// Still missing: mTLS on the RPC; a grace period before a holder drops a
// shard, to damp false deaths.
//
// # Metrics
//
// genie_directory_lookups_total{result=hit|miss|unavailable},
// lookup_attempts_total{outcome}, served_total{status}, lookup_seconds,
// failover_seconds (lookups answered by a later replica after an earlier
// failed), invalidations_{sent,failed,received}_total,
// shard_moves_total{direction=gained|dropped}, shards_held, records,
// members, source_restarts_total. The agent adds
// genie_directory_datapath_packets_total{event=lru_hit|held_hit|bounced|
// forwarded|delivered|unverified_source} (the data plane's counters),
// learned_total, miss_lookups_failed_total{reason},
// miss_to_install_seconds and held_unresolved_total.
package directory
