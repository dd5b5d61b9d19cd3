package datapath

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// End-to-end smoke test in real network namespaces: two "nodes" joined by a
// veth underlay, pods attached by veths, maps filled by hand as the agent
// would. It checks what BPF_PROG_RUN cannot: redirect_peer, real checksums
// and GSO through the Geneve encapsulation, ARP from a real neighbour stack.

const e2eMTU = 1500

type e2eNode struct {
	name   string
	netns  ns.NetNS
	ip     netip.Addr
	mac    net.HardwareAddr
	uplink int
	dp     *Datapath
	pin    string
}

type e2ePod struct {
	name  string
	node  *e2eNode
	netns ns.NetNS
	vni   uint32
	ip    netip.Addr
	mac   net.HardwareAddr
	host  int
}

func newNetNS(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		if err := testutils.UnmountNS(n); err != nil {
			t.Errorf("unmount netns: %v", err)
		}
	})
	return n
}

func inNS(t testing.TB, n ns.NetNS, f func() error) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatal(err)
	}
}

// setUp brings a link up with an optional address and MTU, in the current netns.
func setUp(name string, addr string, mtu int) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", name, err)
	}
	if mtu > 0 {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return nil, fmt.Errorf("set mtu of %s: %w", name, err)
		}
	}
	if addr != "" {
		a, err := netlink.ParseAddr(addr)
		if err != nil {
			return nil, err
		}
		if err := netlink.AddrAdd(l, a); err != nil {
			return nil, fmt.Errorf("add %s to %s: %w", addr, name, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set %s up: %w", name, err)
	}
	return netlink.LinkByName(name)
}

func newE2ENodes(t testing.TB) (*e2eNode, *e2eNode) {
	a := &e2eNode{name: "a", netns: newNetNS(t), ip: netip.MustParseAddr("192.168.200.1")}
	b := &e2eNode{name: "b", netns: newNetNS(t), ip: netip.MustParseAddr("192.168.200.2")}
	inNS(t, a.netns, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(b.netns.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create underlay veth: %w", err)
		}
		return nil
	})
	for _, n := range []*e2eNode{a, b} {
		inNS(t, n.netns, func() error {
			if _, err := setUp("lo", "", 0); err != nil {
				return err
			}
			l, err := setUp("eth0", n.ip.String()+"/24", 0)
			if err != nil {
				return err
			}
			n.uplink, n.mac = l.Attrs().Index, l.Attrs().HardwareAddr
			return nil
		})
	}
	for _, n := range []*e2eNode{a, b} {
		n.pin = testPinDir(t)
		n.open(t)
	}
	return a, b
}

func (n *e2eNode) open(t testing.TB) {
	t.Helper()
	dp, err := Open(Config{PinDir: n.pin, UnderlayIP: n.ip, UplinkIfindex: n.uplink, UplinkMAC: n.mac, GatewayMAC: gwMAC})
	if err != nil {
		t.Fatalf("open datapath of node %s: %v", n.name, err)
	}
	n.dp = dp
	t.Cleanup(func() { dp.Close() })
	inNS(t, n.netns, func() error { return dp.AttachUplink(n.uplink) })
}

func newE2EPod(t testing.TB, name string, node *e2eNode, vni uint32, ip string) *e2ePod {
	p := &e2ePod{name: name, node: node, netns: newNetNS(t), vni: vni, ip: netip.MustParseAddr(ip)}
	hostName := "lxc" + randSuffix()
	inNS(t, node.netns, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName, MTU: e2eMTU - EncapOverhead}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(p.netns.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create pod veth: %w", err)
		}
		l, err := setUp(hostName, "", 0)
		if err != nil {
			return err
		}
		p.host = l.Attrs().Index
		return nil
	})
	inNS(t, p.netns, func() error {
		if _, err := setUp("lo", "", 0); err != nil {
			return err
		}
		l, err := setUp("eth0", ip+"/24", e2eMTU-EncapOverhead)
		if err != nil {
			return err
		}
		p.mac = l.Attrs().HardwareAddr
		return nil
	})
	if err := node.dp.UpsertLocalEndpoint(LocalEndpoint{VNI: vni, IP: p.ip, MAC: p.mac, HostIfindex: p.host}); err != nil {
		t.Fatal(err)
	}
	inNS(t, node.netns, func() error { return node.dp.AttachEndpoint(p.host) })
	return p
}

