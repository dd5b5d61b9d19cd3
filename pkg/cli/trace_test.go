package cli

import (
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
)

func TestFormatTraceEvent(t *testing.T) {
	ts := time.Date(2026, 12, 5, 7, 31, 2, 123456000, time.Local)
	eight, zero := uint8(8), uint8(0)
	for _, c := range []struct {
		ev   agentapi.TraceEvent
		want string
	}{
		{agentapi.TraceEvent{Time: ts, Node: "n1", Reason: "SPOOFED_IP", Direction: "from-pod", Interface: "gv0123456789", VPC: "blue", VNI: 101,
			Pod:      &agentapi.TracePod{Namespace: "default", Name: "web-0", ContainerID: "abc", Interface: "net1"},
			Protocol: "udp", Src: "10.10.1.250", Dst: "10.10.1.3", SrcPort: 40000, DstPort: 8002, Length: 60},
			"07:31:02.123456 n1 SPOOFED_IP from-pod gv0123456789 vpc=blue vni=101 pod=default/web-0/net1 udp 10.10.1.250:40000 -> 10.10.1.3:8002 len=60"},
		{agentapi.TraceEvent{Time: ts, Node: "n2", Reason: "FORGED", Direction: "from-underlay", Interface: "eth0", VNI: 7,
			Pod:      &agentapi.TracePod{ContainerID: "0123456789abcdef", Interface: "eth1"},
			OuterSrc: "172.30.0.12", Protocol: "icmp", Src: "10.0.0.3", Dst: "10.0.0.1", ICMPType: &eight, ICMPCode: &zero, Length: 98},
			"07:31:02.123456 n2 FORGED from-underlay eth0 vni=7 pod=0123456789ab/eth1 from-node=172.30.0.12 icmp 10.0.0.3 -> 10.0.0.1 type=8 code=0 len=98"},
		{agentapi.TraceEvent{Time: ts, Node: "n1", Reason: "UNSUPPORTED_L3", Direction: "from-pod", Interface: "gv1", Protocol: "ethertype/0x86dd",
			SrcMAC: "02:00:00:00:00:01", DstMAC: "33:33:00:00:00:01", Length: 70},
			"07:31:02.123456 n1 UNSUPPORTED_L3 from-pod gv1 ethertype/0x86dd 02:00:00:00:00:01 -> 33:33:00:00:00:01 len=70"},
	} {
		if got := formatTraceEvent(&c.ev); got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
}
