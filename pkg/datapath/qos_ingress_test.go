package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// runSKBGSO is runSKB for a packet the kernel would see as a GSO packet of
// segs segments of size gsoSize (BPF_PROG_RUN copies both into the skb's
// shared info; the data itself must fit a page, so the packet is short and
// only claims its segment count).
func runSKBGSO(tb testing.TB, prog *ebpf.Program, pkt []byte, ingressIfindex int, segs, gsoSize uint32) (uint32, []byte) {
	tb.Helper()
	ctx := make([]byte, 192) // struct __sk_buff on 6.x
	binary.NativeEndian.PutUint32(ctx[36:], uint32(ingressIfindex))
	binary.NativeEndian.PutUint32(ctx[164:], segs)
	binary.NativeEndian.PutUint32(ctx[176:], gsoSize)
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+256), Context: ctx}
	var (
		ret uint32
		err error
	)
	inWorld(tb, func() { ret, err = prog.Run(opts) })
	if err != nil {
		tb.Fatalf("BPF_PROG_RUN: %v", err)
	}
	return ret, opts.DataOut
}

// tcpGSOSeg is a TCP header with a header length of doff words (options
// zero-filled) followed by n bytes of payload.
func tcpGSOSeg(doff uint8, n int) []byte {
	h := make([]byte, int(doff)*4)
	binary.BigEndian.PutUint16(h[0:], 40000)
	binary.BigEndian.PutUint16(h[2:], 5201)
	h[12] = doff << 4
	h[13] = 0x10 // ACK
	return cat(h, payload(n))
}

func monoNow(tb testing.TB) uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		tb.Fatal(err)
	}
	return uint64(ts.Nano())
}

func ingressStatsOf(tb testing.TB, d *Datapath, ifindex int) IngressStats {
	tb.Helper()
	all, err := d.IngressStats()
	if err != nil {
		tb.Fatal(err)
	}
	for _, s := range all {
		if s.HostIfindex == ifindex {
			return s
		}
	}
	tb.Fatalf("no ingress limit for ifindex %d", ifindex)
	return IngressStats{}
}

