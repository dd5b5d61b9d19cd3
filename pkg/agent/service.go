package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/service/resolver"
	"github.com/cni-genie/cni-genie/pkg/service/svcagent"
	"github.com/cni-genie/cni-genie/pkg/store"
)

// conntrackGCInterval is how often expired conntrack pairs are deleted.
const conntrackGCInterval = 30 * time.Second

var errDataPlaneClosed = errors.New("data plane closed")

// startServices wires the services feature (package service and its
// subpackages) when the store has services: the syncer programming the
// hosted VPCs' frontends, a candidate for the cluster's backend resolver
// (store.LeaderElector), and the conntrack GC with its metrics. All stop
// with ctx. The channel is closed once the hosted VPCs' services are
// programmed (at once without services).
func (a *Agent) startServices(ctx context.Context) <-chan struct{} {
	synced := make(chan struct{})
	ss, ok := a.st.(store.ServiceStore)
	if !ok {
		a.log.Info("services disabled: the store has no service records")
		close(synced)
		return synced
	}
	log := a.log.With("component", "services")
	sy := &svcagent.Syncer{Store: ss, DP: agentServiceDP{a}, Hosted: a.hostedVNIs, Log: log, Synced: synced}
	go func() { _ = sy.Run(ctx) }()
	if _, ok := a.st.(store.LeaderElector); ok {
		r := &resolver.Resolver{Store: a.st, ID: a.cfg.NodeName, Log: log}
		go func() { _ = r.RunElected(ctx) }()
	}
	// The GC has its own handle on the pinned map: a pass over a large map
	// takes seconds and must not hold the agent's lock.
	ct, err := datapath.OpenConntrack(a.cfg.PinDir)
	if err != nil {
		log.Error("conntrack gc disabled", "err", err)
		return synced
	}
	report := a.conntrackMetrics()
	go func() {
		defer ct.Close()
		svcagent.RunGC(ctx, ct, conntrackGCInterval, report, log)
	}()
	return synced
}

// hostedVNIs returns the VPCs hosted here and their VNIs.
func (a *Agent) hostedVNIs() map[string]uint32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]uint32, len(a.vpcs))
	for name, vs := range a.vpcs {
		if vs.vpc.VNI != 0 {
			out[name] = vs.vpc.VNI
		}
	}
	return out
}

// agentServiceDP gives the services code the data plane under the agent's
// lock, and nothing once it is closed.
type agentServiceDP struct{ a *Agent }

func (p agentServiceDP) do(f func(*datapath.Datapath) error) error {
	p.a.mu.Lock()
	defer p.a.mu.Unlock()
	if p.a.dp == nil || p.a.dpClosed {
		return errDataPlaneClosed
	}
	return f(p.a.dp)
}

func (p agentServiceDP) UpsertService(k datapath.ServiceKey, t datapath.ServiceTable) error {
	return p.do(func(d *datapath.Datapath) error { return d.UpsertService(k, t) })
}

func (p agentServiceDP) DeleteService(k datapath.ServiceKey) error {
	return p.do(func(d *datapath.Datapath) error { return d.DeleteService(k) })
}

func (p agentServiceDP) Services() (out []datapath.ServiceEntry, err error) {
	err = p.do(func(d *datapath.Datapath) error { out, err = d.Services(); return err })
	return out, err
}

// conntrackMetrics registers the conntrack gauges and returns the GC's
// reporter.
func (a *Agent) conntrackMetrics() func(datapath.ConntrackStats) {
	entries := prometheus.NewGauge(prometheus.GaugeOpts{Name: "genie_conntrack_entries", Help: "Conntrack entries (both directions of every tracked flow) after the last GC."})
	capacity := prometheus.NewGauge(prometheus.GaugeOpts{Name: "genie_conntrack_capacity", Help: "Capacity of the conntrack map; at capacity the LRU evicts live flows."})
	deleted := prometheus.NewCounter(prometheus.CounterOpts{Name: "genie_conntrack_gc_deleted_total", Help: "Expired conntrack entries deleted by the GC."})
	failures := prometheus.NewGauge(prometheus.GaugeOpts{Name: "genie_conntrack_insert_failures", Help: "Failed conntrack inserts since the data plane was created (packets dropped as CT_FAILED)."})
	if a.m != nil && a.m.reg != nil {
		for _, c := range []prometheus.Collector{entries, capacity, deleted, failures} {
			_ = a.m.reg.Register(c)
		}
	}
	return func(st datapath.ConntrackStats) {
		entries.Set(float64(st.Entries))
		capacity.Set(float64(st.Capacity))
		deleted.Add(float64(st.Deleted))
		failures.Set(float64(st.InsertFailures))
	}
}

// labelSet is a pod's labels in canonical form ("k=v\n" per label, keys
// sorted): comparable, so an attachment record stays a plain value.
type labelSet string

func newLabelSet(m map[string]string) labelSet {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + m[k] + "\n")
	}
	return labelSet(b.String())
}

func (l labelSet) labels() map[string]string {
	if l == "" {
		return nil
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(string(l), "\n"), "\n") {
		k, v, _ := strings.Cut(line, "=")
		out[k] = v
	}
	return out
}
