package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Drop tracing (bpf/lib/trace.h). While the trace flag is set, every packet
// the tc programs drop is also reported to a ring buffer with its reason,
// ingress interface, VNI, addresses and ports; the agent reads the ring with
// one TraceReader and fans the events out to its clients (geniectl trace).
// With the flag clear the drop path costs one array lookup more, and nothing
// is written. The XDP prefilter's drops are counted, not traced.

// Flags of an event (TRACE_F_* in bpf/lib/maps_trace.h).
const (
	traceFromPod = 0x01
	traceGeneve  = 0x02
	traceL4      = 0x04
)

// EtherTypes of TraceEvent.EthProto.
const (
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
)

// TraceEvent is one dropped packet as the data plane saw it.
type TraceEvent struct {
	// Time is when it was dropped (the kernel's monotonic clock, converted
	// to wall time when the reader opened).
	Time time.Time
	// Reason is why.
	Reason DropReason
	// Ifindex is the ingress interface: a host-side pod veth (FromPod) or
	// the uplink.
	Ifindex int
	// FromPod is set when Ifindex is a pod veth known to the data plane;
	// VNI is then the pod's.
	FromPod bool
	// Geneve is set for an encapsulated packet from the uplink: VNI comes
	// from its Geneve header, OuterSrc is the sending node's underlay
	// address, and the fields below describe the inner frame.
	Geneve   bool
	OuterSrc netip.Addr
	// VNI is the packet's VPC (0: unknown, e.g. a drop after decap).
	VNI uint32
	// EthProto is the (inner) frame's EtherType; SrcMAC and DstMAC its
	// addresses.
	EthProto       uint16
	SrcMAC, DstMAC net.HardwareAddr
	// Proto is the IP protocol (0 if the frame is not IPv4). Src and Dst
	// are the IPv4 addresses, or the ARP sender and target addresses.
	Proto    uint8
	Src, Dst netip.Addr
	// HasPorts is set when SrcPort and DstPort are known: TCP and UDP
	// ports, or for ICMP the type (SrcPort) and code (DstPort).
	HasPorts         bool
	SrcPort, DstPort uint16
	// Len is the packet's length in bytes (skb->len).
	Len uint32
}

// ErrTraceClosed is returned by TraceReader.Read after Close.
var ErrTraceClosed = errors.New("trace reader closed")

// SetTracing sets or clears the data plane's trace flag. The agent sets it
// while at least one client traces and clears it at start-up (a flag left
// by a crashed agent would cost every drop a ring buffer write).
func (d *Datapath) SetTracing(on bool) error {
	var st lxcTraceState
	if err := d.lxc.GenieTraceState.Lookup(uint32(0), &st); err != nil {
		return fmt.Errorf("read trace state: %w", err)
	}
	st.Enabled = 0
	if on {
		st.Enabled = 1
	}
	// Read-modify-write: a lost-event increment racing with it may be lost.
	if err := d.lxc.GenieTraceState.Update(uint32(0), &st, 0); err != nil {
		return fmt.Errorf("set trace flag: %w", err)
	}
	return nil
}

// Tracing reports whether the trace flag is set.
func (d *Datapath) Tracing() (bool, error) {
	var st lxcTraceState
	if err := d.lxc.GenieTraceState.Lookup(uint32(0), &st); err != nil {
		return false, fmt.Errorf("read trace state: %w", err)
	}
	return st.Enabled != 0, nil
}

// TraceLost returns how many events the ring buffer had no room for, since
// the maps were created.
func (d *Datapath) TraceLost() (uint64, error) {
	var st lxcTraceState
	if err := d.lxc.GenieTraceState.Lookup(uint32(0), &st); err != nil {
		return 0, fmt.Errorf("read trace state: %w", err)
	}
	return st.Lost, nil
}

// TraceReader reads drop events from the data plane's ring buffer. Use one
// per Datapath (the ring has one consumer position); it is not safe for
// concurrent Reads.
type TraceReader struct {
	rd *ringbuf.Reader
	// mono2wall converts bpf_ktime_get_ns to wall time.
	mono2wall time.Duration
}

