// Package resolver turns service selectors into backend records, once per
// cluster: the elected leader (store.LeaderElector) lists and watches every
// service and endpoint, keeps the endpoints of the VPCs that have a service
// (a VPC is listed when its first service appears), and writes each
// service's resolved backends (service.Backends) when they change. Agents read only those records for
// the VPCs they host, so no agent needs a copy of every endpoint, and N
// agents do not each evaluate every selector.
//
// The leader's state is rebuilt from a fresh listing each time it wins, so
// a new leader converges from whatever the previous one left; writes are
// idempotent (a record is rewritten only when it differs).
package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/cni-genie/cni-genie/pkg/service"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// Election is the leadership name the resolvers campaign for.
const Election = "service-resolver"

// Resolver resolves the backends of every service while it leads.
type Resolver struct {
	// Store lists and watches the endpoints; it must implement
	// store.ServiceStore (and store.LeaderElector for RunElected).
	Store store.Store
	// ID names this candidate (the node name).
	ID string
	// Log gets progress and errors; nil discards.
	Log *slog.Logger
	// Settle batches changes arriving within this interval (default
	// 50 ms) into one pass.
	Settle time.Duration
}

func (r *Resolver) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

// RunElected campaigns for the resolver leadership and resolves while it
// leads, until ctx ends.
func (r *Resolver) RunElected(ctx context.Context) error {
	le, ok := r.Store.(store.LeaderElector)
	if !ok {
		return fmt.Errorf("service resolver: store %T cannot elect a leader", r.Store)
	}
	return le.Lead(ctx, Election, r.ID, func(ctx context.Context) {
		r.log().Info("service resolver: leading", "id", r.ID)
		for ctx.Err() == nil {
			if err := r.Run(ctx); err != nil && ctx.Err() == nil {
				r.log().Error("service resolver: restarting", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}
	})
}

// state is the leader's view: services, records, and the endpoints of
// the VPCs that have a service (only those: at 100k endpoints a copy of
// every one was half of the leader's heap, and each pass scanned all of
// them once per changed VPC).
type state struct {
	services map[string]service.Service  // key vpc/name
	records  map[string]service.Backends // key vpc/name
	tracked  map[string]*vpcEndpoints    // VPCs with a service
	dirty    map[string]bool             // VPCs to re-resolve
}

// vpcEndpoints are one tracked VPC's endpoints, as of its listing at rev
// and the watch events after it.
type vpcEndpoints struct {
	rev int64
	eps map[string]vpc.Endpoint // key endpoint ID
}

func (st *state) hasService(v string) bool {
	for _, s := range st.services {
		if s.VPC == v {
			return true
		}
	}
	return false
}

// track starts following VPC v (it got its first service): its endpoints
// from a listing, watch events up to that listing's revision skipped.
func (r *Resolver) track(ctx context.Context, st *state, v string) error {
	if st.tracked[v] != nil {
		return nil
	}
	eps, rev, err := r.Store.ListEndpoints(ctx, v)
	if err != nil {
		return fmt.Errorf("list endpoints of VPC %q: %w", v, err)
	}
	t := &vpcEndpoints{rev: rev, eps: make(map[string]vpc.Endpoint, len(eps))}
	for _, e := range eps {
		t.eps[e.ID] = e
	}
	st.tracked[v] = t
	return nil
}

// Run resolves until ctx ends or a watch fails (then it returns the error;
// call again to start over from a fresh listing).
func (r *Resolver) Run(ctx context.Context) error {
	ss, ok := r.Store.(store.ServiceStore)
	if !ok {
		return fmt.Errorf("service resolver: store %T has no services", r.Store)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := state{services: map[string]service.Service{}, records: map[string]service.Backends{},
		tracked: map[string]*vpcEndpoints{}, dirty: map[string]bool{}}
	svcs, srev, err := ss.ListServices(ctx, "")
	if err != nil {
		return err
	}
	recs, _, err := ss.ListServiceBackends(ctx, "")
	if err != nil {
		return err
	}
	// The watch of every endpoint starts at this listing; of it, only the
	// VPCs with a service are kept (the rest is garbage at once).
	eps, erev, err := r.Store.ListEndpoints(ctx, "")
	if err != nil {
		return err
	}
	for _, s := range svcs {
		st.services[s.Key()] = s
		st.dirty[s.VPC] = true
		if st.tracked[s.VPC] == nil {
			st.tracked[s.VPC] = &vpcEndpoints{rev: erev, eps: map[string]vpc.Endpoint{}}
		}
	}
	for _, e := range eps {
		if t := st.tracked[e.VPC]; t != nil {
			t.eps[e.ID] = e
		}
	}
	for _, b := range recs {
		st.records[b.Key()] = b
	}
	svcCh := ss.WatchServices(ctx, "", srev)
	epCh := r.Store.WatchEndpoints(ctx, "", erev)
	settle := r.Settle
	if settle == 0 {
		settle = 50 * time.Millisecond
	}
	timer := time.NewTimer(0)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-svcCh:
			if !ok || ev.Type == store.EventError {
				return fmt.Errorf("service watch: %v", ev.Err)
			}
			switch {
			case ev.Service != nil:
				v := ev.Service.VPC
				st.dirty[v] = true
				if ev.Type == store.EventPut {
					st.services[ev.Service.Key()] = *ev.Service
					if err := r.track(ctx, &st, v); err != nil {
						return err
					}
				} else {
					delete(st.services, ev.Service.Key())
					delete(st.records, ev.Service.Key())
					if !st.hasService(v) {
						delete(st.tracked, v)
					}
				}
			case ev.Backends != nil && ev.Type == store.EventPut:
				st.records[ev.Backends.Key()] = *ev.Backends
			case ev.Backends != nil:
				delete(st.records, ev.Backends.Key())
			}
		case ev, ok := <-epCh:
			if !ok || ev.Type == store.EventError {
				return fmt.Errorf("endpoint watch: %v", ev.Err)
			}
			t := st.tracked[ev.Endpoint.VPC]
			if t == nil || ev.Revision <= t.rev {
				continue // no service in its VPC, or in its listing already
			}
			st.dirty[ev.Endpoint.VPC] = true
			if ev.Type == store.EventPut {
				t.eps[ev.Endpoint.ID] = ev.Endpoint
			} else {
				delete(t.eps, ev.Endpoint.ID)
			}
		case <-timer.C:
			if err := r.flush(ctx, ss, &st); err != nil {
				return err
			}
			continue
		}
		timer.Reset(settle)
	}
}

// flush re-resolves the services of the dirty VPCs and writes the records
// that changed.
func (r *Resolver) flush(ctx context.Context, ss store.ServiceStore, st *state) error {
	for v := range st.dirty {
		var eps []vpc.Endpoint
		if t := st.tracked[v]; t != nil {
			eps = make([]vpc.Endpoint, 0, len(t.eps))
			for _, e := range t.eps {
				eps = append(eps, e)
			}
		}
		for _, s := range st.services {
			if s.VPC != v {
				continue
			}
			want := service.Resolve(s, eps)
			if have, ok := st.records[s.Key()]; ok && slices.Equal(have.Backends, want.Backends) {
				continue
			}
			if err := ss.PutServiceBackends(ctx, want); errors.Is(err, store.ErrNotFound) {
				continue // deleted meanwhile: its delete event follows
			} else if err != nil {
				return fmt.Errorf("write backends of service %q: %w", s.Key(), err)
			}
			st.records[s.Key()] = want
			r.log().Info("service resolver: backends", "service", s.Key(), "count", len(want.Backends))
		}
		delete(st.dirty, v)
	}
	return nil
}
