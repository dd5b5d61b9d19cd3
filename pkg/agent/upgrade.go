package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/prometheus/client_golang/prometheus"
)

// upgradeServiceWait bounds how long an upgrading start-up waits for the
// service syncer's first pass before attaching the new programs anyway
// (a store that lists services that slowly delays only the service flows
// of new connections; established ones keep their conntrack entries).
const upgradeServiceWait = 30 * time.Second

// reportUpgrade logs and exports what Open migrated (one line and one
// metric series per replaced map) and reports whether an upgrade is
// pending: then the new programs may only be attached once restore, the
// VPC syncs and the service sync have filled the new maps.
func (a *Agent) reportUpgrade(dp *datapath.Datapath) bool {
	migs := dp.Migrations()
	if len(migs) > 0 {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "genie_map_migration_entries",
			Help: "Entries of each map the data plane replaced at this start-up (another data plane version or other map sizes), by role and outcome: kept (carried over), lost (could not be), rebuilt (derived state the agent rewrote).",
		}, []string{"map", "role", "outcome"})
		if err := a.m.reg.Register(g); err != nil {
			a.log.Warn("map migration metric", "err", err)
		}
		for _, m := range migs {
			a.log.Info("data plane map migrated", "map", m.Map, "role", m.Role.String(), "old", m.Old.String(), "new", m.New.String(),
				"reason", m.Reason, "entries", m.Entries, "kept", m.Kept, "lost", m.Lost)
			if m.Role == datapath.MapDerived {
				g.WithLabelValues(m.Map, m.Role.String(), "rebuilt").Set(float64(m.Entries))
				continue
			}
			g.WithLabelValues(m.Map, m.Role.String(), "kept").Set(float64(m.Kept))
			g.WithLabelValues(m.Map, m.Role.String(), "lost").Set(float64(m.Lost))
		}
	}
	pending := dp.UpgradePending()
	if pending && len(migs) == 0 {
		a.log.Info("finishing a data plane upgrade an earlier agent started")
	}
	return pending
}

// finishUpgrade runs after restore (local endpoints written, each hosted
// VPC's remote endpoints synced) once the services are programmed: it
// attaches the uplink program and the pod programs restore deferred, the
// moment traffic moves from the old maps to the new ones, then lets the
// data plane catch up with what the old programs wrote meanwhile and
// unpin the old maps.
func (a *Agent) finishUpgrade(ctx context.Context, svcSynced <-chan struct{}) error {
	a.notReady.Store("upgrading data plane: waiting for services")
	start := time.Now()
	t := time.NewTimer(upgradeServiceWait)
	defer t.Stop()
	select {
	case <-svcSynced:
	case <-t.C:
		a.log.Warn("services not programmed yet: attaching the new data plane anyway", "waited", upgradeServiceWait)
	case <-ctx.Done():
		return ctx.Err()
	}
	a.notReady.Store("upgrading data plane: attaching programs")
	deferred := a.deferred
	a.deferAttach, a.deferred = false, nil
	if err := a.attachUplink(); err != nil {
		return err
	}
	for _, at := range deferred {
		if err := a.dp.AttachEndpoint(at.HostIndex); err != nil {
			return fmt.Errorf("restoring attachment %s/%s: attaching pod program to %s: %w", at.ContainerID, at.IfName, at.HostIf, err)
		}
	}
	a.mu.Lock()
	cu, err := a.dp.FinishUpgrade()
	a.mu.Unlock()
	if err != nil {
		// The new programs run; the old maps stay pinned for the next
		// agent to catch up with. Not worth failing the start-up for.
		a.log.Warn("data plane upgrade not finished", "err", err)
		return nil
	}
	a.log.Info("data plane upgraded", "pods", len(deferred), "flows_caught_up", cu.Flows, "counters_caught_up", cu.Counters,
		"services_wait", time.Since(start).Round(time.Millisecond))
	return nil
}
