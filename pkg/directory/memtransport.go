package directory

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// MemNetwork is an in-process Transport between Handlers registered by
// member name, for tests and the simulation. A member can be killed
// (calls fail at once, like a refused connection) or hung (calls block
// until the caller's deadline, like a lost host).
type MemNetwork struct {
	mu    sync.RWMutex
	nodes map[string]*memEndpoint
	calls atomic.Int64
}

type memEndpoint struct {
	h    Handler
	dead bool
	hung bool
}

// NewMemNetwork returns an empty network.
func NewMemNetwork() *MemNetwork { return &MemNetwork{nodes: map[string]*memEndpoint{}} }

// Register attaches h as the member name.
func (n *MemNetwork) Register(name string, h Handler) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nodes[name] = &memEndpoint{h: h}
}

// Kill makes calls to name fail at once.
func (n *MemNetwork) Kill(name string) { n.set(name, func(e *memEndpoint) { e.dead = true }) }

// Hang makes calls to name block until the caller's deadline.
func (n *MemNetwork) Hang(name string) { n.set(name, func(e *memEndpoint) { e.hung = true }) }

func (n *MemNetwork) set(name string, f func(*memEndpoint)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e, ok := n.nodes[name]; ok {
		f(e)
	}
}

// Calls returns the number of RPCs attempted so far.
func (n *MemNetwork) Calls() int64 { return n.calls.Load() }

func (n *MemNetwork) handler(ctx context.Context, to Member) (Handler, error) {
	n.calls.Add(1)
	n.mu.RLock()
	e, ok := n.nodes[to.Name]
	var h Handler
	var dead, hung bool
	if ok {
		h, dead, hung = e.h, e.dead, e.hung
	}
	n.mu.RUnlock()
	switch {
	case !ok || dead:
		return nil, fmt.Errorf("member %s: connection refused", to.Name)
	case hung:
		<-ctx.Done()
		return nil, fmt.Errorf("member %s: %w", to.Name, ctx.Err())
	}
	return h, nil
}

// Transport returns the network as a Transport.
func (n *MemNetwork) Transport() Transport { return memTransport{n} }

type memTransport struct{ n *MemNetwork }

func (t memTransport) Lookup(ctx context.Context, to Member, req LookupRequest) (LookupResponse, error) {
	h, err := t.n.handler(ctx, to)
	if err != nil {
		return LookupResponse{}, err
	}
	return h.ServeLookup(ctx, req)
}

func (t memTransport) Invalidate(ctx context.Context, to Member, inv Invalidation) error {
	h, err := t.n.handler(ctx, to)
	if err != nil {
		return err
	}
	return h.ServeInvalidate(ctx, inv)
}

func (t memTransport) Publish(ctx context.Context, to Member, pub Publication) (PublishResponse, error) {
	h, err := t.n.handler(ctx, to)
	if err != nil {
		return PublishResponse{}, err
	}
	return h.ServePublish(ctx, pub)
}
