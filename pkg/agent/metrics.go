package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics holds the agent's Prometheus instruments, on a registry of its
// own so that tests can run several agents in one process.
type metrics struct {
	reg         *prometheus.Registry
	addSeconds  prometheus.Histogram
	propagation prometheus.Histogram
	delSeconds  prometheus.Histogram
	addErrors   prometheus.Counter
	endpoints   *prometheus.GaugeVec
	storeErrors *prometheus.CounterVec
	watches     prometheus.Gauge
	resyncs     prometheus.Counter
	mapCap      *prometheus.GaugeVec
	mapFull     *prometheus.CounterVec
}

// dropsCollector reads the data plane's per-reason drop counters at scrape
// time, so the agent keeps no copy of them.
type dropsCollector struct {
	desc  *prometheus.Desc
	drops func() (map[string]uint64, error)
}

func (c *dropsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *dropsCollector) Collect(ch chan<- prometheus.Metric) {
	drops, err := c.drops()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for reason, n := range drops {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), reason)
	}
}

func newMetrics(drops func() (map[string]uint64, error)) *metrics {
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		addSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "genie_attach_duration_seconds", Help: "Latency of VPC attachments (CNI ADD).", Buckets: buckets}),
		delSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "genie_detach_duration_seconds", Help: "Latency of VPC detachments (CNI DEL).", Buckets: buckets}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "genie_endpoint_propagation_seconds",
			Help:    "Time from a remote agent publishing an endpoint to its entry in this node's data plane (across nodes: as exact as their clock sync).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5}}),
		addErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "genie_attach_errors_total", Help: "VPC attachments that failed."}),
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "genie_endpoints", Help: "Endpoints programmed in the data plane, by scope (local or remote)."}, []string{"scope"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genie_store_errors_total", Help: "Failed store operations, by operation."}, []string{"op"}),
		watches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "genie_vpc_watches", Help: "VPCs whose endpoints this node watches (the VPCs it hosts)."}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "genie_watch_resyncs_total", Help: "Full re-lists after a watch error."}),
		mapCap: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "genie_map_capacity", Help: "Capacity (max_entries) of the data plane's maps, by map; compare genie_endpoints with map=\"endpoints\" for the fill."}, []string{"map"}),
		mapFull: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genie_map_full_errors_total", Help: "Map writes refused because the map is full, by scope (local attachment or remote endpoint)."}, []string{"scope"}),
	}
	m.reg.MustRegister(m.addSeconds, m.propagation, m.delSeconds, m.addErrors, m.endpoints, m.storeErrors, m.watches, m.resyncs, m.mapCap, m.mapFull,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if drops != nil {
		m.reg.MustRegister(&dropsCollector{
			desc:  prometheus.NewDesc("genie_datapath_drops_total", "Packets dropped by the data plane, by reason.", []string{"reason"}, nil),
			drops: drops,
		})
	}
	return m
}

// setMapCapacity publishes the loaded maps' capacities.
func (m *metrics) setMapCapacity(s datapath.MapSizes) {
	m.mapCap.WithLabelValues("endpoints").Set(float64(s.Endpoints))
	m.mapCap.WithLabelValues("pod_interfaces").Set(float64(s.LXC))
	m.mapCap.WithLabelValues("nodes").Set(float64(s.Nodes))
	m.mapCap.WithLabelValues("vpcs").Set(float64(s.VNIs))
}

// countMapFull counts err if a map was full.
func (m *metrics) countMapFull(scope string, err error) {
	if errors.Is(err, datapath.ErrMapFull) {
		m.mapFull.WithLabelValues(scope).Inc()
	}
}

// serve serves /metrics, and the probes' /healthz (200 while the process
// serves) and /readyz (200 when ready reports so, else 503 with the
// reason), and with withPprof Go's /debug/pprof/, on addr until ctx ends.
func (m *metrics) serve(ctx context.Context, addr string, withPprof bool, log *slog.Logger, ready func(context.Context) (bool, string)) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if ok, why := ready(r.Context()); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	return l.Addr(), nil
}