// publish makes every pod known to every other node as remote.
func publish(t testing.TB, nodes []*e2eNode, pods []*e2ePod) {
	for _, n := range nodes {
		for _, m := range nodes {
			if m != n {
				if err := n.dp.UpsertNode(m.ip, m.mac); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, p := range pods {
			if p.node != n {
				if err := n.dp.UpsertRemoteEndpoint(RemoteEndpoint{VNI: p.vni, IP: p.ip, MAC: p.mac, NodeIP: p.node.ip}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// serve runs a TCP server in the pod: it sends its name, then counts the
// bytes it receives until EOF and answers with the count.
func (p *e2ePod) serve(t testing.TB) { serveIn(t, p.netns, p.name) }

func serveIn(t testing.TB, netns ns.NetNS, name string) {
	var ln net.Listener
	inNS(t, netns, func() (err error) {
		ln, err = net.Listen("tcp4", ":7777")
		return err
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", name)
				n, _ := io.Copy(io.Discard, c)
				_ = binary.Write(c, binary.BigEndian, n)
			}()
		}
	}()
}

// talk connects from p to dst:7777, sends size bytes and returns the
// server's name; it fails if the byte count does not come back.
func (p *e2ePod) talk(t testing.TB, dst netip.Addr, size int64) string {
	t.Helper()
	return talkFrom(t, p.netns, p.name, p.ip, dst, size)
}

func talkFrom(t testing.TB, netns ns.NetNS, name string, src, dst netip.Addr, size int64) string {
	t.Helper()
	var c net.Conn
	inNS(t, netns, func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err = d.Dial("tcp4", netip.AddrPortFrom(dst, 7777).String())
		return err
	})
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(120 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("%s -> %s: read name: %v", name, dst, err)
	}
	if _, err := io.CopyN(c, zeroReader{}, size); err != nil {
		t.Fatalf("%s -> %s: send: %v", name, dst, err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	var n int64
	if err := binary.Read(r, binary.BigEndian, &n); err != nil || n != size {
		t.Fatalf("%s -> %s: server counted %d bytes (%v), want %d", name, dst, n, err, size)
	}
	return strings.TrimSpace(name)
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// ping sends one ICMP echo request from the pod and waits up to timeout for
// the matching reply (hand-built: no ping binary needed).
func (p *e2ePod) ping(t testing.TB, dst netip.Addr, timeout time.Duration) error {
	t.Helper()
	var c net.PacketConn
	inNS(t, p.netns, func() (err error) {
		c, err = net.ListenPacket("ip4:icmp", p.ip.String())
		return err
	})
	defer c.Close()
	id, seq := uint16(time.Now().UnixNano()), uint16(1)
	req := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq)}
	req = append(req, payload(56)...)
	binary.BigEndian.PutUint16(req[2:], csum16(req))
	if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("send echo: %w", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no echo reply from %s: %w", dst, err)
		}
		if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id && from.String() == dst.String() {
			return nil
		}
	}
}

func TestPrivilegedE2ETwoNodes(t *testing.T) {
	needBPF(t)
	runtime.LockOSThread() // keep netns switching away from other goroutines' threads
	defer runtime.UnlockOSThread()

	a, b := newE2ENodes(t)
	// Red and blue use the same CIDR; 10.0.0.1 and 10.0.0.3 exist in both,
	// on opposite nodes, so any VNI confusion reaches the wrong pod.
	redA1 := newE2EPod(t, "red-a1", a, vniRed, "10.0.0.1")
	redA2 := newE2EPod(t, "red-a2", a, vniRed, "10.0.0.2")
	redB3 := newE2EPod(t, "red-b3", b, vniRed, "10.0.0.3")
	blueB1 := newE2EPod(t, "blue-b1", b, vniBlue, "10.0.0.1")
	blueA3 := newE2EPod(t, "blue-a3", a, vniBlue, "10.0.0.3")
	pods := []*e2ePod{redA1, redA2, redB3, blueB1, blueA3}
	publish(t, []*e2eNode{a, b}, pods)
	for _, p := range pods {
		p.serve(t)
	}

	cases := []struct {
		from *e2ePod
		to   string
		want string
	}{
		{redA1, "10.0.0.2", "red-a2"},   // local delivery
		{redA1, "10.0.0.3", "red-b3"},   // encap; blue-a3 (local, same ip) must not answer
		{redB3, "10.0.0.1", "red-a1"},   // encap the other way; blue-b1 is local to B
		{blueB1, "10.0.0.3", "blue-a3"}, // blue across nodes
		{blueA3, "10.0.0.1", "blue-b1"}, // red-a1 (local, same ip) must not answer
	}
	check := func(stage string) {
		t.Helper()
		for _, c := range cases {
			dst := netip.MustParseAddr(c.to)
			if err := c.from.ping(t, dst, 2*time.Second); err != nil {
				t.Errorf("%s: ping %s -> %s: %v", stage, c.from.name, c.to, err)
			}
			// 8 MiB exercises GSO/TSO through the tunnel.
			if got := c.from.talk(t, dst, 8<<20); got != c.want {
				t.Errorf("%s: %s -> %s answered by %s, want %s", stage, c.from.name, c.to, got, c.want)
			}
		}
	}
	check("fresh")
	// UDP GSO keeps datagram boundaries through the tunnel (the encap must
	// not shrink gso_size: for UDP it is the datagram size).
	checkUDPGSO(t, redA1, redB3)
	checkUDPGSO(t, redA1, redA2)
	// No pod of blue reaches red's exclusive address; the attempt is a
	// counted NO_ROUTE drop on blue-b1's node.
	before, err := b.dp.Drops()
	if err != nil {
		t.Fatal(err)
	}
	if err := blueB1.ping(t, netip.MustParseAddr("10.0.0.2"), 500*time.Millisecond); err == nil {
		t.Errorf("blue-b1 reached 10.0.0.2, which exists only in red")
	}
	after, err := b.dp.Drops()
	if err != nil {
		t.Fatal(err)
	}
	if after[DropNoRoute] <= before[DropNoRoute] {
		t.Errorf("blue-b1's ping to red's 10.0.0.2 was not counted as NO_ROUTE (%d -> %d)", before[DropNoRoute], after[DropNoRoute])
	}

	// Agent restart: the old agent's fds go away (pins keep everything
	// attached), a new one re-adopts the maps and replaces the programs.
	for _, n := range []*e2eNode{a, b} {
		if err := n.dp.Close(); err != nil {
			t.Fatal(err)
		}
	}
	check("agent gone")
	for _, n := range []*e2eNode{a, b} {
		n.open(t)
	}
	for _, p := range pods {
		inNS(t, p.node.netns, func() error { return p.node.dp.AttachEndpoint(p.host) })
	}
	check("agent restarted")

	// The optional XDP prefilter in front of the tc decap path changes nothing
	// for valid traffic (and, being frags-aware, keeps the 8 MiB transfers
	// working with GSO on the veth underlay).
	for _, n := range []*e2eNode{a, b} {
		inNS(t, n.netns, func() error { return n.dp.AttachUplinkPrefilter(n.uplink) })
	}
	check("with xdp prefilter")

	drops, err := a.dp.Drops()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []DropReason{DropForged, DropSpoofedIP, DropSpoofedMAC, DropUnknownEndpoint, DropEncapFailed, DropDecapFailed, DropGeneveMalformed} {
		if drops[r] != 0 {
			t.Errorf("node a dropped %d packets as %s", drops[r], r)
		}
	}
	t.Logf("node a drops: %v", drops)
}

// BenchmarkE2EThroughput compares TCP throughput between pods on two nodes
// (Geneve built and removed by the BPF programs) with TCP between the two
// nodes over the underlay itself, in the same run. ratio = overlay/underlay.
func BenchmarkE2EThroughput(b *testing.B) {
	needBPF(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	na, nb := newE2ENodes(b)
	pa := newE2EPod(b, "red-a", na, vniRed, "10.0.0.1")
	pb := newE2EPod(b, "red-b", nb, vniRed, "10.0.0.2")
	publish(b, []*e2eNode{na, nb}, []*e2ePod{pa, pb})
	pb.serve(b)
	serveIn(b, nb.netns, "node-b")

	const size = 512 << 20
	var overlay, underlay time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		pa.talk(b, pb.ip, size)
		overlay += time.Since(start)
		start = time.Now()
		talkFrom(b, na.netns, "node-a", na.ip, nb.ip, size)
		underlay += time.Since(start)
	}
	// Then with the XDP prefilter on both uplinks.
	for _, n := range []*e2eNode{na, nb} {
		inNS(b, n.netns, func() error { return n.dp.AttachUplinkPrefilter(n.uplink) })
	}
	var withXDP time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		pa.talk(b, pb.ip, size)
		withXDP += time.Since(start)
	}
	gbps := func(d time.Duration) float64 { return float64(size) * 8 * float64(b.N) / d.Seconds() / 1e9 }
	b.ReportMetric(gbps(withXDP), "overlay+xdp-Gbit/s")
	b.ReportMetric(gbps(overlay), "overlay-Gbit/s")
	b.ReportMetric(gbps(underlay), "underlay-Gbit/s")
	b.ReportMetric(gbps(overlay)/gbps(underlay), "ratio")
}

// checkUDPGSO sends one UDP_SEGMENT write of 8 datagrams of 1000 bytes from
// p to q and checks that q receives exactly those 8 datagrams.
func checkUDPGSO(t testing.TB, p, q *e2ePod) {
	t.Helper()
	const seg, n = 1000, 8
	var rc, sc *net.UDPConn
	inNS(t, q.netns, func() (err error) {
		rc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: q.ip.AsSlice(), Port: 7778})
		return err
	})
	defer rc.Close()
	inNS(t, p.netns, func() (err error) {
		sc, err = net.DialUDP("udp4", &net.UDPAddr{IP: p.ip.AsSlice()}, &net.UDPAddr{IP: q.ip.AsSlice(), Port: 7778})
		return err
	})
	defer sc.Close()
	// A plain datagram first: UDP itself must work.
	if _, err := sc.Write([]byte("plain")); err != nil {
		t.Fatal(err)
	}
	_ = rc.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := rc.Read(make([]byte, 100)); err != nil {
		t.Fatalf("plain udp %s -> %s: %v", p.name, q.name, err)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, seg) }); err != nil || serr != nil {
		t.Fatalf("set UDP_SEGMENT: %v %v", err, serr)
	}
	msg := make([]byte, seg*n)
	for i := range msg {
		msg[i] = byte(i / seg)
	}
	if _, err := sc.Write(msg); err != nil {
		t.Fatalf("udp gso write %s -> %s: %v", p.name, q.name, err)
	}
	buf := make([]byte, 65536)
	_ = rc.SetReadDeadline(time.Now().Add(3 * time.Second))
	for i := 0; i < n; i++ {
		m, err := rc.Read(buf)
		if err != nil {
			dp, _ := p.node.dp.Drops()
			dq, _ := q.node.dp.Drops()
			t.Fatalf("udp gso %s -> %s: datagram %d: %v (drops on sender node %v, receiver node %v)", p.name, q.name, i, err, dp, dq)
		}
		if m != seg || buf[0] != byte(i) || buf[m-1] != byte(i) {
			t.Fatalf("udp gso %s -> %s: datagram %d has %d bytes starting %d, want %d bytes of %d", p.name, q.name, i, m, buf[0], seg, i)
		}
	}
}

