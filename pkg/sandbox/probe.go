package sandbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Endpoint names a place in the sandbox to probe from or to: a namespace
// path and, optionally, the interface sockets bind to (SO_BINDTODEVICE).
// Binding matters for pods in several VPCs with overlapping CIDRs, where
// the destination address alone cannot pick the interface.
type Endpoint struct {
	Netns  string
	Device string
}

func bindControl(dev string) func(string, string, syscall.RawConn) error {
	if dev == "" {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, dev)
		}); err != nil {
			return err
		}
		return serr
	}
}

// ListenTCP opens a TCP listener inside e's namespace.
func ListenTCP(e Endpoint, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNetns(e.Netns, func() error {
		var err error
		lc := net.ListenConfig{Control: bindControl(e.Device)}
		l, err = lc.Listen(context.Background(), "tcp4", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s in %s: %w", addr, e.Netns, err)
	}
	return l, nil
}

// DialTCP connects from inside e's namespace.
func DialTCP(ctx context.Context, e Endpoint, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(e.Netns, func() error {
		var err error
		d := net.Dialer{Control: bindControl(e.Device)}
		c, err = d.DialContext(ctx, "tcp4", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial tcp %s from %s: %w", addr, e.Netns, err)
	}
	return c, nil
}

// ListenUDP opens a UDP socket inside e's namespace.
func ListenUDP(e Endpoint, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := inNetns(e.Netns, func() error {
		var err error
		lc := net.ListenConfig{Control: bindControl(e.Device)}
		pc, err = lc.ListenPacket(context.Background(), "udp4", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen udp %s in %s: %w", addr, e.Netns, err)
	}
	return pc, nil
}

// ProbeTCP opens a listener on port in to's namespace, connects to ip:port
// from from's namespace and echoes a token. It succeeds only if the
// connection reached that very namespace.
func ProbeTCP(ctx context.Context, from, to Endpoint, ip netip.Addr, port int, timeout time.Duration) error {
	l, err := ListenTCP(to, fmt.Sprintf(":%d", port))
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(timeout))
				io.Copy(c, io.LimitReader(c, 64))
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := DialTCP(ctx, from, netip.AddrPortFrom(ip, uint16(port)).String())
	if err != nil {
		return err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	token := []byte(fmt.Sprintf("genie-probe-%d", time.Now().UnixNano()))
	if _, err := c.Write(token); err != nil {
		return fmt.Errorf("tcp probe %s: write: %w", ip, err)
	}
	got := make([]byte, len(token))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("tcp probe %s: read: %w", ip, err)
	}
	if !bytes.Equal(got, token) {
		return fmt.Errorf("tcp probe %s: echo mismatch", ip)
	}
	return nil
}

// ProbeUDP sends datagrams from from's namespace to ip:port, where a
// socket in to's namespace answers; it succeeds once an answer carrying the
// token comes back (a few tries within timeout, so a first packet lost to
// neighbour resolution does not count as a failure).
func ProbeUDP(ctx context.Context, from, to Endpoint, ip netip.Addr, port int, timeout time.Duration) error {
	srv, err := ListenUDP(to, fmt.Sprintf(":%d", port))
	if err != nil {
		return err
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 128)
		for {
			n, a, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(buf[:n], a)
		}
	}()
	cli, err := ListenUDP(from, ":0")
	if err != nil {
		return err
	}
	defer cli.Close()
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port)))
	token := []byte(fmt.Sprintf("genie-probe-%d", time.Now().UnixNano()))
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 128)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if _, err := cli.WriteTo(token, dst); err != nil {
			return fmt.Errorf("udp probe %s: %w", ip, err)
		}
		cli.SetReadDeadline(minTime(deadline, time.Now().Add(timeout/4+time.Millisecond)))
		n, _, err := cli.ReadFrom(buf)
		if err == nil && bytes.Equal(buf[:n], token) {
			return nil
		}
	}
	return fmt.Errorf("udp probe %s: no answer within %s", ip, timeout)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Ping sends ICMP echo requests to ip from inside from's namespace (a raw
// socket, no ping binary) and succeeds on the first matching reply.
func Ping(ctx context.Context, from Endpoint, ip netip.Addr, timeout time.Duration) error {
	return ping(ctx, from, ip, uint16(time.Now().UnixNano()>>8)|1, timeout)
}

func ping(ctx context.Context, from Endpoint, ip netip.Addr, id uint16, timeout time.Duration) error {
	var pc net.PacketConn
	err := inNetns(from.Netns, func() error {
		var err error
		lc := net.ListenConfig{Control: bindControl(from.Device)}
		pc, err = lc.ListenPacket(context.Background(), "ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return fmt.Errorf("ping %s: icmp socket: %w", ip, err)
	}
	defer pc.Close()
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for seq := uint16(1); time.Now().Before(deadline) && ctx.Err() == nil; seq++ {
		req := icmpEcho(8, id, seq, []byte("genie-sandbox"))
		if _, err := pc.WriteTo(req, &net.IPAddr{IP: ip.AsSlice()}); err != nil {
			return fmt.Errorf("ping %s: %w", ip, err)
		}
		round := minTime(deadline, time.Now().Add(timeout/4+time.Millisecond))
		for {
			pc.SetReadDeadline(round)
			n, src, err := pc.ReadFrom(buf)
			if err != nil {
				break
			}
			// The raw socket delivers the ICMP message without the IP header.
			if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id {
				if a, ok := src.(*net.IPAddr); ok && a.IP.Equal(ip.AsSlice()) {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("ping %s: no reply within %s", ip, timeout)
}

func icmpEcho(typ uint8, id, seq uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	b[0] = typ
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], payload)
	binary.BigEndian.PutUint16(b[2:], checksum(b))
	return b
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// PingTo pings ip from from's namespace and succeeds only if the echo
// request arrived in to's namespace (seen by a raw ICMP socket there) and
// a reply came back: with overlapping VPCs the same address may answer
// from another namespace, which must not count.
func PingTo(ctx context.Context, from, to Endpoint, ip netip.Addr, timeout time.Duration) error {
	var witness net.PacketConn
	err := inNetns(to.Netns, func() error {
		var err error
		// Bound to the target interface: a request arriving on another
		// interface of the same pod (another VPC) must not count.
		lc := net.ListenConfig{Control: bindControl(to.Device)}
		witness, err = lc.ListenPacket(context.Background(), "ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return fmt.Errorf("ping %s: witness socket: %w", ip, err)
	}
	defer witness.Close()
	id := uint16(time.Now().UnixNano()>>8) | 1
	seen := make(chan struct{})
	go func() {
		buf := make([]byte, 1500)
		witness.SetReadDeadline(time.Now().Add(timeout + time.Second))
		for {
			n, _, err := witness.ReadFrom(buf)
			if err != nil {
				return
			}
			if n >= 8 && buf[0] == 8 && binary.BigEndian.Uint16(buf[4:]) == id {
				close(seen)
				return
			}
		}
	}()
	if err := ping(ctx, from, ip, id, timeout); err != nil {
		return err
	}
	select {
	case <-seen:
		return nil
	case <-time.After(200 * time.Millisecond):
		return fmt.Errorf("ping %s: answered, but not by the target namespace", ip)
	}
}
