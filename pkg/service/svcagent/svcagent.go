// Package svcagent is the node side of services: it follows the services
// and resolved backend records of the store and programs the frontends of
// the VPCs hosted on the node into the data plane (one Maglev table per
// {vni, vip, port, protocol}), and runs the conntrack GC.
//
// It keeps the service and backend records of every VPC (a few per
// service, far fewer than endpoints) and programs only the hosted ones;
// the hosted set is polled, so a VPC gets its services within one poll of
// its first local pod. Tables are rewritten only when their content
// changes; a restarted agent rewrites each once (flows keep their backends
// through conntrack, which survives in the pinned maps).
package svcagent

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/service"
	"github.com/cni-genie/cni-genie/pkg/store"
)

// Programmer is the part of the data plane the syncer drives
// (*datapath.Datapath).
type Programmer interface {
	UpsertService(datapath.ServiceKey, datapath.ServiceTable) error
	DeleteService(datapath.ServiceKey) error
	Services() ([]datapath.ServiceEntry, error)
}

// Syncer programs the hosted VPCs' services.
type Syncer struct {
	Store store.ServiceStore
	DP    Programmer
	// Hosted returns the VPCs hosted on the node with their VNIs.
	Hosted func() map[string]uint32
	// Poll is how often the hosted set is re-read (default 1 s).
	Poll time.Duration
	// Log gets errors and changes; nil discards.
	Log *slog.Logger
	// Synced, if not nil, is closed once the first listing is programmed
	// (an upgrading agent attaches its new programs after that).
	Synced chan struct{}

	services map[string]service.Service
	backends map[string]service.Backends
	// programmed: frontend -> fingerprint of its table.
	programmed map[datapath.ServiceKey]uint64
}

func (s *Syncer) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Run syncs until ctx ends, starting over from a listing after a watch
// failure.
func (s *Syncer) Run(ctx context.Context) error {
	for {
		err := s.run(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log().Error("services: sync restarting", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (s *Syncer) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	svcs, rev, err := s.Store.ListServices(ctx, "")
	if err != nil {
		return err
	}
	recs, _, err := s.Store.ListServiceBackends(ctx, "")
	if err != nil {
		return err
	}
	s.services = map[string]service.Service{}
	s.backends = map[string]service.Backends{}
	for _, v := range svcs {
		s.services[v.Key()] = v
	}
	for _, b := range recs {
		s.backends[b.Key()] = b
	}
	if s.programmed == nil {
		// First sync since start: frontends in the pinned maps that are
		// no longer wanted are removed by the first reconcile.
		s.programmed = map[datapath.ServiceKey]uint64{}
		have, err := s.DP.Services()
		if err != nil {
			return err
		}
		for _, e := range have {
			s.programmed[e.Key] = 0 // unknown content: rewritten if wanted
		}
	}
	ch := s.Store.WatchServices(ctx, "", rev)
	poll := s.Poll
	if poll == 0 {
		poll = time.Second
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	if err := s.reconcile(); err != nil {
		return err
	}
	if s.Synced != nil {
		close(s.Synced)
		s.Synced = nil
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-ch:
			if !ok || ev.Type == store.EventError {
				return fmt.Errorf("service watch: %v", ev.Err)
			}
			s.apply(ev)
			// Drain what is queued, then reconcile once.
			for more := true; more; {
				select {
				case ev, ok := <-ch:
					if !ok || ev.Type == store.EventError {
						return fmt.Errorf("service watch: %v", ev.Err)
					}
					s.apply(ev)
				default:
					more = false
				}
			}
		case <-tick.C:
		}
		if err := s.reconcile(); err != nil {
			s.log().Error("services: programming failed", "err", err)
		}
	}
}

func (s *Syncer) apply(ev store.ServiceEvent) {
	switch {
	case ev.Service != nil && ev.Type == store.EventPut:
		s.services[ev.Service.Key()] = *ev.Service
	case ev.Service != nil:
		delete(s.services, ev.Service.Key())
		delete(s.backends, ev.Service.Key())
	case ev.Backends != nil && ev.Type == store.EventPut:
		s.backends[ev.Backends.Key()] = *ev.Backends
	case ev.Backends != nil:
		delete(s.backends, ev.Backends.Key())
	}
}

// Desired computes the frontends of the hosted VPCs and their tables.
func Desired(hosted map[string]uint32, services map[string]service.Service, backends map[string]service.Backends) (map[datapath.ServiceKey]datapath.ServiceTable, error) {
	out := map[datapath.ServiceKey]datapath.ServiceTable{}
	for key, sv := range services {
		vni, ok := hosted[sv.VPC]
		if !ok || !sv.VIP.Is4() {
			continue
		}
		b := backends[key]
		for _, p := range sv.Ports {
			slots, err := sv.Table(b, p)
			if err != nil {
				return nil, err
			}
			proto := datapath.TCP
			if p.Protocol == service.UDP {
				proto = datapath.UDP
			}
			t := datapath.ServiceTable{AffinityClientIP: sv.Affinity == service.AffinityClientIP, Slots: make([]datapath.Backend, len(slots))}
			for i, a := range slots {
				t.Slots[i] = datapath.Backend{IP: a.Addr(), Port: a.Port()}
			}
			out[datapath.ServiceKey{VNI: vni, VIP: sv.VIP, Port: p.Port, Proto: proto}] = t
		}
	}
	return out, nil
}

func fingerprint(t datapath.ServiceTable) uint64 {
	h := fnv.New64a()
	var b [7]byte
	if t.AffinityClientIP {
		b[6] = 1
	}
	for _, s := range t.Slots {
		a := s.IP.As4()
		copy(b[:4], a[:])
		b[4], b[5] = byte(s.Port>>8), byte(s.Port)
		_, _ = h.Write(b[:])
	}
	return h.Sum64() | 1 // never 0, the "unknown" mark
}

func (s *Syncer) reconcile() error {
	want, err := Desired(s.Hosted(), s.services, s.backends)
	if err != nil {
		return err
	}
	for k, t := range want {
		fp := fingerprint(t)
		if s.programmed[k] == fp {
			continue
		}
		if err := s.DP.UpsertService(k, t); err != nil {
			return err
		}
		s.programmed[k] = fp
		s.log().Info("services: programmed", "frontend", k.String(), "slots", len(t.Slots))
	}
	for k := range s.programmed {
		if _, ok := want[k]; ok {
			continue
		}
		if err := s.DP.DeleteService(k); err != nil {
			return err
		}
		delete(s.programmed, k)
		s.log().Info("services: removed", "frontend", k.String())
	}
	return nil
}

// Conntrack is the part of the data plane the GC drives.
type Conntrack interface {
	GCConntrack() (datapath.ConntrackStats, error)
}

// RunGC runs the conntrack GC every interval until ctx ends, reporting
// each pass's stats to report (metrics).
func RunGC(ctx context.Context, ct Conntrack, interval time.Duration, report func(datapath.ConntrackStats), log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := ct.GCConntrack()
		if err != nil {
			if log != nil {
				log.Error("conntrack gc", "err", err)
			}
			continue
		}
		if report != nil {
			report(st)
		}
	}
}
