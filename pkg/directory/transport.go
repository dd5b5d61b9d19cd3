package directory

import (
	"context"
	"errors"
)

// Errors of lookups.
var (
	// ErrNotFound: a ready holder of the key's shard has no record of it.
	ErrNotFound = errors.New("endpoint not in directory")
	// ErrUnavailable: no holder of the key's shard answered (all dead,
	// loading, or past their deadline).
	ErrUnavailable = errors.New("no holder of the shard answered")
)

// Status is a holder's answer to a lookup.
type Status int

const (
	// StatusFound: the record is in Response.Record.
	StatusFound Status = iota + 1
	// StatusNotFound: the holder holds the shard, is loaded, and has no
	// record of the key. Authoritative: no other replica is asked.
	StatusNotFound
	// StatusNotHolder: the holder's placement does not give it the shard
	// (membership views differ for a moment). Ask the next replica.
	StatusNotHolder
	// StatusLoading: the holder gained the shard and is still loading it
	// from the source. Ask the next replica.
	StatusLoading
)

// String returns the status name.
func (s Status) String() string {
	switch s {
	case StatusFound:
		return "found"
	case StatusNotFound:
		return "not-found"
	case StatusNotHolder:
		return "not-holder"
	case StatusLoading:
		return "loading"
	}
	return "unknown"
}

// LookupRequest asks a holder for a key. Looker names the asking node,
// which the holder remembers to push invalidations to; empty means "do not
// remember me" (geniectl).
type LookupRequest struct {
	Key    Key    `json:"key"`
	Looker string `json:"looker,omitempty"`
}

// LookupResponse is a holder's answer.
type LookupResponse struct {
	Status Status `json:"status"`
	Record Record `json:"record,omitzero"`
}

// Invalidation tells a looker that a record it learned changed: the
// endpoint moved (Deleted false, Record is the new record) or was deleted
// (Deleted true, Record.Version is the deletion's revision). Drop any entry
// of Record.Key older than Record.Version.
type Invalidation struct {
	Record  Record `json:"record"`
	Deleted bool   `json:"deleted,omitempty"`
}

// Publication is a record the hosting node just wrote to the store (or
// deleted: Deleted, Record.Version the deletion's revision), pushed to the
// holders of its shard ahead of their store watch.
type Publication struct {
	Record  Record `json:"record"`
	Deleted bool   `json:"deleted,omitempty"`
}

// PublishResponse says whether the holder applied a Publication (false:
// it does not hold the shard loaded).
type PublishResponse struct {
	Applied bool `json:"applied"`
}

// Handler serves the directory RPCs of one node. *Node implements it.
type Handler interface {
	ServeLookup(ctx context.Context, req LookupRequest) (LookupResponse, error)
	ServeInvalidate(ctx context.Context, inv Invalidation) error
	ServePublish(ctx context.Context, pub Publication) (PublishResponse, error)
}

// Transport carries the directory RPCs from one node to another. The
// real one is gRPC on the underlay (NewGRPCTransport); tests and the
// simulation use MemNetwork. Calls must honour ctx's deadline.
type Transport interface {
	Lookup(ctx context.Context, to Member, req LookupRequest) (LookupResponse, error)
	Invalidate(ctx context.Context, to Member, inv Invalidation) error
	Publish(ctx context.Context, to Member, pub Publication) (PublishResponse, error)
}

// RingRequest asks a member for its view of the ring (geniectl status).
type RingRequest struct{}

// RingResponse is a member's view: the live members of its placement, the
// placement's shape, and the shards it holds loaded and still loading.
type RingResponse struct {
	Self     string   `json:"self"`
	Members  []Member `json:"members"`
	Shards   int      `json:"shards"`
	Replicas int      `json:"replicas"`
	Loaded   []uint32 `json:"loaded,omitempty"`
	Loading  []uint32 `json:"loading,omitempty"`
	Records  int      `json:"records"`
	Learned  int      `json:"learned"`
}

// RingHandler serves the Ring RPC (*Node implements it); a server whose
// Handler does not answers Unimplemented.
type RingHandler interface {
	ServeRing(ctx context.Context, req RingRequest) (RingResponse, error)
}
