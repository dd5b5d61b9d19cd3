package directory

import "github.com/prometheus/client_golang/prometheus"

// metrics are a node's directory metrics, registered on the Registerer
// the Config passes (a private registry when nil).
type metrics struct {
	lookups        *prometheus.CounterVec
	attempts       *prometheus.CounterVec
	served         *prometheus.CounterVec
	lookupSeconds  prometheus.Histogram
	failover       prometheus.Histogram
	invSent        prometheus.Counter
	invFailed      prometheus.Counter
	invReceived    prometheus.Counter
	shardMoves     *prometheus.CounterVec
	shardsHeld     prometheus.Gauge
	records        prometheus.Gauge
	members        prometheus.Gauge
	sourceRestarts prometheus.Counter
	published      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	const ns, sub = "genie", "directory"
	m := &metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "lookups_total",
			Help: "Lookups this node made, by result: hit (a holder had the record), miss (authoritatively absent), unavailable (no holder answered)."}, []string{"result"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "lookup_attempts_total",
			Help: "Lookup RPCs to holders, by outcome (found, not-found, not-holder, loading, error)."}, []string{"outcome"}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "served_total",
			Help: "Lookups this node served as a holder, by status."}, []string{"status"}),
		lookupSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "lookup_seconds",
			Help: "Latency of lookups that found a record.", Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16)}),
		failover: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "failover_seconds",
			Help: "Latency of lookups answered by a later replica after an earlier one failed.", Buckets: prometheus.ExponentialBuckets(1e-3, 2, 14)}),
		invSent: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "invalidations_sent_total",
			Help: "Invalidations pushed to lookers."}),
		invFailed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "invalidations_failed_total",
			Help: "Invalidations that could not be delivered."}),
		invReceived: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "invalidations_received_total",
			Help: "Invalidations received for learned records (including re-lookups that found a change)."}),
		shardMoves: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "shard_moves_total",
			Help: "Shards this node gained (loaded from the source) or dropped on membership changes."}, []string{"direction"}),
		shardsHeld: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "shards_held",
			Help: "Shards this node holds (loaded or loading)."}),
		records: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "records",
			Help: "Records in the shards this node holds."}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "members",
			Help: "Live members in this node's placement."}),
		sourceRestarts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "source_restarts_total",
			Help: "Source watches restarted after an error (a relist of every held shard)."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "published_total",
			Help: "Holders that applied a record this node published."}),
	}
	reg.MustRegister(m.lookups, m.attempts, m.served, m.lookupSeconds, m.failover, m.invSent, m.invFailed,
		m.invReceived, m.shardMoves, m.shardsHeld, m.records, m.members, m.sourceRestarts, m.published)
	return m
}