// serveEchoIn runs a one-byte echo server on :7779 in netns (TCP_RR style).
func serveEchoIn(t testing.TB, netns ns.NetNS) {
	var ln net.Listener
	inNS(t, netns, func() (err error) {
		ln, err = net.Listen("tcp4", ":7779")
		return err
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*net.TCPConn).SetNoDelay(true)
				b := make([]byte, 1)
				for {
					if _, err := io.ReadFull(c, b); err != nil {
						return
					}
					if _, err := c.Write(b); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// rtt measures the mean round trip of n one-byte exchanges from src (in
// netns) to dst:7779.
func rtt(t testing.TB, netns ns.NetNS, src, dst netip.Addr, n int) time.Duration {
	t.Helper()
	var c net.Conn
	inNS(t, netns, func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err = d.Dial("tcp4", netip.AddrPortFrom(dst, 7779).String())
		return err
	})
	defer c.Close()
	_ = c.(*net.TCPConn).SetNoDelay(true)
	b := []byte{1}
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
	}
	return time.Since(start) / time.Duration(n)
}

// BenchmarkE2ELatency compares TCP request/response latency between pods on
// two nodes with the same between the nodes over the underlay, same run.
func BenchmarkE2ELatency(b *testing.B) {
	needBPF(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	na, nb := newE2ENodes(b)
	pa := newE2EPod(b, "red-a", na, vniRed, "10.0.0.1")
	pb := newE2EPod(b, "red-b", nb, vniRed, "10.0.0.2")
	publish(b, []*e2eNode{na, nb}, []*e2ePod{pa, pb})
	serveEchoIn(b, pb.netns)
	serveEchoIn(b, nb.netns)

	const n = 5000
	var overlay, underlay time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		overlay += rtt(b, pa.netns, pa.ip, pb.ip, n)
		underlay += rtt(b, na.netns, na.ip, nb.ip, n)
	}
	us := func(d time.Duration) float64 { return d.Seconds() * 1e6 / float64(b.N) }
	b.ReportMetric(us(overlay), "overlay-µs/rtt")
	b.ReportMetric(us(underlay), "underlay-µs/rtt")
	b.ReportMetric(float64(overlay)/float64(underlay), "ratio")
}
