package reclaim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cni-genie/cni-genie/pkg/ipam"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// ErrLive is returned by Node for a node that looks alive.
var ErrLive = errors.New("node is alive")

// Alive reports whether n counts as alive at now: a heartbeat younger
// than after, or no heartbeat at all (the store keeps none: the object's
// existence is all there is).
func Alive(n vpc.Node, now time.Time, after time.Duration) bool {
	return n.Heartbeat.IsZero() || now.Sub(n.Heartbeat) < after
}

// Node deletes node's endpoints, blocks and node object (geniectl node
// delete). Unless force is set it refuses, with ErrLive, a node that is
// registered and Alive (heartbeat younger than staleAfter, or none kept).
func Node(ctx context.Context, st store.Store, node string, force bool, staleAfter time.Duration) (ipam.Reclaimed, error) {
	n, err := st.GetNode(ctx, node)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return ipam.Reclaimed{}, fmt.Errorf("delete node %q: %w", node, err)
	case !force && Alive(n, time.Now(), staleAfter):
		if n.Heartbeat.IsZero() {
			return ipam.Reclaimed{}, fmt.Errorf("delete node %q: it is registered and the store keeps no heartbeat for it; stop its agent and use --force: %w", node, ErrLive)
		}
		return ipam.Reclaimed{}, fmt.Errorf("delete node %q: its agent reported itself alive %s ago (less than %s); stop it or use --force: %w",
			node, time.Since(n.Heartbeat).Round(time.Second), staleAfter, ErrLive)
	}
	r, err := ipam.ReclaimNode(ctx, st, node)
	if err != nil {
		return r, fmt.Errorf("delete node %q: %w", node, err)
	}
	if err := st.DeleteNode(ctx, node); err != nil {
		return r, fmt.Errorf("delete node %q: %w", node, err)
	}
	return r, nil
}

// Reclaimer reclaims dead nodes (see the package doc). Set the fields
// before Run or Sweep.
type Reclaimer struct {
	// Store is the store to sweep.
	Store store.Store
	// Self is this agent's node name (never reclaimed; decides whether
	// this agent sweeps).
	Self string
	// After is how long a node must be dead before it is reclaimed.
	After time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Log receives what was reclaimed (nil: discarded).
	Log *slog.Logger

	mu sync.Mutex
	// missing records when a node holding blocks was first seen without
	// a node object.
	missing map[string]time.Time
}

func (r *Reclaimer) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Reclaimer) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Run sweeps every interval until ctx ends.
func (r *Reclaimer) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := r.Sweep(ctx); err != nil && ctx.Err() == nil {
			r.log().Warn("dead node reclaim", "err", err)
		}
	}
}

// Sweep reclaims the nodes dead for at least After, if this agent is the
// sweeper (the live node with the smallest name), and returns their names.
func (r *Reclaimer) Sweep(ctx context.Context) ([]string, error) {
	nodes, _, err := r.Store.ListNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	now := r.now()
	byName := map[string]vpc.Node{}
	var live []string
	for _, n := range nodes {
		byName[n.Name] = n
		if Alive(n, now, r.After) || n.Name == r.Self {
			live = append(live, n.Name)
		}
	}
	slices.Sort(live)
	if len(live) > 0 && live[0] != r.Self {
		return nil, nil // another live node sweeps
	}
	blocks, err := r.Store.ListBlocks(ctx, "", "")
	if err != nil {
		return nil, fmt.Errorf("listing blocks: %w", err)
	}
	holders := map[string]bool{}
	for _, b := range blocks {
		holders[b.Node] = true
	}
	var dead []string
	r.mu.Lock()
	if r.missing == nil {
		r.missing = map[string]time.Time{}
	}
	for name := range r.missing {
		if _, back := byName[name]; back || !holders[name] {
			delete(r.missing, name)
		}
	}
	for name := range holders {
		if name == r.Self {
			continue
		}
		if n, ok := byName[name]; ok {
			if !Alive(n, now, r.After) {
				dead = append(dead, name)
			}
			continue
		}
		first, seen := r.missing[name]
		if !seen {
			r.missing[name] = now
		} else if now.Sub(first) >= r.After {
			dead = append(dead, name)
		}
	}
	r.mu.Unlock()
	// A registered node with a stale heartbeat and no blocks left (a
	// reclaim finished but the node object was not deleted) goes too.
	for _, n := range nodes {
		if n.Name != r.Self && !holders[n.Name] && !Alive(n, now, r.After) {
			dead = append(dead, n.Name)
		}
	}
	slices.Sort(dead)
	var done []string
	var errs []error
	for _, name := range dead {
		if err := r.reclaim(ctx, name); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, name)
	}
	return done, errors.Join(errs...)
}

// reclaim frees a dead node after reading it again (it may have come
// back since the listing).
func (r *Reclaimer) reclaim(ctx context.Context, name string) error {
	n, err := r.Store.GetNode(ctx, name)
	registered := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("reclaim node %q: %w", name, err)
	}
	if registered && Alive(n, r.now(), r.After) {
		return nil // back alive
	}
	res, err := ipam.ReclaimNode(ctx, r.Store, name)
	if err != nil {
		return err
	}
	if registered {
		// Read once more: delete the object only if still stale.
		if n, err := r.Store.GetNode(ctx, name); err == nil && !Alive(n, r.now(), r.After) {
			if err := r.Store.DeleteNode(ctx, name); err != nil {
				return fmt.Errorf("reclaim node %q: %w", name, err)
			}
		}
	}
	r.mu.Lock()
	delete(r.missing, name)
	r.mu.Unlock()
	r.log().Info("reclaimed dead node", "node", name, "endpoints", len(res.Endpoints), "blocks", len(res.Blocks))
	return nil
}
