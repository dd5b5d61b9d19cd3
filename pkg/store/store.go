package store

import (
	"context"
	"errors"
	"net/netip"

	"github.com/cni-genie/cni-genie/pkg/directory"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// Sentinel errors. Every error a Store returns wraps at most one of them
// with a message naming the object, e.g.
//
//	create subnet "blue/web": subnet "blue/web" 10.1.0.0/24 overlaps subnet "blue/db" 10.1.0.128/25: conflict
//
// Test with errors.Is. Validation failures also wrap vpc.ErrInvalid.
var (
	// ErrNotFound: the object (or its parent VPC/subnet) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: an object of that name already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict: the object clashes with another one (overlapping
	// subnet, IP held by another endpoint, block owned by another node).
	ErrConflict = errors.New("conflict")
	// ErrSubnetFull: no free block is left in the subnet.
	ErrSubnetFull = errors.New("subnet is full")
	// ErrVNIExhausted: all 2^24-1 VNIs are taken.
	ErrVNIExhausted = errors.New("no free vni")
	// ErrInUse: the object still has dependents (a VPC with subnets, a
	// subnet with endpoints).
	ErrInUse = errors.New("in use")
	// ErrCompacted: a watch's start revision was compacted away; list
	// again and watch from the new revision.
	ErrCompacted = errors.New("revision compacted")
	// ErrBusy: an optimistic read-compare-commit lost to concurrent
	// writers on every attempt of its backoff (ContentionBackoff). Nothing
	// was written; the same call may succeed later (CNI code 11).
	ErrBusy = errors.New("store busy with concurrent updates, try again")
	// ErrUnavailable: the store did not answer (etcd unreachable or
	// without a leader, the Kubernetes API server down or refusing
	// connections) within the caller's deadline. The message names the
	// store's endpoints. Nothing is known to be written; try again later
	// (CNI code 11).
	ErrUnavailable = errors.New("store unavailable")
)

// Transient reports whether err is a failure that a later retry of the
// same call may not have: the store was unreachable or busy, or the
// caller's deadline ran out.
func Transient(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrBusy) ||
		errors.Is(err, context.DeadlineExceeded)
}

// EventType says what happened to an object.
type EventType int

const (
	// EventPut: the object was created or updated.
	EventPut EventType = iota + 1
	// EventDelete: the object was deleted. The event carries the last
	// stored object when the backend knows it (etcd always does), else
	// only its key fields (VPC and ID for an endpoint, Name for a node).
	EventDelete
	// EventError: the watch failed (Err is set) and its channel closes
	// right after this event. On ErrCompacted, list again and re-watch.
	EventError
)

// String returns "put", "delete" or "error".
func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	case EventError:
		return "error"
	}
	return "unknown"
}

// EndpointEvent is one change of an endpoint.
type EndpointEvent struct {
	Type     EventType
	Endpoint vpc.Endpoint
	// Revision is the store revision of the change; pass the last one
	// seen to a new watch to resume without gaps.
	Revision int64
	Err      error
}

// NodeEvent is one change of a node.
type NodeEvent struct {
	Type     EventType
	Node     vpc.Node
	Revision int64
	Err      error
}

// Block is a range of a subnet claimed by one node for local IP allocation.
type Block struct {
	VPC    string       `json:"vpc"`
	Subnet string       `json:"subnet"`
	CIDR   netip.Prefix `json:"cidr"`
	Node   string       `json:"node"`
}

// VPCWatcher is an optional capability of a Store: one watch over the
// endpoints of a set of VPCs, filtered by the backend (kubestore: a
// genie.cni.io/vpc "in (...)" label selector the API server's watch cache
// evaluates). An agent hosting a few VPCs of a large cluster receives only
// their endpoints over one stream, where WatchEndpoints(ctx, "", rev)
// streams every endpoint of the cluster to every node. Discover it with a
// type assertion; a Store without it (etcdstore, whose one all-VPC watch
// costs the node only the decoding of foreign events) is watched with
// WatchEndpoints.
type VPCWatcher interface {
	// WatchEndpointsIn is WatchEndpoints for the VPCs named: changes made
	// after fromRevision, in revision order, with the channel contract of
	// WatchEndpoints. An empty set watches nothing and returns a closed
	// channel. The set is fixed for the watch's lifetime: to change it,
	// cancel and watch the new set from a revision no later than both the
	// last event seen and the listing of every VPC added (events the
	// consumer already applied come again and must be skipped by
	// revision).
	WatchEndpointsIn(ctx context.Context, vpcNames []string, fromRevision int64) <-chan EndpointEvent
}

