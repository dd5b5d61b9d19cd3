package datapath

import (
	"fmt"
	"math"
)

// QoSClass is the traffic class of a local endpoint, as lxc_info.flags
// carries it to from_pod (bpf/lib/qos.h; keep in sync). The values are
// pkg/qos.Class's.
type QoSClass uint8

// The classes. QoSNone leaves the pod's packets unmarked: no skb->priority,
// the outer TOS copied from the inner one.
const (
	QoSNone   QoSClass = 0
	QoSHigh   QoSClass = 1
	QoSNormal QoSClass = 2
	QoSLow    QoSClass = 3
)

// Layout of lxc_info.flags (bpf/lib/qos.h).
const (
	qosClassMask  = 0x3
	qosMinorShift = 4
	// QoSMaxMinor is the largest per-endpoint HTB minor lxc_info.flags holds.
	QoSMaxMinor = 0xfff
)

// QoSMinorOf is the HTB minor (on the uplink's root qdisc 1:) the packets of
// class c go to when the endpoint has no class of its own: 0x10, 0x20, 0x30;
// 0 for QoSNone.
func QoSMinorOf(c QoSClass) uint16 {
	if c == QoSNone || c > QoSLow {
		return 0
	}
	return uint16(c) << 4
}

// qosFlags encodes an endpoint's class and own HTB minor into lxc_info.flags.
func qosFlags(c QoSClass, minor uint16) (uint16, error) {
	if c > QoSLow {
		return 0, fmt.Errorf("qos class %d out of range 0-3", c)
	}
	if minor > QoSMaxMinor {
		return 0, fmt.Errorf("qos htb minor %#x out of range 0-%#x", minor, QoSMaxMinor)
	}
	if c == QoSNone && minor != 0 {
		return 0, fmt.Errorf("qos htb minor %#x without a class", minor)
	}
	return uint16(c)&qosClassMask | minor<<qosMinorShift, nil
}

// IngressLimit is a local endpoint's ingress rate limit: a policer in front
// of the pod (bpf/lib/qos.h), applied wherever traffic is delivered to it
// (same-node senders and decapsulated traffic alike).
type IngressLimit struct {
	// Rate is in bits/s of L3 bytes (every GSO segment's headers counted).
	// Zero: no limit.
	Rate uint64
	// Burst is how many bytes may arrive at once above the rate; zero picks
	// qos.IngressBurst's default. The data plane keeps it as time at Rate.
	Burst uint64
}

// IngressStats are the counters of one endpoint's ingress limit.
type IngressStats struct {
	// HostIfindex is the endpoint's host-side veth.
	HostIfindex int
	// Limit is the limit as written.
	Limit IngressLimit
	// PassBytes and PassPackets were delivered; DropBytes and DropPackets
	// were over the limit. Bytes are L3 bytes, packets are segments.
	PassBytes, PassPackets, DropBytes, DropPackets uint64
}

// minIngressBurst is the smallest burst of an ingress limit: two 64 KiB GSO
// packets (pkg/qos.IngressBurst picks the default; this only guards the
// data plane against a burst it could not deliver a GSO packet under).
const minIngressBurst = 128 << 10

func (l IngressLimit) check() error {
	if l.Rate == 0 && l.Burst != 0 {
		return fmt.Errorf("ingress burst %d without a rate", l.Burst)
	}
	if l.Rate != 0 && l.Rate < 8 {
		return fmt.Errorf("ingress rate %d bit/s is too small", l.Rate)
	}
	return nil
}

// burstNs is the burst as the time it drains in at the rate.
func (l IngressLimit) burstNs() uint64 {
	b := max(l.Burst, minIngressBurst)
	// b*8e9 overflows u64 only for a burst over 2 EiB/8e9 = 2.3 GB.
	return b * 8 * 1e9 / l.Rate
}

// qosIngressUpsert writes the ingress limit of the endpoint behind ifx (or
// removes a stale one). A bucket with the same limit is kept as it is, with
// its state and counters, so that re-programming an endpoint (an agent
// restart) neither refills it nor resets its counters.
func (d *Datapath) qosIngressUpsert(j *journal, ifx uint32, l IngressLimit) error {
	m := d.lxc.GenieQosIngress
	if l.Rate == 0 {
		return j.delete(m, ifx)
	}
	var prev lxcQosBucket
	if m.Lookup(ifx, &prev) == nil && prev.Rate == l.Rate && prev.BurstNs == l.burstNs() {
		return nil
	}
	return j.update(m, ifx, &lxcQosBucket{Rate: l.Rate, BurstNs: l.burstNs()})
}

// IngressStats reads the counters of every endpoint with an ingress limit.
func (d *Datapath) IngressStats() ([]IngressStats, error) {
	var (
		out []IngressStats
		k   uint32
		v   lxcQosBucket
	)
	it := d.lxc.GenieQosIngress.Iterate()
	for it.Next(&k, &v) {
		out = append(out, IngressStats{
			HostIfindex: int(k),
			Limit:       IngressLimit{Rate: v.Rate, Burst: uint64(math.Round(float64(v.BurstNs) * float64(v.Rate) / 8e9))},
			PassBytes:   v.PassBytes, PassPackets: v.PassPkts, DropBytes: v.DropBytes, DropPackets: v.DropPkts,
		})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list ingress limits: %w", err)
	}
	return out, nil
}
