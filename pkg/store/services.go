package store

import (
	"context"

	"github.com/cni-genie/cni-genie/pkg/service"
)

// ServiceEvent is one change of a service or of its resolved backends.
// Exactly one of Service and Backends is set on a put; a delete carries
// the last stored object when known, else its key fields.
type ServiceEvent struct {
	Type     EventType
	Service  *service.Service
	Backends *service.Backends
	Revision int64
	Err      error
}

// ServiceStore is an optional capability of a Store: VPC-scoped services
// and their resolved backend sets. Discover it with a type assertion.
//
// Service rules, atomic across clients like every uniqueness rule: the
// VPC exists (ErrNotFound), the name is free in the VPC (ErrExists), the
// VIP lies in no subnet of the VPC and is held by no other service of it
// (ErrConflict naming the subnet or service), the object is well formed
// (vpc.ErrInvalid: port clash, protocol, selector, a VIP outside the VPC's
// CIDR). A zero VIP is allocated by service.AllocateVIP, per VPC.
type ServiceStore interface {
	// CreateService validates s (after WithDefaults), allocates its VIP if
	// zero and stores it. Returns the stored service.
	CreateService(ctx context.Context, s service.Service) (service.Service, error)
	// GetService returns the service or ErrNotFound.
	GetService(ctx context.Context, vpcName, name string) (service.Service, error)
	// ListServices returns the services of a VPC ("" for all) sorted by
	// key, with the store revision of the listing.
	ListServices(ctx context.Context, vpcName string) ([]service.Service, int64, error)
	// DeleteService deletes the service and its backend record.
	// ErrNotFound if absent.
	DeleteService(ctx context.Context, vpcName, name string) error
	// PutServiceBackends stores the resolved backends of an existing
	// service (ErrNotFound otherwise), replacing the previous record.
	PutServiceBackends(ctx context.Context, b service.Backends) error
	// ListServiceBackends returns the backend records of a VPC ("" for
	// all) sorted by key, with the revision of the listing.
	ListServiceBackends(ctx context.Context, vpcName string) ([]service.Backends, int64, error)
	// WatchServices streams changes of the services and backend records
	// of a VPC ("" for all) after fromRevision, with the channel contract
	// of WatchEndpoints.
	WatchServices(ctx context.Context, vpcName string, fromRevision int64) <-chan ServiceEvent
}

// LeaderElector is an optional capability of a Store: one holder at a time
// of a named leadership across the cluster (etcd: a clientv3/concurrency
// election on a session lease; Kubernetes: a coordination Lease through
// client-go leaderelection).
type LeaderElector interface {
	// Lead campaigns for the leadership name as id until ctx ends. Each
	// time it is won, run is called with a context that is cancelled when
	// the leadership is lost (or ctx ends); Lead campaigns again after run
	// returns. Returns ctx's error, or an error if campaigning fails for
	// good.
	Lead(ctx context.Context, name, id string, run func(context.Context)) error
}
