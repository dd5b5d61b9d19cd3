package agent

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store"
)

// vpcWatch follows the endpoints of the VPCs hosted here through one
// store.VPCWatcher stream (the Kubernetes backend: a label selector the
// API server's watch cache evaluates), so the node receives its VPCs'
// endpoints only, where WatchEndpoints(ctx, "", rev) would stream every
// endpoint of the cluster to every node.
//
// A stream's VPC set is fixed, so a VPC acquired here restarts it: the
// acquiring ADD calls join before it lists the VPC, recording the last
// revision delivered so far (J, at or below the listing's revision), and
// kicks the loop, which cancels the stream, drains it and watches the new
// set from min(last delivered, every J). No change of a joining VPC is
// lost (events up to its listing are dropped by the listing filter of
// applyEndpoint), and events of VPCs the previous stream already covered
// come again only up to the last revision it delivered; they are skipped.
// Restarts are spaced by minWatchRestart and kicks coalesce, so a start-up
// restoring many VPCs restarts the stream tens of times, not once per VPC.
// A VPC no longer hosted stays in the set
// until the next restart; applyEndpoint drops its events.
type vpcWatch struct {
	w    store.VPCWatcher
	kick chan struct{}

	mu sync.Mutex
	// seen is the revision of the last event delivered to applyEndpoint
	// (or the start revision).
	seen int64
	// joined are the VPCs acquired since the current stream started, with
	// seen at that moment.
	joined map[string]int64
}

// minWatchRestart spaces the restarts of the stream: joins within it
// share one restart (a start-up restoring 1,000 VPCs one at a time makes
// tens of watch requests, not 1,000). A joining VPC's changes made after
// its listing wait for the restart, at most this long.
const minWatchRestart = 50 * time.Millisecond

func newVPCWatch(w store.VPCWatcher, rev int64) *vpcWatch {
	return &vpcWatch{w: w, kick: make(chan struct{}, 1), seen: rev, joined: map[string]int64{}}
}

// join adds a VPC about to be listed to the watched set.
func (w *vpcWatch) join(name string) {
	w.mu.Lock()
	if _, ok := w.joined[name]; !ok {
		w.joined[name] = w.seen
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// joinWatch tells the VPC-scoped watch (if the store offers one) that the
// VPC is hosted here from now on; call it after the VPC is in a.vpcs and
// before it is listed.
func (a *Agent) joinWatch(name string) {
	if a.vpcw != nil {
		a.vpcw.join(name)
	}
}

// hostedVPCNames returns the names of the VPCs hosted here, sorted.
func (a *Agent) hostedVPCNames() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	names := make([]string, 0, len(a.vpcs))
	for n := range a.vpcs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// runVPCWatch is the endpoint watch loop on a store.VPCWatcher (see
// vpcWatch); it has the failure handling of startEndpointWatch.
func (a *Agent) runVPCWatch(ctx context.Context) {
	defer close(a.epWatchDone)
	w := a.vpcw
	backoff := minBackoff
	var watched map[string]bool // the previous stream's set
	for ctx.Err() == nil {
		w.mu.Lock()
		from, replayed := w.seen, w.seen
		for _, j := range w.joined {
			from = min(from, j)
		}
		clear(w.joined)
		w.mu.Unlock()
		names := a.hostedVPCNames()
		prev := watched
		watched = make(map[string]bool, len(names))
		for _, n := range names {
			watched[n] = true
		}
		if len(names) == 0 {
			select {
			case <-w.kick:
				continue
			case <-ctx.Done():
				return
			}
		}
		a.log.Info("watching endpoints of hosted vpcs", "vpcs", len(names), "from_revision", from)
		sctx, cancel := context.WithCancel(ctx)
		started := time.Now()
		ch := w.w.WatchEndpointsIn(sctx, names, from)
		kicked, failed, compacted := false, false, false
		var restart <-chan time.Time
		var timer *time.Timer
		for open := true; open; {
			select {
			case <-w.kick:
				if kicked {
					continue // a restart is due; it takes every join
				}
				kicked = true
				if d := minWatchRestart - time.Since(started); d > 0 {
					timer = time.NewTimer(d)
					restart = timer.C
				} else {
					cancel() // the stream closes; drain it
				}
			case <-restart:
				cancel()
			case ev, ok := <-ch:
				if !ok {
					open = false
					break
				}
				switch ev.Type {
				case store.EventPut, store.EventDelete:
					backoff = minBackoff
					if prev[ev.Endpoint.VPC] && ev.Revision <= replayed {
						continue // the previous stream delivered it
					}
					a.applyEndpoint(ev)
					w.mu.Lock()
					w.seen = max(w.seen, ev.Revision)
					w.mu.Unlock()
				case store.EventError:
					if sctx.Err() != nil {
						continue
					}
					failed = true
					a.m.storeErrors.WithLabelValues("watch_endpoints").Inc()
					a.log.Warn("endpoint watch failed", "err", ev.Err, "vpcs", len(names), "resume_from", w.seen)
					compacted = errors.Is(ev.Err, store.ErrCompacted)
				}
			}
		}
		cancel()
		if timer != nil {
			timer.Stop()
		}
		if kicked && !failed {
			continue
		}
		if !failed && ctx.Err() == nil {
			// The stream ended without an error or a kick (it should
			// not); watch again after the backoff.
			a.log.Warn("endpoint watch ended", "vpcs", len(names), "resume_from", w.seen)
		}
		for ctx.Err() == nil {
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, maxBackoff)
			if !compacted {
				break
			}
			r, err := a.resyncAll(ctx)
			if err != nil {
				a.log.Warn("endpoint resync failed", "err", err)
				continue
			}
			w.mu.Lock()
			w.seen = r
			w.mu.Unlock()
			watched = nil // every hosted VPC was listed at or after r
			a.m.resyncs.Inc()
			break
		}
	}
}
