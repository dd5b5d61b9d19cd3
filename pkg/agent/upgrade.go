package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/prometheus/client_golang/prometheus"
)

// upgradeServiceWait bounds how long an upgrading start-up waits for the
// service syncer's and the egress agent's first passes before attaching
// the new programs anyway (a store that lists them that slowly delays
// only the service and egress flows of new connections; established ones
// keep their conntrack and egress flow entries).
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

// attachUplink attaches the uplink program, and the XDP prefilter if
// configured (else removes one an earlier run attached).
func (a *Agent) attachUplink() error {
	if err := a.dp.AttachUplink(a.uplinkIx); err != nil {
		return fmt.Errorf("attaching uplink program to %s: %w", a.cfg.Uplink, err)
	}
	if a.cfg.XDPPrefilter {
		if err := a.dp.AttachUplinkPrefilter(a.uplinkIx); err != nil {
			return fmt.Errorf("attaching XDP prefilter to %s: %w", a.cfg.Uplink, err)
		}
	} else if err := a.dp.DetachUplinkPrefilter(a.uplinkIx); err != nil {
		// One an earlier run pinned stays attached otherwise.
		return fmt.Errorf("detaching XDP prefilter from %s: %w", a.cfg.Uplink, err)
	}
	return nil
}

// finishUpgrade runs after restore (local endpoints written, each hosted
// VPC's remote endpoints synced) once the services and egress gateways are
// programmed (synced: their first passes): it attaches the uplink program
// and the pod programs restore deferred, the moment traffic moves from the
// old maps to the new ones, then lets the data plane catch up with what
// the old programs wrote meanwhile and unpin the old maps.
func (a *Agent) finishUpgrade(ctx context.Context, synced ...<-chan struct{}) error {
	a.notReady.Store("upgrading data plane: waiting for services and egress gateways")
	start := time.Now()
	t := time.NewTimer(upgradeServiceWait)
	defer t.Stop()
wait:
	for _, ch := range synced {
		select {
		case <-ch:
		case <-t.C:
			a.log.Warn("services or egress gateways not programmed yet: attaching the new data plane anyway", "waited", upgradeServiceWait)
			break wait
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	waited := time.Since(start)
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
		"sync_wait", waited.Round(time.Millisecond), "attach", (time.Since(start) - waited).Round(time.Millisecond))
	return nil
}
