package genie

import (
	"context"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sync/errgroup"
)

// attachWaves splits the n networks of a record into the groups ADD runs
// one after another; the networks of one group run at once. The rule:
//
//   - The pod's first network (CNI_IFNAME, the address the runtime reports
//     for the pod) is attached alone, first. Other networks may depend on
//     it (a route via its gateway, a chained tuning or sbr plugin reading
//     the pod's interfaces), and when it fails nothing else is attached.
//   - The other networks are then attached together: no attachment's input
//     is another's result (prevResult only flows inside one conflist,
//     which libcni runs in order), each works on its own interface name,
//     and every delegate must already cope with concurrent calls, since a
//     runtime starts many pods at once. What needs every result (the
//     NPWG default-route, network-status, the merged result) runs after
//     the last group.
//   - parallelism 1 (attachParallelism) gives one group per network: the
//     strict order of the selection, for networks that do depend on each
//     other (a route of one network via another secondary's gateway).
func attachWaves(n, parallelism int) [][]int {
	var waves [][]int
	for i := 0; i < n; i++ {
		if i == 0 || parallelism <= 1 {
			waves = append(waves, []int{i})
			continue
		}
		if len(waves) == 1 {
			waves = append(waves, nil)
		}
		waves[1] = append(waves[1], i)
	}
	return waves
}

// attachment is what ADD did for one network of a record.
type attachment struct {
	// ran: ADD was started (its delegate may have left work behind even
	// when it failed), so a rollback deletes it.
	ran  bool
	res  *current.Result
	err  error
	took time.Duration
}

// attachAll runs ADD for rec's networks in the waves of attachWaves,
// stopping after the first wave in which one failed. It returns what
// happened to each network (in record order, whatever the order of
// completion) and the wall time spent. Networks of one wave run in
// goroutines that each enter the calling thread's network namespace, so
// their delegates start where a sequential ADD would start them (the
// host's, or the namespace an embedding caller switched to).
func (inv *invocation) attachAll(ctx context.Context, rec *Record) ([]attachment, time.Duration) {
	t0 := time.Now()
	out := make([]attachment, len(rec.Networks))
	for _, wave := range attachWaves(len(rec.Networks), inv.conf.AttachParallelism) {
		if len(wave) == 1 {
			inv.attachOne(ctx, rec, wave[0], &out[wave[0]])
		} else {
			inv.attachWave(ctx, rec, wave, out)
		}
		for _, i := range wave {
			if out[i].err != nil {
				return out, time.Since(t0)
			}
		}
	}
	return out, time.Since(t0)
}

// attachWave runs the networks of one wave at once, at most
// attachParallelism at a time. It waits for all of them: a delegate is
// never killed because another failed (a plugin killed mid-ADD leaves
// more behind than one that finished).
func (inv *invocation) attachWave(ctx context.Context, rec *Record, wave []int, out []attachment) {
	here, err := ns.GetCurrentNS()
	if err != nil {
		// Without a handle on the caller's namespace, run in order
		// rather than risk delegates starting elsewhere.
		inv.log.Warn("attach: cannot open the current network namespace; attaching one by one", "err", err)
		for _, i := range wave {
			if inv.attachOne(ctx, rec, i, &out[i]); out[i].err != nil {
				return
			}
		}
		return
	}
	defer here.Close()
	var g errgroup.Group
	g.SetLimit(inv.conf.AttachParallelism)
	for _, i := range wave {
		g.Go(func() error {
			err := here.Do(func(ns.NetNS) error {
				inv.attachOne(ctx, rec, i, &out[i])
				return nil
			})
			if err != nil && !out[i].ran {
				out[i].err = fmt.Errorf("entering the network namespace: %w", err)
			}
			return nil
		})
	}
	_ = g.Wait()
}

// attachOne runs ADD for network i of rec into a.
func (inv *invocation) attachOne(ctx context.Context, rec *Record, i int, a *attachment) {
	n := &rec.Networks[i]
	t0 := time.Now()
	a.ran = true
	a.res, a.err = inv.attach(ctx, rec, n)
	a.took = time.Since(t0)
	inv.log.Debug("attach", "network", n.Selection, "ifname", n.IfName, "took", a.took, "err", a.err)
}

// firstFailure is the index of the first network, in record order, whose
// ADD failed; -1 when none did.
func firstFailure(atts []attachment) int {
	for i := range atts {
		if atts[i].err != nil {
			return i
		}
	}
	return -1
}

// rollback undoes an ADD that failed with e: it deletes, in reverse record
// order, every network whose ADD ran (those that succeeded and those that
// failed: a failed plugin may have left part of its work behind), never
// one that was not started. A DEL failure of a network whose own ADD
// failed is only logged (its DEL often fails for the same reason, e.g. a
// bad config); any other leaves the record for the runtime's DEL to retry,
// said in e's details. It returns e.
func (inv *invocation) rollback(ctx context.Context, rec *Record, atts []attachment, e *types.Error) *types.Error {
	var first error
	for i := len(rec.Networks) - 1; i >= 0; i-- {
		if !atts[i].ran {
			continue
		}
		n := &rec.Networks[i]
		err := inv.detach(ctx, rec, n, rec.Netns)
		switch {
		case err == nil:
		case atts[i].err != nil:
			inv.log.Warn("rollback: delete of the failed network", "network", n.Selection, "ifname", n.IfName, "err", err)
		default:
			inv.log.Error("delete failed", "container", rec.ContainerID, "network", n.Selection, "ifname", n.IfName, "err", err)
			if first == nil {
				first = stepError(types.ErrInternal, fmt.Sprintf("network %q (%s): delete", n.Selection, n.IfName), err)
			}
		}
	}
	if first != nil {
		e.Details = "rollback incomplete, DEL will retry: " + first.Error()
	} else if err := inv.store.remove(rec.ContainerID, rec.IfName); err != nil {
		e.Details = err.Error()
	}
	return e
}