// Trace opens the reader of drop events. Events are produced only while
// the trace flag is set (SetTracing); a full ring loses events (TraceLost),
// never packets.
func (d *Datapath) Trace() (*TraceReader, error) {
	rd, err := ringbuf.NewReader(d.lxc.GenieTrace)
	if err != nil {
		return nil, fmt.Errorf("open trace reader: %w", err)
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		rd.Close()
		return nil, fmt.Errorf("open trace reader: %w", err)
	}
	return &TraceReader{rd: rd, mono2wall: time.Duration(time.Now().UnixNano() - ts.Nano())}, nil
}

// Read blocks until the next event, the deadline set by SetDeadline
// (os.ErrDeadlineExceeded) or Close (ErrTraceClosed).
func (r *TraceReader) Read() (TraceEvent, error) {
	rec, err := r.rd.Read()
	switch {
	case errors.Is(err, ringbuf.ErrClosed):
		return TraceEvent{}, ErrTraceClosed
	case err != nil:
		return TraceEvent{}, fmt.Errorf("read trace event: %w", err)
	}
	return decodeTraceEvent(rec.RawSample, r.mono2wall)
}

// SetDeadline makes Read return os.ErrDeadlineExceeded after t (zero: none).
func (r *TraceReader) SetDeadline(t time.Time) { r.rd.SetDeadline(t) }

// Close stops the reader; a blocked Read returns ErrTraceClosed.
func (r *TraceReader) Close() error { return r.rd.Close() }

// decodeTraceEvent decodes one ring record (struct trace_event).
func decodeTraceEvent(b []byte, mono2wall time.Duration) (TraceEvent, error) {
	var raw lxcTraceEvent
	if len(b) < int(unsafe.Sizeof(raw)) {
		return TraceEvent{}, fmt.Errorf("read trace event: short record of %d bytes", len(b))
	}
	if _, err := binary.Decode(b, binary.NativeEndian, &raw); err != nil {
		return TraceEvent{}, fmt.Errorf("read trace event: %w", err)
	}
	ev := TraceEvent{
		Time:     time.Unix(0, int64(raw.TsNs)+int64(mono2wall)),
		Reason:   DropReason(raw.Reason),
		Ifindex:  int(raw.Ifindex),
		FromPod:  raw.Flags&traceFromPod != 0,
		Geneve:   raw.Flags&traceGeneve != 0,
		VNI:      raw.Vni,
		EthProto: raw.EthProto,
		SrcMAC:   net.HardwareAddr(raw.Smac[:]),
		DstMAC:   net.HardwareAddr(raw.Dmac[:]),
		Proto:    raw.Proto,
		HasPorts: raw.Flags&traceL4 != 0,
		Len:      raw.Len,
	}
	if ev.Geneve {
		ev.OuterSrc = be32Addr(raw.OuterSaddr)
	}
	if raw.EthProto == EtherTypeIPv4 || raw.EthProto == EtherTypeARP {
		ev.Src, ev.Dst = be32Addr(raw.Saddr), be32Addr(raw.Daddr)
	}
	if ev.HasPorts {
		if ev.Proto == unix.IPPROTO_ICMP {
			// type and code, one byte each, stored in host order
			ev.SrcPort, ev.DstPort = raw.Sport, raw.Dport
		} else {
			ev.SrcPort, ev.DstPort = ntohs(raw.Sport), ntohs(raw.Dport)
		}
	}
	return ev, nil
}

// be32Addr converts an address read from a map as a native uint32 (the
// packet's bytes) back to its address.
func be32Addr(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// ParseDropReason returns the reason named s (as String prints it, any
// case).
func ParseDropReason(s string) (DropReason, error) {
	var names []string
	for _, r := range DropReasons() {
		if strings.EqualFold(r.String(), s) {
			return r, nil
		}
		names = append(names, r.String())
	}
	return 0, fmt.Errorf("unknown drop reason %q (known: %s)", s, strings.Join(names, ", "))
}
