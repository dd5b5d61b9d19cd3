package datapath

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// readEvent reads one trace event or fails after a second.
func readEvent(t *testing.T, rd *TraceReader) TraceEvent {
	t.Helper()
	rd.SetDeadline(time.Now().Add(time.Second))
	ev, err := rd.Read()
	if err != nil {
		t.Fatalf("no trace event: %v", err)
	}
	return ev
}

// noEvent asserts the ring is empty.
func noEvent(t *testing.T, rd *TraceReader, why string) {
	t.Helper()
	rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
	if ev, err := rd.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: got event %+v (err %v), want none", why, ev, err)
	}
}

// TestPrivilegedTraceFixtures: a drop is reported to the trace ring with
// every field right, pod side and uplink side, only while the trace flag is
// set; a forwarded packet never is; a full ring counts lost events.
func TestPrivilegedTraceFixtures(t *testing.T) {
	d := newWorld(t)
	rd, err := d.Trace()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if on, err := d.Tracing(); err != nil || on {
		t.Fatalf("trace flag of fresh maps: %v %v, want off", on, err)
	}
	spoofed := podIP(redA.MAC, ip2, ip3, ipOpts{})

	// Off: counted, not reported.
	delta := dropDelta(t, d, func() {
		if ret, _ := runSKB(t, d.lxc.FromPod, spoofed, redA.HostIfindex); ret != tcActShot {
			t.Fatalf("verdict %d", ret)
		}
	})
	if delta[DropSpoofedIP] != 1 {
		t.Fatalf("drops %v", delta)
	}
	noEvent(t, rd, "trace flag off")

	if err := d.SetTracing(true); err != nil {
		t.Fatal(err)
	}
	if on, _ := d.Tracing(); !on {
		t.Fatal("trace flag not set")
	}
	bcast := mustMAC("ff:ff:ff:ff:ff:ff")
	inner := mustMAC("0a:00:00:00:00:99") // geneveFrame's inner MACs
	innerSrc := mustMAC("02:00:00:00:00:01")
	cases := []struct {
		name    string
		prog    *ebpf.Program
		ifindex int
		in      []byte
		want    TraceEvent
	}{
		{
			name: "spoofed source ip from red 10.0.0.1", prog: d.lxc.FromPod, ifindex: redA.HostIfindex, in: spoofed,
			want: TraceEvent{Reason: DropSpoofedIP, Ifindex: redA.HostIfindex, FromPod: true, VNI: vniRed,
				EthProto: EtherTypeIPv4, SrcMAC: redA.MAC, DstMAC: gwMAC, Proto: protoUDP, Src: ip2, Dst: ip3,
				HasPorts: true, SrcPort: 40000, DstPort: 5201, Len: uint32(len(spoofed))},
		},
		{
			name: "icmp echo to no route in blue", prog: d.lxc.FromPod, ifindex: blueA.HostIfindex,
			in: cat(ethHdr(gwMAC, blueA.MAC, etherIPv4), ipv4Pkt(ip1, ip9, protoICMP, cat([]byte{8, 0, 0, 0}, payload(20)), ipOpts{})),
			want: TraceEvent{Reason: DropNoRoute, Ifindex: blueA.HostIfindex, FromPod: true, VNI: vniBlue,
				EthProto: EtherTypeIPv4, SrcMAC: blueA.MAC, DstMAC: gwMAC, Proto: protoICMP, Src: ip1, Dst: ip9,
				HasPorts: true, SrcPort: 8, DstPort: 0, Len: 14 + 20 + 24},
		},
		{
			name: "arp with spoofed sender ip", prog: d.lxc.FromPod, ifindex: redA.HostIfindex,
			in: cat(ethHdr(bcast, redA.MAC, etherARP), arpPkt(1, redA.MAC, ip2, make(net.HardwareAddr, 6), ip9)),
			want: TraceEvent{Reason: DropSpoofedIP, Ifindex: redA.HostIfindex, FromPod: true, VNI: vniRed,
				EthProto: EtherTypeARP, SrcMAC: redA.MAC, DstMAC: bcast, Src: ip2, Dst: ip9, Len: 14 + 28},
		},
		{
			name: "unknown endpoint ifindex", prog: d.lxc.FromPod, ifindex: 4242, in: podIP(redA.MAC, ip1, ip2, ipOpts{}),
			want: TraceEvent{Reason: DropUnknownEndpoint, Ifindex: 4242, EthProto: EtherTypeIPv4, SrcMAC: redA.MAC, DstMAC: gwMAC,
				Proto: protoUDP, Src: ip1, Dst: ip2, HasPorts: true, SrcPort: 40000, DstPort: 5201, Len: 106},
		},
		{
			name: "forged geneve: red 10.0.0.3 lives on B, sent by C", prog: d.uplink.FromUplink, ifindex: uplinkIdx,
			in: geneveFrame(nodeC, vniRed, innerUDP(ip3, ip1), geneveOpts{}),
			want: TraceEvent{Reason: DropForged, Ifindex: uplinkIdx, Geneve: true, OuterSrc: nodeC, VNI: vniRed,
				EthProto: EtherTypeIPv4, SrcMAC: innerSrc, DstMAC: inner, Proto: protoUDP, Src: ip3, Dst: ip1,
				HasPorts: true, SrcPort: 40000, DstPort: 5201, Len: uint32(len(geneveFrame(nodeC, vniRed, innerUDP(ip3, ip1), geneveOpts{})))},
		},
		{
			name: "geneve for a vni not hosted here", prog: d.uplink.FromUplink, ifindex: uplinkIdx,
			in: geneveFrame(nodeB, vniNone, innerUDP(ip3, ip1), geneveOpts{}),
			want: TraceEvent{Reason: DropUnknownVNI, Ifindex: uplinkIdx, Geneve: true, OuterSrc: nodeB, VNI: vniNone,
				EthProto: EtherTypeIPv4, SrcMAC: innerSrc, DstMAC: inner, Proto: protoUDP, Src: ip3, Dst: ip1,
				HasPorts: true, SrcPort: 40000, DstPort: 5201, Len: 14 + 50 + 20 + 8 + 48},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := time.Now()
			if ret, _ := runSKB(t, c.prog, c.in, c.ifindex); ret != tcActShot {
				t.Fatalf("verdict %d, want drop", int32(ret))
			}
			ev := readEvent(t, rd)
			if ev.Time.Before(before.Add(-time.Second)) || ev.Time.After(time.Now().Add(time.Second)) {
				t.Errorf("event time %v, dropped between %v and now", ev.Time, before)
			}
			ev.Time = time.Time{}
			if got, want := fmt.Sprintf("%+v", ev), fmt.Sprintf("%+v", c.want); got != want {
				t.Errorf("event\n got %s\nwant %s", got, want)
			}
			noEvent(t, rd, "one drop")
		})
	}

	// A forwarded packet is never reported.
	if ret, _ := runSKB(t, d.lxc.FromPod, podIP(redA.MAC, ip1, ip2, ipOpts{}), redA.HostIfindex); ret != tcActRedirect {
		t.Fatalf("local delivery verdict %d", ret)
	}
	noEvent(t, rd, "forwarded packet")

	// A full ring loses events and counts them; packets are dropped anyway.
	lost0, _ := d.TraceLost()
	const n = 4200 // the 256 KiB ring holds 4096 records of 64 bytes
	delta = dropDelta(t, d, func() {
		for range n {
			runSKB(t, d.lxc.FromPod, spoofed, redA.HostIfindex)
		}
	})
	lost, _ := d.TraceLost()
	if delta[DropSpoofedIP] != n || lost-lost0 == 0 || lost-lost0 > n {
		t.Errorf("%d drops into a full ring: counted %d, lost events %d", n, delta[DropSpoofedIP], lost-lost0)
	}
	got := 0
	for {
		rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := rd.Read(); err != nil {
			break
		}
		got++
	}
	if uint64(got)+lost-lost0 != n {
		t.Errorf("read %d events and lost %d of %d drops", got, lost-lost0, n)
	}

	// Off again: nothing more.
	if err := d.SetTracing(false); err != nil {
		t.Fatal(err)
	}
	runSKB(t, d.lxc.FromPod, spoofed, redA.HostIfindex)
	noEvent(t, rd, "trace flag cleared")
	if l, _ := d.TraceLost(); l != lost {
		t.Errorf("SetTracing changed the lost counter %d -> %d", lost, l)
	}
}

