package datapath

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// Hand-built packets for the BPF_PROG_RUN fixtures. Each builder returns the
// wire bytes; checksums are computed here independently of the BPF code.

const (
	etherIPv4 = 0x0800
	etherARP  = 0x0806
	etherIPv6 = 0x86dd
	etherTEB  = 0x6558

	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func ethHdr(dst, src net.HardwareAddr, proto uint16) []byte {
	b := make([]byte, 14)
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], proto)
	return b
}

func csum16(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

type ipOpts struct {
	tos     uint8
	ttl     uint8
	fragOff uint16 // flags+offset, host order
	id      uint16
}

// ipv4Pkt builds an IPv4 header (no options) followed by payload.
func ipv4Pkt(src, dst netip.Addr, proto uint8, payload []byte, o ipOpts) []byte {
	if o.ttl == 0 {
		o.ttl = 64
	}
	h := make([]byte, 20)
	h[0] = 0x45
	h[1] = o.tos
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[4:], o.id)
	binary.BigEndian.PutUint16(h[6:], o.fragOff)
	h[8] = o.ttl
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	binary.BigEndian.PutUint16(h[10:], csum16(h))
	return append(h, payload...)
}

func udpPkt(sport, dport uint16, payload []byte) []byte {
	h := make([]byte, 8)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
	return append(h, payload...) // checksum 0: not computed (IPv4 allows it)
}

func geneveHdr(vni uint32, ver, optLen, flags uint8, proto uint16) []byte {
	return []byte{ver<<6 | optLen&0x3f, flags, byte(proto >> 8), byte(proto), byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
}

func arpPkt(op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)
	binary.BigEndian.PutUint16(b[2:], etherIPv4)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], op)
	copy(b[8:14], sha)
	s := spa.As4()
	copy(b[14:18], s[:])
	copy(b[18:24], tha)
	t := tpa.As4()
	copy(b[24:28], t[:])
	return b
}

// payload returns n deterministic bytes.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

// icmpFragNeeded builds an ICMP "fragmentation needed" message (type 3,
// code 4) with next-hop MTU mtu quoting quote.
func icmpFragNeeded(mtu uint16, quote []byte) []byte {
	b := make([]byte, 8, 8+len(quote))
	b[0], b[1] = 3, 4
	binary.BigEndian.PutUint16(b[6:], mtu)
	b = append(b, quote...)
	binary.BigEndian.PutUint16(b[2:], csum16(b))
	return b
}
