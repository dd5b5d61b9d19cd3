package store

import (
	"context"
	"time"

	"github.com/cni-genie/cni-genie/pkg/egress"
)

// EgressEvent is one change of an EgressGateway. A delete carries the last
// stored object when known, else its key fields.
type EgressEvent struct {
	Type     EventType
	Gateway  egress.Gateway
	Revision int64
	Err      error
}

// EgressStore is an optional capability of a Store: the VPCs' egress
// gateways (package egress). Discover it with a type assertion.
//
// Rules, checked against the stored VPC, nodes and the VPC's other egress
// gateways (egress.Check): the VPC exists (ErrNotFound), the name is free
// in the VPC (ErrExists), every named node exists (ErrNotFound naming the
// node), a node keeps one egress address per VPC (ErrConflict naming the
// other gateway), the object is well formed (vpc.ErrInvalid: a destination
// inside the VPC's CIDR, no destination, no gateway node, ...).
type EgressStore interface {
	// CreateEgressGateway validates g (after WithDefaults) and stores it.
	CreateEgressGateway(ctx context.Context, g egress.Gateway) (egress.Gateway, error)
	// UpdateEgressGateway replaces an existing gateway (ErrNotFound
	// otherwise) after the same checks; drains are set this way.
	UpdateEgressGateway(ctx context.Context, g egress.Gateway) (egress.Gateway, error)
	// GetEgressGateway returns the gateway or ErrNotFound.
	GetEgressGateway(ctx context.Context, vpcName, name string) (egress.Gateway, error)
	// ListEgressGateways returns the gateways of a VPC ("" for all) sorted
	// by key, with the store revision of the listing.
	ListEgressGateways(ctx context.Context, vpcName string) ([]egress.Gateway, int64, error)
	// DeleteEgressGateway deletes the gateway. ErrNotFound if absent.
	DeleteEgressGateway(ctx context.Context, vpcName, name string) error
	// WatchEgressGateways streams changes of the gateways of all VPCs
	// after fromRevision, with the channel contract of WatchEndpoints.
	WatchEgressGateways(ctx context.Context, fromRevision int64) <-chan EgressEvent
}

// BeatEvent is one heartbeat (Put) or the removal of a node's heartbeat
// record (Delete).
type BeatEvent struct {
	Type     EventType
	Node     string
	Revision int64
	Err      error
}

// Beat is a node's last heartbeat as stored.
type Beat struct {
	Node string
	Time time.Time
}

// BeatStore is an optional capability of a Store: frequent liveness
// records of nodes, for failure detection within seconds (the node
// object's Heartbeat is written every few minutes). Egress gateways beat;
// the other nodes watch (egress.Heartbeats). Each Beat is a store write:
// a node beating every 300 ms costs the store about 3 writes a second.
type BeatStore interface {
	// Beat records that node is alive now.
	Beat(ctx context.Context, node string) error
	// ListBeats returns the heartbeat records (node and the time of its
	// last beat, by the beating node's clock) and the store revision of
	// the listing.
	ListBeats(ctx context.Context) ([]Beat, int64, error)
	// WatchBeats streams heartbeats after fromRevision, with the channel
	// contract of WatchEndpoints.
	WatchBeats(ctx context.Context, fromRevision int64) <-chan BeatEvent
	// DeleteBeat removes node's heartbeat record (idempotent).
	DeleteBeat(ctx context.Context, node string) error
}
