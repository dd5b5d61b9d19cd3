package datapath

import "fmt"

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