// Store is the control plane's durable state. Implementations must make
// every uniqueness rule atomic across processes (names, VNIs, subnet
// overlap, endpoint IPs, block ownership), so that any number of agents
// and CLIs can use one store concurrently.
//
// Implementations: etcdstore (etcd, embedded or external) and kubestore
// (Kubernetes custom resources); package datastore opens either by name.
// Nothing backend-specific appears here; optional capabilities (VPCWatcher)
// are separate interfaces.
type Store interface {
	// CreateVPC creates v and allocates its VNI: the lowest free one in
	// [vpc.MinVNI, vpc.MaxVNI]. v.VNI is ignored. Returns the stored VPC.
	// ErrExists if the name is taken.
	CreateVPC(ctx context.Context, v vpc.VPC) (vpc.VPC, error)
	// GetVPC returns the named VPC or ErrNotFound.
	GetVPC(ctx context.Context, name string) (vpc.VPC, error)
	// ListVPCs returns all VPCs sorted by name.
	ListVPCs(ctx context.Context) ([]vpc.VPC, error)
	// DeleteVPC deletes the VPC and frees its VNI. ErrInUse while it has
	// subnets; ErrNotFound if absent.
	DeleteVPC(ctx context.Context, name string) error

	// CreateSubnet validates s (after vpc.Subnet.WithDefaults) against its
	// VPC and its sibling subnets and creates it. ErrNotFound if the VPC
	// does not exist, ErrExists if the name is taken, ErrConflict if it
	// overlaps a sibling, vpc.ErrInvalid if malformed.
	CreateSubnet(ctx context.Context, s vpc.Subnet) (vpc.Subnet, error)
	// GetSubnet returns the subnet or ErrNotFound.
	GetSubnet(ctx context.Context, vpcName, name string) (vpc.Subnet, error)
	// ListSubnets returns the subnets of a VPC sorted by name; vpcName ""
	// lists the subnets of all VPCs.
	ListSubnets(ctx context.Context, vpcName string) ([]vpc.Subnet, error)
	// DeleteSubnet deletes the subnet and the blocks nodes hold in it.
	// ErrInUse while endpoints of the subnet exist.
	DeleteSubnet(ctx context.Context, vpcName, name string) error

	// RegisterNode creates or updates a node.
	RegisterNode(ctx context.Context, n vpc.Node) error
	// GetNode returns the node or ErrNotFound.
	GetNode(ctx context.Context, name string) (vpc.Node, error)
	// ListNodes returns all nodes sorted by name, and the store revision
	// to pass to WatchNodes.
	ListNodes(ctx context.Context) ([]vpc.Node, int64, error)
	// DeleteNode deletes a node (idempotent). Its blocks and endpoints are
	// left to the node's agent or to an operator.
	DeleteNode(ctx context.Context, name string) error
	// WatchNodes streams node changes after fromRevision (0 = from now).
	// See WatchEndpoints for the channel's contract.
	WatchNodes(ctx context.Context, fromRevision int64) <-chan NodeEvent

	// PutEndpoint creates or updates an endpoint. The store fills in the
	// VNI and refuses (ErrConflict) an IP held by another endpoint of the
	// VPC, or an IP outside a block of the subnet owned by e.Node; the VPC
	// and subnet must exist (ErrNotFound).
	PutEndpoint(ctx context.Context, e vpc.Endpoint) (vpc.Endpoint, error)
	// GetEndpoint returns the endpoint or ErrNotFound.
	GetEndpoint(ctx context.Context, vpcName, id string) (vpc.Endpoint, error)
	// DeleteEndpoint deletes an endpoint (idempotent: absent is no error).
	DeleteEndpoint(ctx context.Context, vpcName, id string) error
	// ListEndpoints returns the endpoints of a VPC ("" = all VPCs) sorted
	// by VPC and ID, and the store revision of the listing.
	ListEndpoints(ctx context.Context, vpcName string) ([]vpc.Endpoint, int64, error)
	// WatchEndpoints streams endpoint changes of a VPC ("" = all VPCs)
	// made after fromRevision (0 = from now). Use the revision returned by
	// ListEndpoints for a list-then-watch without gaps. The channel closes
	// when ctx is done; a failure is delivered as one EventError event
	// before the channel closes.
	WatchEndpoints(ctx context.Context, vpcName string, fromRevision int64) <-chan EndpointEvent

	// ClaimBlock atomically claims the lowest free block of the subnet
	// for node. Blocks are aligned ranges of the subnet's BlockPrefixLen.
	// ErrSubnetFull when none is left, ErrNotFound if the subnet is gone.
	ClaimBlock(ctx context.Context, vpcName, subnetName, node string) (Block, error)
	// ClaimBlockContaining atomically claims the block of the subnet that
	// contains addr, for node. Claiming a block node already holds returns
	// it; a block held by another node is ErrConflict.
	ClaimBlockContaining(ctx context.Context, vpcName, subnetName, node string, addr netip.Addr) (Block, error)
	// ReleaseBlock frees a block held by node (idempotent if absent;
	// ErrConflict if another node holds it).
	ReleaseBlock(ctx context.Context, vpcName, subnetName string, block netip.Prefix, node string) error
	// ListBlocks returns the claimed blocks of a subnet sorted by address;
	// vpcName "" lists all blocks of all subnets, subnetName "" all blocks
	// of the VPC.
	ListBlocks(ctx context.Context, vpcName, subnetName string) ([]Block, error)

	// Close releases the store's connections.
	Close() error
}

// DirectorySource is an optional capability of a Store: its endpoints are
// laid out by endpoint-directory shard (package directory), so that a
// holder of some shards lists and watches only those (etcdstore: a second
// key per endpoint under <prefix>/directory/<shard>/; kubestore: the
// genie.cni.io/shard label). Discover it with a type assertion.
type DirectorySource interface {
	directory.Source
	// DirectoryShards is the shard count the store lays records out by;
	// the directory must use the same.
	DirectoryShards() int
	// DirectoryRecord returns the record of the endpoint {k.VNI, k.IP}
	// of the VPC named (false if none), with the version the store gave
	// it: what the hosting agent publishes after PutEndpoint.
	DirectoryRecord(ctx context.Context, vpcName string, k directory.Key) (directory.Record, bool, error)
}