// BenchmarkDropTrace: the cost of the drop path (a spoofed source IP from a
// pod) with the trace flag off and on, interleaved in one loop with an
// empty program (the timer's cost). With GENIE_BENCH_BEFORE_LXC naming the
// lxc object of an earlier build (git show REV:pkg/datapath/lxc_bpfel.o),
// its from_pod runs in the same loop on the same maps: "before" vs "off" is
// what tracing costs while nobody traces.
//
//	git show 7d18a94:pkg/datapath/lxc_bpfel.o > /tmp/lxc-before.o
//	GENIE_BENCH_BEFORE_LXC=/tmp/lxc-before.o go test -run '^$' -bench DropTrace -count 5 ./pkg/datapath/
func BenchmarkDropTrace(b *testing.B) {
	d := newWorld(b)
	pkt := podIP(redA.MAC, ip2, ip3, ipOpts{})
	ctx := skbCtxBytes(redA.HostIfindex)
	out := make([]byte, len(pkt)+256)
	base := baselineProg(b, d.lxc.FromPod.Type())
	var before *ebpf.Program
	if f := os.Getenv("GENIE_BENCH_BEFORE_LXC"); f != "" {
		spec, err := ebpf.LoadCollectionSpec(f)
		if err != nil {
			b.Fatal(err)
		}
		// Same maps as d (pinned by name): the same endpoint, counters.
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: d.cfg.PinDir}})
		if err != nil {
			b.Fatalf("load %s: %v", f, err)
		}
		b.Cleanup(func() { coll.Close() })
		before = coll.Programs["from_pod"]
	}
	rd, err := d.Trace()
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	drain := func() {
		for {
			rd.SetDeadline(time.Now())
			if _, err := rd.Read(); err != nil {
				return
			}
		}
	}
	run := func(p *ebpf.Program) uint32 {
		ret, ns := timedRun(b, p, pkt, out, ctx)
		if ret != tcActShot {
			b.Fatalf("verdict %d, want drop", ret)
		}
		return ns
	}
	var baseNs, beforeNs, offNs, onNs uint64
	b.ResetTimer()
	inWorld(b, func() {
		for i := 0; i < b.N; i++ {
			_, ns := timedRun(b, base, pkt, out, ctx)
			baseNs += uint64(ns)
			// Alternate the order: the first run after the baseline
			// pays for cold caches.
			if i%2 == 0 {
				offNs += uint64(run(d.lxc.FromPod))
			}
			if before != nil {
				beforeNs += uint64(run(before))
			}
			if i%2 == 1 {
				offNs += uint64(run(d.lxc.FromPod))
			}
			d.SetTracing(true)
			onNs += uint64(run(d.lxc.FromPod))
			d.SetTracing(false)
			if i%1000 == 999 {
				drain()
			}
		}
	})
	n := float64(b.N)
	b.ReportMetric(float64(baseNs)/n, "base-ns/pkt")
	if before != nil {
		b.ReportMetric(float64(beforeNs)/n, "before-ns/pkt")
	}
	b.ReportMetric(float64(offNs)/n, "off-ns/pkt")
	b.ReportMetric(float64(onNs)/n, "on-ns/pkt")
}

func TestParseDropReason(t *testing.T) {
	for _, r := range DropReasons() {
		for _, s := range []string{r.String(), strings.ToLower(r.String())} {
			if got, err := ParseDropReason(s); err != nil || got != r {
				t.Errorf("ParseDropReason(%q) = %v, %v; want %v", s, got, err, r)
			}
		}
	}
	if _, err := ParseDropReason("NOPE"); err == nil || !strings.Contains(err.Error(), "SPOOFED_IP") {
		t.Errorf("unknown reason: %v, want an error listing the known ones", err)
	}
}
