package agent

import (
	"flag"
	"fmt"

	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/qos"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
)

// registerQoSFlags binds the QoS flags.
func (c *Config) registerQoSFlags(fs *flag.FlagSet) {
	fs.Func("qos-uplink-rate", "rate of the uplink in bits/s (e.g. 10G, 500M): installs the QoS HTB tree on its egress, which enforces the pods' classes and egress limits (default: no tree; classes only mark DSCP)",
		func(s string) error {
			r, err := qos.ParseRate(s)
			if err != nil {
				return err
			}
			if r < qos.MinRate {
				return fmt.Errorf("%d bit/s is below the minimum %d", r, qos.MinRate)
			}
			c.QoSUplinkRate = r
			return nil
		})
}

// startQoS installs the uplink's HTB tree when a rate is configured, or
// removes the one an earlier run installed.
func (a *Agent) startQoS() error {
	link, err := netlink.LinkByIndex(a.uplinkIx)
	if err != nil {
		return fmt.Errorf("qos: uplink %s: %w", a.cfg.Uplink, err)
	}
	a.m.reg.MustRegister(newQoSCollector(a))
	if a.cfg.QoSUplinkRate == 0 {
		if err := qos.Remove(link); err != nil {
			return fmt.Errorf("qos: %w", err)
		}
		return nil
	}
	t, err := qos.Install(link, a.cfg.QoSUplinkRate)
	if err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	a.qos = t
	a.m.reg.MustRegister(qos.NewCollector(t))
	return nil
}

// checkQoS validates an attach request's QoS before anything is created.
// Ingress limits need nothing on the node (the data plane polices them);
// egress limits need the uplink's tree.
func (a *Agent) checkQoS(s *qos.Spec) error {
	if s == nil {
		return nil
	}
	if err := s.Validate(); err != nil {
		return fail(types.ErrInvalidNetworkConfig, "qos", err)
	}
	if s.EgressRate != 0 && a.qos == nil {
		return fail(types.ErrInvalidNetworkConfig, "qos", fmt.Errorf("egressRate: %w (genied --qos-uplink-rate)", qos.ErrNoTree))
	}
	return nil
}

// resolveQoS records the attachment's class (the request's, else the
// VPC's default) and limits, before the endpoint is published (its store
// record shows them). Nothing is created yet.
func (a *Agent) resolveQoS(at *attachment, s *qos.Spec, v vpc.VPC) error {
	def, err := qos.ParseClass(v.QoSClass)
	if err != nil {
		return fail(types.ErrInvalidNetworkConfig, "qos", fmt.Errorf("vpc %q default: %w", v.Name, err))
	}
	s = qos.WithDefault(s, def)
	if s == nil {
		return nil
	}
	at.QoS = s.Class
	at.QoSIngressRate, at.QoSIngressBurst, at.QoSEgressRate = s.IngressRate, s.IngressBurst, s.EgressRate
	if at.QoSEgressRate != 0 && at.QoS == qos.None {
		at.QoS = qos.Normal // a pod class sits under a class's priority
	}
	return nil
}

// setupQoS creates the attachment's own HTB class for an egress limit;
// undo (releaseQoS) deletes it. The class and the ingress limit are
// written to the data plane with the endpoint (qosEndpoint).
func (a *Agent) setupQoS(at *attachment, v vpc.VPC) error {
	if at.QoSEgressRate == 0 || at.QoSMinor != 0 {
		return nil
	}
	minor, err := a.qos.AddPod(at.QoS, at.QoSEgressRate, a.podMTUFor(v))
	if err != nil {
		return fail(types.ErrInternal, "qos", err)
	}
	at.QoSMinor = minor
	return nil
}

// releaseQoS deletes the attachment's own HTB class, if any.
func (a *Agent) releaseQoS(at *attachment) error {
	if at.QoSMinor == 0 || a.qos == nil {
		return nil
	}
	if err := a.qos.DeletePod(at.QoSMinor); err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	return nil
}

// pruneQoS deletes the pod classes on the uplink's tree that no attachment
// of atts owns: leaks of an agent that crashed between creating a class
// and recording it, or whose state was lost. At start-up, after restore.
func (a *Agent) pruneQoS(atts []*attachment) {
	if a.qos == nil {
		return
	}
	keep := map[uint16]bool{}
	for _, at := range atts {
		if at.QoSMinor != 0 {
			keep[at.QoSMinor] = true
		}
	}
	pruned, err := a.qos.Prune(keep)
	if len(pruned) > 0 {
		a.log.Info("deleted qos classes of attachments that no longer exist", "classids", fmt.Sprintf("%x", pruned))
	}
	if err != nil {
		a.log.Warn("pruning qos classes", "err", err)
	}
}

