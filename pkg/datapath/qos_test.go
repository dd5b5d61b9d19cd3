package datapath

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// runSKBPrio is runSKB that also starts the skb with priority prio and
// returns the skb->priority the program left.
func runSKBPrio(tb testing.TB, prog *ebpf.Program, pkt []byte, ingressIfindex int, prio uint32) (uint32, []byte, uint32) {
	tb.Helper()
	// The kernel writes back the whole struct __sk_buff (192 bytes on 6.x);
	// priority is its 9th u32.
	ctxOut := make([]byte, 192)
	opts := &ebpf.RunOptions{
		Data:       pkt,
		DataOut:    make([]byte, len(pkt)+256),
		Context:    skbCtx{IngressIfindex: uint32(ingressIfindex), Priority: prio},
		ContextOut: ctxOut,
	}
	var (
		ret uint32
		err error
	)
	inWorld(tb, func() { ret, err = prog.Run(opts) })
	if err != nil {
		tb.Fatalf("BPF_PROG_RUN: %v", err)
	}
	return ret, opts.DataOut, binary.NativeEndian.Uint32(ctxOut[32:36])
}

// TestPrivilegedQoSFixtures: the class in lxc_info.flags reaches
// skb->priority (an HTB classid of the uplink's root 1:) and the outer DSCP
// of the Geneve header, for traffic to a remote node only; the inner packet
// is untouched and unclassified pods keep the inner TOS and the priority.
func TestPrivilegedQoSFixtures(t *testing.T) {
	d := newWorld(t)
	prog := d.lxc.FromPod
	mk := func(idx int, ip string, mac string, c QoSClass, minor uint16) LocalEndpoint {
		ep := LocalEndpoint{VNI: vniRed, IP: netip.MustParseAddr(ip), MAC: mustMAC(mac), HostIfindex: idx, QoS: c, QoSMinor: minor}
		if err := d.UpsertLocalEndpoint(ep); err != nil {
			t.Fatal(err)
		}
		return ep
	}
	high := mk(3001, "10.0.0.31", "0a:00:00:00:64:31", QoSHigh, 0)
	normal := mk(3002, "10.0.0.32", "0a:00:00:00:64:32", QoSNormal, 0)
	low := mk(3003, "10.0.0.33", "0a:00:00:00:64:33", QoSLow, 0)
	lowOwn := mk(3004, "10.0.0.34", "0a:00:00:00:64:34", QoSLow, 0x123)

	const prioIn = 0x77 // whatever the socket set; kept unless we classify
	for _, tc := range []struct {
		name     string
		ep       LocalEndpoint
		dst      netip.Addr
		innerTOS uint8
		outerTOS uint8  // expected outer TOS byte (DSCP<<2 | inner ECN)
		prio     uint32 // expected skb->priority
		local    bool
	}{
		{name: "high to remote: 1:10, EF", ep: high, dst: ip3, innerTOS: 0x01, outerTOS: 46<<2 | 0x01, prio: 0x10010},
		{name: "normal to remote: 1:20, CS0", ep: normal, dst: ip3, innerTOS: 0xb8, outerTOS: 0x00, prio: 0x10020},
		{name: "low to remote: 1:30, CS1, inner ECN CE kept", ep: low, dst: ip3, innerTOS: 0x03, outerTOS: 8<<2 | 0x03, prio: 0x10030},
		{name: "low with its own htb class: 1:123", ep: lowOwn, dst: ip3, innerTOS: 0, outerTOS: 8 << 2, prio: 0x10123},
		{name: "unclassified to remote: inner tos, priority kept", ep: redA, dst: ip3, innerTOS: 0xb8, outerTOS: 0xb8, prio: prioIn},
		{name: "high to a same-node pod: no mark (never meets a qdisc)", ep: high, dst: ip2, innerTOS: 0, prio: prioIn, local: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := ipv4Pkt(tc.ep.IP, tc.dst, protoTCP, payload(100), ipOpts{tos: tc.innerTOS})
			in := cat(ethHdr(gwMAC, tc.ep.MAC, etherIPv4), inner)
			var (
				ret, prio uint32
				out       []byte
			)
			delta := dropDelta(t, d, func() { ret, out, prio = runSKBPrio(t, prog, in, tc.ep.HostIfindex, prioIn) })
			if len(delta) != 0 {
				t.Errorf("drop counters changed: %v", delta)
			}
			if ret != tcActRedirect {
				t.Fatalf("verdict %d, want redirect", int32(ret))
			}
			if prio != tc.prio {
				t.Errorf("skb->priority = %#x, want %#x", prio, tc.prio)
			}
			if tc.local {
				return
			}
			// Every byte: the outer IPv4 header (with its checksum) carries
			// the expected TOS; the inner packet is as sent.
			encapCheck(vniRed, nodeBMAC, nodeB, redR.MAC, inner, tc.outerTOS)(t, out)
		})
	}
}

func TestQoSFlags(t *testing.T) {
	for _, tc := range []struct {
		c     QoSClass
		minor uint16
		want  uint16
		err   string
	}{
		{QoSNone, 0, 0, ""},
		{QoSHigh, 0, 1, ""},
		{QoSLow, 0, 3, ""},
		{QoSNormal, 0xfff, 0xfff2, ""},
		{QoSLow + 1, 0, 0, "class 4 out of range"},
		{QoSHigh, 0x1000, 0, "out of range"},
		{QoSNone, 0x10, 0, "without a class"},
	} {
		got, err := qosFlags(tc.c, tc.minor)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("qosFlags(%d, %#x) error %v, want %q", tc.c, tc.minor, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("qosFlags(%d, %#x) = %#x, %v; want %#x", tc.c, tc.minor, got, err, tc.want)
		}
	}
}
