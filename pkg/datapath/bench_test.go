package datapath

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Benchmarks time one program run per BPF_PROG_RUN call, as the kernel
// reports it (duration of the run, without the syscall and skb setup).
// Repeat cannot be used: the kernel re-runs the program on the same skb, so
// the second run would see an already rewritten or encapsulated frame.
//
// Reported metrics:
//
//	ns/pkt       program run time per packet (kernel timer around the run)
//	base-ns/pkt  the same for a program that only returns, in the same loop:
//	             the timer's own cost
//	net-ns/pkt   ns/pkt - base-ns/pkt: the forwarding decision itself

// progTestRunAttr is the BPF_PROG_TEST_RUN member of union bpf_attr.
type progTestRunAttr struct {
	progFd      uint32
	retval      uint32
	dataSizeIn  uint32
	dataSizeOut uint32
	dataIn      uint64
	dataOut     uint64
	repeat      uint32
	duration    uint32
	ctxSizeIn   uint32
	ctxSizeOut  uint32
	ctxIn       uint64
	ctxOut      uint64
	flags       uint32
	cpu         uint32
	batchSize   uint32
	_           uint32
}

const bpfProgTestRun = 10

// timedRun runs prog once on pkt and returns its verdict and the kernel's
// duration in ns.
func timedRun(tb testing.TB, prog *ebpf.Program, pkt, out []byte, ctx []byte) (uint32, uint32) {
	attr := progTestRunAttr{
		progFd:      uint32(prog.FD()),
		dataSizeIn:  uint32(len(pkt)),
		dataSizeOut: uint32(len(out)),
		dataIn:      uint64(uintptr(unsafe.Pointer(&pkt[0]))),
		dataOut:     uint64(uintptr(unsafe.Pointer(&out[0]))),
		repeat:      1,
	}
	if len(ctx) > 0 {
		attr.ctxSizeIn = uint32(len(ctx))
		attr.ctxIn = uint64(uintptr(unsafe.Pointer(&ctx[0])))
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_BPF, bpfProgTestRun, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			tb.Fatalf("BPF_PROG_TEST_RUN: %v", errno)
		}
		break
	}
	runtime.KeepAlive(pkt)
	runtime.KeepAlive(out)
	runtime.KeepAlive(ctx)
	return attr.retval, attr.duration
}

func skbCtxBytes(ingressIfindex int) []byte {
	b, err := binary.Append(nil, binary.NativeEndian, skbCtx{IngressIfindex: uint32(ingressIfindex)})
	if err != nil {
		panic(err)
	}
	return b
}

func baselineProg(tb testing.TB, typ ebpf.ProgramType) *ebpf.Program {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         typ,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "MIT",
	})
	if err != nil {
		tb.Fatalf("load baseline program: %v", err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

func benchProg(b *testing.B, prog *ebpf.Program, pkt []byte, ingressIfindex int, wantVerdict uint32, wantOut []byte) {
	b.Helper()
	base := baselineProg(b, prog.Type())
	var ctx []byte
	if prog.Type() == ebpf.SchedCLS {
		ctx = skbCtxBytes(ingressIfindex)
	}
	out := make([]byte, len(pkt)+256)
	// Validate once: a benchmark of the wrong path is worthless.
	var ret uint32
	inWorld(b, func() { ret, _ = timedRun(b, prog, pkt, out, ctx) })
	if ret != wantVerdict {
		b.Fatalf("verdict %d, want %d", int32(ret), int32(wantVerdict))
	}
	if wantOut != nil && !bytes.Equal(out[:len(wantOut)], wantOut) {
		b.Fatalf("unexpected output frame %x", out[:len(wantOut)])
	}
	var progNs, baseNs uint64
	b.ResetTimer()
	// In the fixture world's namespace: the FIB lookups need its underlay.
	inWorld(b, func() {
		for i := 0; i < b.N; i++ {
			_, d := timedRun(b, prog, pkt, out, ctx)
			progNs += uint64(d)
			_, d = timedRun(b, base, pkt, out, ctx)
			baseNs += uint64(d)
		}
	})
	n := float64(b.N)
	b.ReportMetric(float64(progNs)/n, "ns/pkt")
	b.ReportMetric(float64(baseNs)/n, "base-ns/pkt")
	b.ReportMetric(float64(progNs-min(progNs, baseNs))/n, "net-ns/pkt")
}

func BenchmarkLxcLocal(b *testing.B) {
	d := newWorld(b)
	ip := ipv4Pkt(ip1, ip2, protoTCP, payload(1400), ipOpts{})
	benchProg(b, d.lxc.FromPod, cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ip), redA.HostIfindex,
		tcActRedirect, cat(ethHdr(redB.MAC, gwMAC, etherIPv4), ip))
}

// BenchmarkLxcEncap: to an on-link peer whose neighbour is resolved (the
// FIB gives both MACs, plain bpf_redirect).
func BenchmarkLxcEncap(b *testing.B) {
	d := newWorld(b)
	benchProg(b, d.lxc.FromPod, cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipv4Pkt(ip1, ip3, protoTCP, payload(1400), ipOpts{})),
		redA.HostIfindex, tcActRedirect, ethHdr(nodeBMAC, uplinkMAC, etherIPv4))
}