// TestPrivilegedQoSIngressFixtures: the ingress policer in front of a pod
// (redA, ifindex 1001) on both delivery paths, same-node (from_pod, from
// redB) and decapsulated (from_uplink, from red 10.0.0.3 on node B).
// Conforming packets are delivered byte for byte as without a limit, the
// excess is dropped and counted (drop reason QOS_INGRESS and the bucket's
// own counters), and the cost is the L3 bytes of every GSO segment.
//
// The rate is tiny (8 kbit/s: a packet below costs about 3 s), so the
// milliseconds the test takes refill nothing that matters: the burst is
// n+0.5 packets, so exactly n+1 pass (one more would need 1.5 s of refill)
// and the rest are dropped.
func TestPrivilegedQoSIngressFixtures(t *testing.T) {
	d := newWorld(t)
	const (
		rate    = 8000
		segs    = 3
		gsoSize = 1000
	)
	// A TCP packet with 12 bytes of options (doff 8) and 3000 bytes of
	// payload. From a same-node pod it is a GSO packet of 3 segments of
	// 1000 bytes: it costs its L3 bytes plus 2 more IP and TCP headers.
	// BPF_PROG_RUN cannot make a decapsulatable GSO packet (adjust_room
	// wants a gso_type the test context cannot set), so the decap path gets
	// it as one packet.
	inner := func(src netip.Addr) []byte {
		return ipv4Pkt(src, ip1, protoTCP, tcpGSOSeg(8, segs*gsoSize), ipOpts{})
	}
	for _, path := range []struct {
		name  string
		prog  *ebpf.Program
		ifidx int
		in    []byte
		inner []byte
		claim uint32 // gso_segs in the skb
		segs  uint32 // segments it holds (0: not GSO)
		cost  int
	}{
		{"same node, gso (from_pod)", d.lxc.FromPod, redB.HostIfindex,
			cat(ethHdr(gwMAC, redB.MAC, etherIPv4), inner(ip2)), inner(ip2), segs, segs, 20 + 32 + segs*gsoSize + (segs-1)*(20+32)},
		// bpf_skb_adjust_room (the decap) zeroes gso_segs: the count
		// comes from gso_size.
		{"same node, gso, gso_segs zeroed (from_pod)", d.lxc.FromPod, redB.HostIfindex,
			cat(ethHdr(gwMAC, redB.MAC, etherIPv4), inner(ip2)), inner(ip2), 0, segs, 20 + 32 + segs*gsoSize + (segs-1)*(20+32)},
		{"decapsulated (from_uplink)", d.uplink.FromUplink, uplinkIdx,
			geneveFrame(nodeB, vniRed, inner(ip3), geneveOpts{}), inner(ip3), 1, 0, 20 + 32 + segs*gsoSize},
	} {
		t.Run(path.name, func(t *testing.T) {
			want := cat(ethHdr(redA.MAC, gwMAC, etherIPv4), path.inner)
			cost := path.cost
			limited := redA
			// A burst of n+0.5 packets, n the smallest over the 128 KiB
			// floor: n+1 pass.
			n := (minIngressBurst + cost - 1) / cost
			limited.Ingress = IngressLimit{Rate: rate, Burst: uint64(cost*(2*n+1)) / 2}

			// A fresh bucket: remove the limit, then set it.
			if err := d.UpsertLocalEndpoint(redA); err != nil {
				t.Fatal(err)
			}
			if err := d.UpsertLocalEndpoint(limited); err != nil {
				t.Fatal(err)
			}
			st := ingressStatsOf(t, d, redA.HostIfindex)
			if st.Limit != limited.Ingress {
				t.Fatalf("limit read back as %+v, want %+v", st.Limit, limited.Ingress)
			}
			start := monoNow(t)
			var passed, dropped int
			delta := dropDelta(t, d, func() {
				for i := 0; i < 50; i++ {
					size := uint32(gsoSize)
					if path.segs == 0 {
						size = 0 // not GSO
					}
					ret, out := runSKBGSO(t, path.prog, path.in, path.ifidx, path.claim, size)
					switch ret {
					case tcActRedirect:
						passed++
						if !bytes.Equal(out, want) {
							t.Fatalf("packet %d delivered as\n%x\nwant\n%x", i, out, want)
						}
					case tcActShot:
						dropped++
					default:
						t.Fatalf("packet %d: verdict %d", i, int32(ret))
					}
				}
			})
			elapsed := time.Duration(monoNow(t) - start)
			if passed != n+1 || dropped != 50-n-1 {
				t.Errorf("passed %d, dropped %d; want %d and %d (test took %v)", passed, dropped, n+1, 50-n-1, elapsed)
			}
			if delta[DropQoSIngress] != uint64(dropped) || len(delta) != 1 {
				t.Errorf("drop counters changed by %v, want QOS_INGRESS: %d", delta, dropped)
			}
			segs := int(max(path.segs, 1))
			st = ingressStatsOf(t, d, redA.HostIfindex)
			if st.PassBytes != uint64(passed*cost) || st.PassPackets != uint64(passed*segs) ||
				st.DropBytes != uint64(dropped*cost) || st.DropPackets != uint64(dropped*segs) {
				t.Errorf("bucket counters %+v, want %d/%d bytes and %d/%d segments passed/dropped",
					st, passed*cost, dropped*cost, passed*segs, dropped*segs)
			}
		})
	}

	t.Run("non-gso packets cost their L3 length; unlimited pods are not policed", func(t *testing.T) {
		if err := d.UpsertLocalEndpoint(redA); err != nil {
			t.Fatal(err)
		}
		// A burst of 134.5 of these 1000-byte IPv4 packets (1 s each): 135
		// pass.
		small := ipv4Pkt(ip2, ip1, protoUDP, udpPkt(1, 2, payload(1000-28)), ipOpts{})
		l := redA
		l.Ingress = IngressLimit{Rate: rate, Burst: 1000*135 - 500} // 134.5 packets
		if err := d.UpsertLocalEndpoint(l); err != nil {
			t.Fatal(err)
		}
		in := cat(ethHdr(gwMAC, redB.MAC, etherIPv4), small)
		passed := 0
		for i := 0; i < 140; i++ {
			if ret, _ := runSKB(t, d.lxc.FromPod, in, redB.HostIfindex); ret == tcActRedirect {
				passed++
			}
		}
		st := ingressStatsOf(t, d, redA.HostIfindex)
		if passed != 135 || st.PassBytes != 135*1000 || st.PassPackets != 135 || st.DropPackets != 5 {
			t.Errorf("passed %d, counters %+v; want 135 passed at 1000 bytes each, 5 dropped", passed, st)
		}
		// redB has no limit: everything to it passes, nothing is counted.
		toB := cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipv4Pkt(ip1, ip2, protoUDP, udpPkt(1, 2, payload(1000-28)), ipOpts{}))
		delta := dropDelta(t, d, func() {
			for i := 0; i < 200; i++ {
				if ret, _ := runSKB(t, d.lxc.FromPod, toB, redA.HostIfindex); ret != tcActRedirect {
					t.Fatalf("packet %d to the unlimited pod: verdict %d", i, int32(ret))
				}
			}
		})
		if len(delta) != 0 {
			t.Errorf("drop counters changed by %v", delta)
		}
	})

	t.Run("the bucket goes with the endpoint", func(t *testing.T) {
		if err := d.DeleteEndpoint(vniRed, ip1); err != nil {
			t.Fatal(err)
		}
		if all, err := d.IngressStats(); err != nil || len(all) != 0 {
			t.Errorf("after delete: ingress limits %+v, %v; want none", all, err)
		}
		if err := d.UpsertLocalEndpoint(redA); err != nil {
			t.Fatal(err)
		}
	})
}

