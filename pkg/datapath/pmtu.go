package datapath

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Path MTU on the underlay.
//
// from_pod checks every outer packet (for GSO packets: every segment)
// against the path MTU towards the peer that bpf_fib_lookup reports: the
// route's locked MTU, else the kernel's PMTU exception for the peer's
// address, else the device MTU. A packet that does not fit is dropped
// (FRAG_NEEDED) and, if DF is set, answered with an ICMP "fragmentation
// needed" carrying the pod's MTU for that path (path MTU - EncapOverhead),
// so the pod's TCP lowers its MSS instead of blackholing.
//
// The PMTU exception needs one thing the data plane cannot do itself: the
// kernel records one when a router's ICMP "fragmentation needed" about our
// outer UDP packet reaches a socket that matches it (icmp_unreach ->
// udp_err or raw_icmp_error -> ipv4_sk_update_pmtu). Our Geneve packets are
// built in BPF and have no UDP socket: a socket bound to port 6081 does not
// match either, because the error is looked up by our random source port.
// A raw IPPROTO_UDP socket bound to the underlay address and the uplink
// matches every UDP error about our packets (raw sockets see ICMP errors for
// their protocol regardless of ports), so holding one makes the kernel
// learn the peer's PMTU; the next packet then meets the lower MTU in the
// FIB lookup. The socket never reads: a classic BPF filter refuses every
// packet, so UDP to the node costs one clone per packet and nothing queues.
// Exceptions expire (net.ipv4.route.mtu_expires, 10 min) and are relearnt.
// Without a running agent nothing learns new exceptions: oversized packets
// are lost at the router until one runs again.

// pmtuSocket opens the raw socket that lets the kernel learn path MTUs
// towards the peers (see above), bound to local on ifindex.
func pmtuSocket(local netip.Addr, ifindex int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("open pmtu socket: %w", err)
	}
	// ret #0: accept nothing.
	drop := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	steps := []struct {
		what string
		err  func() error
	}{
		{"filter", func() error {
			return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &drop[0]})
		}},
		{"bind to uplink", func() error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BINDTOIFINDEX, ifindex) }},
		{"bind to underlay address", func() error { return unix.Bind(fd, &unix.SockaddrInet4{Addr: local.As4()}) }},
	}
	for _, s := range steps {
		if err := s.err(); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("open pmtu socket: %s: %w", s.what, err)
		}
	}
	return fd, nil
}

// enableForwarding turns IPv4 forwarding on for the uplink (in the caller's
// network namespace): bpf_fib_lookup refuses to resolve a next hop through
// a device without it (BPF_FIB_LKUP_RET_FWD_DISABLED). On a Kubernetes node
// it is on already (net.ipv4.ip_forward=1 sets it on every device).
func enableForwarding(procSysNet, name string) error {
	if procSysNet == "" {
		procSysNet = "/proc/sys/net"
	}
	p := filepath.Join(procSysNet, "ipv4/conf", name, "forwarding")
	if b, err := os.ReadFile(p); err == nil && len(b) > 0 && b[0] == '1' {
		return nil
	}
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable ipv4 forwarding on %s: %w", name, err)
	}
	return nil
}