// BenchmarkLxcEncapRouted: to a peer behind a router.
func BenchmarkLxcEncapRouted(b *testing.B) {
	d := newWorld(b)
	benchProg(b, d.lxc.FromPod, cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipv4Pkt(ip1, ipD, protoTCP, payload(1400), ipOpts{})),
		redA.HostIfindex, tcActRedirect, ethHdr(routerMAC, uplinkMAC, etherIPv4))
}

// BenchmarkLxcFragNeeded: too big for the path, answered with an ICMP.
func BenchmarkLxcFragNeeded(b *testing.B) {
	d := newWorld(b)
	benchProg(b, d.lxc.FromPod, cat(ethHdr(gwMAC, redA.MAC, etherIPv4), ipv4Pkt(ip1, ipF, protoTCP, payload(1400), ipOpts{fragOff: 0x4000})),
		redA.HostIfindex, tcActRedirect, ethHdr(redA.MAC, gwMAC, etherIPv4))
}

func BenchmarkLxcARP(b *testing.B) {
	d := newWorld(b)
	benchProg(b, d.lxc.FromPod, cat(ethHdr(mustMAC("ff:ff:ff:ff:ff:ff"), redA.MAC, etherARP), arpPkt(1, redA.MAC, ip1, make([]byte, 6), ip2)),
		redA.HostIfindex, tcActRedirect, ethHdr(redA.MAC, gwMAC, etherARP))
}

func BenchmarkLxcDropNoRoute(b *testing.B) {
	d := newWorld(b)
	benchProg(b, d.lxc.FromPod, podIP(redA.MAC, ip1, ip9.Next(), ipOpts{}), redA.HostIfindex, tcActShot, nil)
}

func BenchmarkUplinkDecap(b *testing.B) {
	d := newWorld(b)
	inner := ipv4Pkt(ip3, ip1, protoTCP, payload(1400), ipOpts{})
	benchProg(b, d.uplink.FromUplink, geneveFrame(nodeB, vniRed, inner, geneveOpts{}), uplinkIdx,
		tcActRedirect, cat(ethHdr(redA.MAC, gwMAC, etherIPv4), inner))
}

func BenchmarkUplinkPassThrough(b *testing.B) {
	d := newWorld(b)
	benchProg(b, d.uplink.FromUplink, cat(ethHdr(uplinkMAC, nodeBMAC, etherIPv4), ipv4Pkt(nodeB, nodeA, protoTCP, payload(1400), ipOpts{})),
		uplinkIdx, tcxNext, nil)
}

func BenchmarkUplinkPrefilter(b *testing.B) {
	d := newWorld(b)
	benchProg(b, d.uplink.UplinkPrefilter, geneveFrame(nodeB, vniRed, innerUDP(ip3, ip1), geneveOpts{}), 0, xdpPass, nil)
}

func BenchmarkUplinkPrefilterDropUnknownVNI(b *testing.B) {
	d := newWorld(b)
	benchProg(b, d.uplink.UplinkPrefilter, geneveFrame(nodeB, vniNone, innerUDP(ip3, ip1), geneveOpts{}), 0, xdpDrop, nil)
}