func TestIngressLimitCheck(t *testing.T) {
	for _, tc := range []struct {
		l   IngressLimit
		bad bool
	}{
		{IngressLimit{}, false},
		{IngressLimit{Rate: 100_000}, false},
		{IngressLimit{Rate: 100_000, Burst: 1 << 20}, false},
		{IngressLimit{Burst: 1 << 20}, true},
		{IngressLimit{Rate: 7}, true},
	} {
		if err := tc.l.check(); (err != nil) != tc.bad {
			t.Errorf("%+v: check = %v, want error %v", tc.l, err, tc.bad)
		}
	}
	// The burst as time: 128 KiB floor at 1 Mbit/s is 1.048576 s.
	if got := (IngressLimit{Rate: 1e6, Burst: 1}).burstNs(); got != 1_048_576_000 {
		t.Errorf("burstNs = %d", got)
	}
}

// BenchmarkLxcLocalIngressLimit is BenchmarkLxcLocal to a pod with an
// ingress limit that never binds (1 Tbit/s): the policer's cost (lookup,
// spin lock, GCRA) against BenchmarkLxcLocal's one missed lookup.
func BenchmarkLxcLocalIngressLimit(b *testing.B) {
	d := newWorld(b)
	limited := redB
	limited.Ingress = IngressLimit{Rate: 1e12}
	if err := d.UpsertLocalEndpoint(limited); err != nil {
		b.Fatal(err)
	}
	ip := ipv4Pkt(ip1, ip2, protoTCP, payload(1400), ipOpts{})
	benchProg(b, d.lxc.FromPod, cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ip), redA.HostIfindex,
		tcActRedirect, cat(ethHdr(redB.MAC, gwMAC, etherIPv4), ip))
}

