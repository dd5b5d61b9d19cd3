package agent

import (
	"net/netip"
	"testing"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/datapath"
)

func TestTracePodMatches(t *testing.T) {
	p := &agentapi.TracePod{Namespace: "default", Name: "web-0", ContainerID: "4463ab5a27c10773", Interface: "net1"}
	for _, c := range []struct {
		filter string
		want   bool
	}{
		{"default/web-0", true},
		{"other/web-0", false},
		{"default/web", false},
		{"4463ab5a27c10773", true},
		{"4463ab", true},  // a prefix of 6
		{"4463a", false},  // too short to be a prefix
		{"63ab5a", false}, // not a prefix
		{"web-0", false},  // a name needs its namespace
	} {
		if got := podMatches(c.filter, p); got != c.want {
			t.Errorf("podMatches(%q) = %v, want %v", c.filter, got, c.want)
		}
	}
	if podMatches("default/web-0", nil) {
		t.Error("a drop of no pod matched a pod filter")
	}
}

func TestTraceProtocolName(t *testing.T) {
	for _, c := range []struct {
		ev   datapath.TraceEvent
		want string
	}{
		{datapath.TraceEvent{EthProto: datapath.EtherTypeIPv4, Proto: 6}, "tcp"},
		{datapath.TraceEvent{EthProto: datapath.EtherTypeIPv4, Proto: 17}, "udp"},
		{datapath.TraceEvent{EthProto: datapath.EtherTypeIPv4, Proto: 1}, "icmp"},
		{datapath.TraceEvent{EthProto: datapath.EtherTypeIPv4, Proto: 47}, "ipv4/47"},
		{datapath.TraceEvent{EthProto: datapath.EtherTypeARP, Src: netip.MustParseAddr("10.0.0.1")}, "arp"},
		{datapath.TraceEvent{EthProto: 0x86dd}, "ethertype/0x86dd"},
	} {
		if got := protocolName(c.ev); got != c.want {
			t.Errorf("protocolName(%+v) = %q, want %q", c.ev, got, c.want)
		}
	}
}
