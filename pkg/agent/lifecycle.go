package agent

import (
	"context"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agent/reclaim"
)

// startNodeLifecycle starts the node's heartbeat (re-registering the node
// with a fresh Heartbeat every quarter of NodeReclaimAfter) and the dead
// node reclaimer (package reclaim), both for the agent's lifetime.
func (a *Agent) startNodeLifecycle(ctx context.Context) {
	after := a.cfg.NodeReclaimAfter
	if after <= 0 {
		return
	}
	every := max(after/4, time.Second)
	a.bg.Add(2)
	go func() {
		defer a.bg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			n := a.node
			n.Heartbeat = time.Now()
			hctx, cancel := context.WithTimeout(ctx, every)
			err := a.st.RegisterNode(hctx, n)
			cancel()
			if err != nil && ctx.Err() == nil {
				a.m.storeErrors.WithLabelValues("heartbeat").Inc()
				a.log.Warn("node heartbeat", "err", err)
			}
		}
	}()
	r := &reclaim.Reclaimer{Store: a.st, Self: a.cfg.NodeName, After: after, Log: a.log.With("component", "reclaim")}
	go func() {
		defer a.bg.Done()
		r.Run(ctx, every)
	}()
}