// qosEndpoint is the data plane's view of the attachment's QoS.
func (at *attachment) qosEndpoint(ep datapath.LocalEndpoint) datapath.LocalEndpoint {
	ep.QoS, ep.QoSMinor = datapath.QoSClass(at.QoS), at.QoSMinor
	if at.QoSIngressRate != 0 {
		ep.Ingress = datapath.IngressLimit{Rate: at.QoSIngressRate, Burst: qos.IngressBurst(at.QoSIngressRate, at.QoSIngressBurst)}
	}
	return ep
}

// qosRecord is the attachment's QoS as its store endpoint shows it (nil:
// none).
func (at *attachment) qosRecord() *vpc.EndpointQoS {
	if at.QoS == qos.None && at.QoSEgressRate == 0 && at.QoSIngressRate == 0 {
		return nil
	}
	return &vpc.EndpointQoS{Class: at.QoS.String(), EgressRate: at.QoSEgressRate, IngressRate: at.QoSIngressRate}
}

// qosCollector exports the local attachments by class and what their
// ingress limits let through and dropped, summed by class (the HTB tree's
// own collector, qos.Collector, has the egress side by class).
type qosCollector struct {
	a                                   *Agent
	endpoints, limits, ingBytes, ingPkt *prometheus.Desc
}

func newQoSCollector(a *Agent) *qosCollector {
	return &qosCollector{
		a: a,
		endpoints: prometheus.NewDesc("genie_qos_endpoints",
			"Local VPC attachments by QoS class (\"none\": unclassified).", []string{"class"}, nil),
		limits: prometheus.NewDesc("genie_qos_limited_endpoints",
			"Local VPC attachments with a rate limit, by direction (egress: HTB class on the uplink; ingress: BPF policer).", []string{"direction"}, nil),
		ingBytes: prometheus.NewDesc("genie_qos_ingress_bytes_total",
			"L3 bytes toward pods with an ingress limit, by the pod's class and verdict (pass or drop).", []string{"class", "verdict"}, nil),
		ingPkt: prometheus.NewDesc("genie_qos_ingress_packets_total",
			"Packets (GSO segments) toward pods with an ingress limit, by the pod's class and verdict (pass or drop).", []string{"class", "verdict"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *qosCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.endpoints
	ch <- c.limits
	ch <- c.ingBytes
	ch <- c.ingPkt
}

// Collect implements prometheus.Collector.
func (c *qosCollector) Collect(ch chan<- prometheus.Metric) {
	name := func(k qos.Class) string {
		if k == qos.None {
			return "none"
		}
		return k.String()
	}
	count := map[string]int{"none": 0}
	for _, k := range qos.Classes {
		count[name(k)] = 0
	}
	var egress, ingress int
	byIfindex := map[int]string{}
	c.a.mu.Lock()
	for _, at := range c.a.atts {
		if !at.Complete {
			continue
		}
		count[name(at.QoS)]++
		if at.QoSEgressRate != 0 {
			egress++
		}
		if at.QoSIngressRate != 0 {
			ingress++
		}
		byIfindex[at.HostIndex] = name(at.QoS)
	}
	var stats []datapath.IngressStats
	var err error
	if c.a.dp != nil && !c.a.dpClosed {
		stats, err = c.a.dp.IngressStats()
	}
	c.a.mu.Unlock()
	for k, n := range count {
		ch <- prometheus.MustNewConstMetric(c.endpoints, prometheus.GaugeValue, float64(n), k)
	}
	ch <- prometheus.MustNewConstMetric(c.limits, prometheus.GaugeValue, float64(egress), "egress")
	ch <- prometheus.MustNewConstMetric(c.limits, prometheus.GaugeValue, float64(ingress), "ingress")
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.ingBytes, err)
		return
	}
	type sums struct{ passB, dropB, passP, dropP uint64 }
	by := map[string]*sums{}
	for _, k := range []string{"none", "high", "normal", "low"} {
		by[k] = &sums{}
	}
	for _, s := range stats {
		k, ok := byIfindex[s.HostIfindex]
		if !ok {
			continue // an attachment being added or removed
		}
		by[k].passB += s.PassBytes
		by[k].dropB += s.DropBytes
		by[k].passP += s.PassPackets
		by[k].dropP += s.DropPackets
	}
	for k, s := range by {
		ch <- prometheus.MustNewConstMetric(c.ingBytes, prometheus.CounterValue, float64(s.passB), k, "pass")
		ch <- prometheus.MustNewConstMetric(c.ingBytes, prometheus.CounterValue, float64(s.dropB), k, "drop")
		ch <- prometheus.MustNewConstMetric(c.ingPkt, prometheus.CounterValue, float64(s.passP), k, "pass")
		ch <- prometheus.MustNewConstMetric(c.ingPkt, prometheus.CounterValue, float64(s.dropP), k, "drop")
	}
}
