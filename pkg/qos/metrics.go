package qos

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the tree's per-class counters.
type Collector struct {
	tree                       *Tree
	bytes, packets, drops, ovl *prometheus.Desc
}

// NewCollector returns a collector of t's counters, labelled by classid
// ("1:10") and class name ("high"; "" for pod classes and the inner class).
func NewCollector(t *Tree) *Collector {
	l := []string{"classid", "class"}
	return &Collector{
		tree:    t,
		bytes:   prometheus.NewDesc("genie_qos_class_bytes_total", "Bytes sent through the uplink by QoS class.", l, nil),
		packets: prometheus.NewDesc("genie_qos_class_packets_total", "Packets sent through the uplink by QoS class, as HTB counts them: a pod's GSO packet counts 0 (the encapsulation zeroes its segment count); use the bytes.", l, nil),
		drops:   prometheus.NewDesc("genie_qos_class_drops_total", "Packets dropped by a QoS class's queue.", l, nil),
		ovl:     prometheus.NewDesc("genie_qos_class_overlimits_total", "Times a QoS class was throttled.", l, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytes
	ch <- c.packets
	ch <- c.drops
	ch <- c.ovl
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	stats, err := c.tree.Stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.bytes, err)
		return
	}
	for _, s := range stats {
		id, name := fmt.Sprintf("%d:%x", Major, s.Minor), s.Class.String()
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(s.Bytes), id, name)
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(s.Packets), id, name)
		ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(s.Drops), id, name)
		ch <- prometheus.MustNewConstMetric(c.ovl, prometheus.CounterValue, float64(s.Overlimits), id, name)
	}
}