// BenchmarkLxcEncapClassified is BenchmarkLxcEncap from a pod of class
// high: skb->priority and the outer DSCP set on the way.
func BenchmarkLxcEncapClassified(b *testing.B) {
	d := newWorld(b)
	high := redA
	high.QoS = QoSHigh
	if err := d.UpsertLocalEndpoint(high); err != nil {
		b.Fatal(err)
	}
	benchProg(b, d.lxc.FromPod, cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipv4Pkt(ip1, ip3, protoTCP, payload(1400), ipOpts{})),
		redA.HostIfindex, tcActRedirect, ethHdr(nodeBMAC, uplinkMAC, etherIPv4))
}

// FuzzQoSIngress: frames from a pod (any sender selector) to a world where
// redB has an ingress limit, claiming any GSO segment count. The verdict is
// a redirect or a drop, a dropped frame is unmodified, and every policer
// verdict shows in redB's bucket (at least one segment and the frame's L3
// bytes), matching the data plane's drop counter.
func FuzzQoSIngress(f *testing.F) {
	d := newWorld(f)
	limited := redB
	limited.Ingress = IngressLimit{Rate: 8000} // 1 kB/s: the burst runs out fast
	if err := d.UpsertLocalEndpoint(limited); err != nil {
		f.Fatal(err)
	}
	for _, seg := range []struct {
		segs uint16
		pkt  []byte
	}{
		{1, cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipv4Pkt(ip1, ip2, protoUDP, udpPkt(1, 2, payload(100)), ipOpts{}))},
		{3, cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipv4Pkt(ip1, ip2, protoTCP, tcpGSOSeg(8, 3000), ipOpts{}))},
		{45, cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipv4Pkt(ip1, ip2, protoTCP, tcpGSOSeg(5, 1400), ipOpts{}))},
		{2, cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipv4Pkt(ip1, ip2, protoTCP, tcpGSOSeg(15, 10), ipOpts{}))},
	} {
		f.Add(uint8(0), seg.segs, seg.pkt)
	}
	f.Fuzz(func(t *testing.T, sel uint8, segs uint16, pkt []byte) {
		if kernelRejects(pkt) {
			t.Skip("frame refused by BPF_PROG_RUN itself")
		}
		sender := fuzzSenders[int(sel)%len(fuzzSenders)]
		var size uint32
		if segs > 1 {
			size = 1000
		}
		before := ingressStatsOf(t, d, redB.HostIfindex)
		var (
			ret uint32
			out []byte
		)
		delta := dropDelta(t, d, func() { ret, out = runSKBGSO(t, d.lxc.FromPod, pkt, sender.HostIfindex, uint32(segs), size) })
		after := ingressStatsOf(t, d, redB.HostIfindex)
		switch ret {
		case tcActRedirect:
		case tcActShot:
			if !bytes.Equal(out, pkt) {
				t.Fatalf("dropped frame was modified")
			}
		default:
			t.Fatalf("verdict %d", int32(ret))
		}
		// A frame of n L3 bytes holds at least one segment and costs at
		// least n.
		l3 := uint64(max(len(pkt)-14, 0))
		dp, db := after.DropPackets-before.DropPackets, after.DropBytes-before.DropBytes
		pp, pb := after.PassPackets-before.PassPackets, after.PassBytes-before.PassBytes
		switch n := delta[DropQoSIngress]; n {
		case 0:
			if dp != 0 || db != 0 {
				t.Fatalf("bucket counted a drop the data plane did not")
			}
		case 1:
			if ret != tcActShot || dp == 0 || db < l3 || pp != 0 {
				t.Fatalf("policer drop counted as %d segments, %d bytes (frame %d L3 bytes), verdict %d", dp, db, l3, int32(ret))
			}
		default:
			t.Fatalf("%d policer drops for one frame", n)
		}
		if pp != 0 && (ret != tcActRedirect || pb < l3) {
			t.Fatalf("policer pass counted as %d segments, %d bytes (frame %d L3 bytes), verdict %d", pp, pb, l3, int32(ret))
		}
	})
}
