// Package service is the model of a VPC's load-balanced services and the
// computations both sides need: validation of a Service against its VPC
// (Check, AllocateVIP), resolution of its backends from endpoint records
// (Resolve), and the Maglev table the data plane looks flows up in
// (Maglev, Service.Table).
//
// # Design note
//
// A Service belongs to one VPC. Its VIP lies inside the VPC's CIDR and
// outside every subnet, so pods route it to their virtual gateway like any
// address of the VPC and the data plane sees it in the sending interface's
// VNI; the same VIP and port in another VPC is another service, and a VIP
// of another VPC is just an unknown address (a counted NO_ROUTE drop).
//
// The data plane (bpf/lib/lb.h) DNATs in the client pod's tc program: a
// new flow takes the backend of slot hash(5-tuple) mod M (hash(client) for
// ClientIP affinity) of the service port's Maglev table, and a conntrack
// pair keyed by {vni, 5-tuple} pins it for its lifetime (looked up before
// the service map, so deleting a service deletes its flows); replies are
// reverse-NATed on the client's node. IP fragments are not balanced: the
// first fragment of a service datagram is a counted SVC_FRAGMENT drop. Why TC DNAT and not socket LB, and
// the measurements behind M, are in docs/design.md.
//
// A VIP lies outside every subnet of its VPC, and a subnet may not be
// created over a VIP (Check and CheckSubnet; both stores fence the two
// creates against each other).
//
// Maglev (Eisenbud et al., NSDI 2016) fills the table round-robin from
// per-backend permutations derived from the backend's name (ip:port) with
// FNV-1a and a splitmix finaliser, in name order, so every node computes
// the same table from the same set. Removing one backend of N moves its
// slots and few others; maglev_test.go bounds both and the spread.
//
// Subpackages: resolver (the elected writer of backend records) and
// svcagent (the node side: programming the hosted VPCs and the conntrack
// GC).
package service
