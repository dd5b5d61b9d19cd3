package datapath

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/safchain/ethtool"
	"github.com/vishvananda/netlink"

	"github.com/cni-genie/cni-genie/pkg/service"
)

// The service path end to end in namespaces (the e2e world of
// e2e_test.go): red and blue have the same CIDR and the same service VIP
// and port, with backends at the same addresses on both nodes but in
// different pods. Every server answers with its pod's name, so a reply
// proves which pod served it.

var e2eVIP = netip.MustParseAddr("10.96.0.10")

// svcTable computes the Maglev table of backends (port 7777) with package
// service, as the agent does.
func svcTable(t testing.TB, m int, ips ...netip.Addr) ServiceTable {
	t.Helper()
	names := make([]string, len(ips))
	for i, ip := range ips {
		names[i] = netip.AddrPortFrom(ip, 7777).String()
	}
	idx, err := service.Maglev(names, m)
	if err != nil {
		t.Fatal(err)
	}
	st := ServiceTable{Slots: make([]Backend, len(idx))}
	for i, x := range idx {
		st.Slots[i] = Backend{IP: ips[x], Port: 7777}
	}
	return st
}

// programService installs the TCP and UDP frontends vip:7777 of vni on
// every node (an agent programs the VPCs its node hosts).
func programService(t testing.TB, nodes []*e2eNode, vni uint32, tab ServiceTable) {
	t.Helper()
	for _, n := range nodes {
		for _, p := range []Protocol{TCP, UDP} {
			if err := n.dp.UpsertService(ServiceKey{VNI: vni, VIP: e2eVIP, Port: 7777, Proto: p}, tab); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// routeVIPs gives a pod a route to the service range through its gateway
// (the gateway answers ARP for any address).
func routeVIPs(t testing.TB, p *e2ePod) {
	inNS(t, p.netns, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.IP{10, 96, 0, 0}, Mask: net.CIDRMask(16, 32)}, Scope: netlink.SCOPE_LINK})
	})
}

// txChecksumOff switches tx checksum offload off on eth0 in netns: the
// kernel then completes checksums in software on transmit, and receivers
// verify them.
func txChecksumOff(t testing.TB, netns ns.NetNS, name string) {
	inNS(t, netns, func() error {
		et, err := ethtool.NewEthtool()
		if err != nil {
			return err
		}
		defer et.Close()
		if err := et.Change("eth0", map[string]bool{"tx-checksum-ip-generic": false}); err != nil {
			return fmt.Errorf("tx checksum off in %s: %w", name, err)
		}
		f, err := et.Features("eth0")
		if err != nil || f["tx-checksum-ip-generic"] || f["tx-tcp-segmentation"] {
			return fmt.Errorf("tx checksum still on in %s (%v)", name, err)
		}
		return nil
	})
}

// serveUDPIn answers every datagram on :7777 with the pod's name.
func serveUDPIn(t testing.TB, p *e2ePod) {
	var c net.PacketConn
	inNS(t, p.netns, func() (err error) {
		c, err = net.ListenPacket("udp4", ":7777")
		return err
	})
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteTo([]byte(p.name), from)
		}
	}()
}

// askUDP sends one datagram from a socket connected to vip:7777: only a
// reply from the VIP itself (reverse-NATed) reaches a connected socket.
func askUDP(t testing.TB, p *e2ePod, vip netip.Addr) string {
	t.Helper()
	var c net.Conn
	inNS(t, p.netns, func() (err error) {
		c, err = net.Dial("udp4", netip.AddrPortFrom(vip, 7777).String())
		return err
	})
	defer c.Close()
	buf := make([]byte, 100)
	for try := 0; try < 3; try++ {
		if _, err := c.Write([]byte("who")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil {
			return string(buf[:n])
		}
	}
	t.Fatalf("udp %s -> %s: no answer from the vip", p.name, vip)
	return ""
}

// stream is a long-lived TCP connection through the VIP to the name server.
type stream struct {
	c       net.Conn
	backend string
	sent    int64
}

func openStream(t testing.TB, p *e2ePod, vip netip.Addr) *stream {
	t.Helper()
	var c net.Conn
	inNS(t, p.netns, func() (err error) {
		c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(vip, 7777).String(), 5*time.Second)
		return err
	})
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	name, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("stream %s -> %s: %v", p.name, vip, err)
	}
	return &stream{c: c, backend: strings.TrimSpace(name)}
}

func (s *stream) send(t testing.TB, n int64) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for left := n; left > 0; left -= int64(len(buf)) {
		if _, err := s.c.Write(buf[:min(int64(len(buf)), left)]); err != nil {
			t.Fatalf("stream to %s broke after %d bytes: %v", s.backend, s.sent, err)
		}
	}
	s.sent += n
}

// finish half-closes and checks the server counted every byte.
func (s *stream) finish(t testing.TB) {
	t.Helper()
	defer s.c.Close()
	_ = s.c.(*net.TCPConn).CloseWrite()
	var b [8]byte
	if _, err := s.c.Read(b[:]); err != nil {
		t.Fatalf("stream to %s: no byte count: %v", s.backend, err)
	}
	var n int64
	for _, x := range b {
		n = n<<8 | int64(x)
	}
	if n != s.sent {
		t.Fatalf("stream to %s: server counted %d bytes, sent %d", s.backend, n, s.sent)
	}
}

func TestPrivilegedServiceE2E(t *testing.T) {
	needBPF(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	a, b := newE2ENodes(t)
	nodes := []*e2eNode{a, b}
	redClient := newE2EPod(t, "red-client", a, vniRed, "10.0.0.1")
	redA2 := newE2EPod(t, "red-a2", a, vniRed, "10.0.0.2")
	redB3 := newE2EPod(t, "red-b3", b, vniRed, "10.0.0.3")
	blueClient := newE2EPod(t, "blue-client", a, vniBlue, "10.0.0.1")
	blueB2 := newE2EPod(t, "blue-b2", b, vniBlue, "10.0.0.2")
	blueA3 := newE2EPod(t, "blue-a3", a, vniBlue, "10.0.0.3")
	pods := []*e2ePod{redClient, redA2, redB3, blueClient, blueB2, blueA3}
	publish(t, nodes, pods)
	for _, p := range pods {
		p.serve(t)
		serveUDPIn(t, p)
		routeVIPs(t, p)
	}
	// Red's client sends fully checksummed packets (CHECKSUM_NONE); blue's
	// sends CHECKSUM_PARTIAL with GSO, whose NAT must fold the address
	// change into the pseudo-header sum. Veths never verify a
	// CHECKSUM_PARTIAL packet, so node a's uplink completes checksums in
	// software: a wrong pseudo-header sum from the DNAT then reaches node
	// b's pods as a bad checksum.
	txChecksumOff(t, redClient.netns, redClient.name)
	txChecksumOff(t, a.netns, "node a")
	ip2, ip3 := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	programService(t, nodes, vniRed, svcTable(t, 1021, ip2, ip3))
	programService(t, nodes, vniBlue, svcTable(t, 1021, ip2, ip3))

	spread := func(client *e2ePod, want map[string]bool, n int, ask func() string) {
		t.Helper()
		got := map[string]int{}
		for i := 0; i < n; i++ {
			name := ask()
			if !want[name] {
				t.Fatalf("%s: connection %d through the vip answered by %s, not one of %v", client.name, i, name, want)
			}
			got[name]++
		}
		for name := range want {
			if got[name] == 0 {
				t.Errorf("%s: backend %s got none of %d connections (%v)", client.name, name, n, got)
			}
		}
		t.Logf("%s: %v", client.name, got)
	}
	red := map[string]bool{"red-a2": true, "red-b3": true}
	blue := map[string]bool{"blue-b2": true, "blue-a3": true}
	spread(redClient, red, 200, func() string { return redClient.talk(t, e2eVIP, 1000) })
	spread(blueClient, blue, 200, func() string { return blueClient.talk(t, e2eVIP, 1000) })
	spread(redClient, red, 40, func() string { return askUDP(t, redClient, e2eVIP) })
	spread(blueClient, blue, 40, func() string { return askUDP(t, blueClient, e2eVIP) })

	// Bulk through the vip: GSO super-packets from blue (offload on), full
	// checksums from red (offload off), both ways across nodes.
	for _, c := range []*e2ePod{redClient, blueClient} {
		for i := 0; i < 4; i++ {
			c.talk(t, e2eVIP, 8<<20)
		}
	}

	// Hairpin: a backend reaching its own service, sometimes itself.
	self := 0
	for i := 0; i < 30; i++ {
		if redA2.talk(t, e2eVIP, 1000) == "red-a2" {
			self++
		}
	}
	if self == 0 {
		t.Errorf("no connection of red-a2 through its own service landed on itself (hairpin untested)")
	}

	// A long stream survives the removal of the other backend; new
	// connections avoid the removed one.
	s := openStream(t, redClient, e2eVIP)
	s.send(t, 4<<20)
	keep, gone := ip2, ip3
	if s.backend == "red-b3" {
		keep, gone = ip3, ip2
	}
	programService(t, nodes, vniRed, svcTable(t, 1021, keep))
	s.send(t, 4<<20)
	for i := 0; i < 30; i++ {
		if got := redClient.talk(t, e2eVIP, 100); got != s.backend {
			t.Fatalf("after removing %s, a new connection went to %s", gone, got)
		}
	}
	// And an agent restart mid-stream: the old agent's fds go away, a new
	// one re-adopts the pinned maps and replaces the programs.
	for _, n := range nodes {
		if err := n.dp.Close(); err != nil {
			t.Fatal(err)
		}
	}
	s.send(t, 4<<20)
	for _, n := range nodes {
		n.open(t)
	}
	for _, p := range pods {
		inNS(t, p.node.netns, func() error { return p.node.dp.AttachEndpoint(p.host) })
	}
	s.send(t, 4<<20)
	s.finish(t)

	for _, n := range nodes {
		drops, err := n.dp.Drops()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []DropReason{DropForged, DropNATFailed, DropCTFailed, DropNoBackend, DropSpoofedIP} {
			if drops[r] != 0 {
				t.Errorf("node %s dropped %d packets as %s", n.name, drops[r], r)
			}
		}
	}
}

// BenchmarkServiceE2E compares, in one run and interleaved, a client pod
// on node a talking to one backend on node b straight to its address,
// through the VIP (this data plane), and through a kube-proxy-style
// iptables DNAT rule (netfilter conntrack + NAT in the client's netns, to
// another VIP, when iptables is installed): TCP connections+request per
// second, and single-stream throughput VIP vs direct. Same backend for
// every mode, so the ratios compare the paths, not the load spread.
func BenchmarkServiceE2E(b *testing.B) {
	needBPF(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	na, nb := newE2ENodes(b)
	client := newE2EPod(b, "client", na, vniRed, "10.0.0.1")
	backend := newE2EPod(b, "backend", nb, vniRed, "10.0.0.2")
	publish(b, []*e2eNode{na, nb}, []*e2ePod{client, backend})
	backend.serve(b)
	routeVIPs(b, client)
	programService(b, []*e2eNode{na, nb}, vniRed, svcTable(b, 1021, backend.ip))
	iptVIP := netip.MustParseAddr("10.96.0.20")
	haveIPT := false
	if path, err := exec.LookPath("iptables"); err == nil {
		out, err := exec.Command("nsenter", "--net="+client.netns.Path(), path, "-t", "nat", "-A", "OUTPUT",
			"-d", iptVIP.String(), "-p", "tcp", "--dport", "7777", "-j", "DNAT", "--to-destination", backend.ip.String()+":7777").CombinedOutput()
		if err != nil {
			b.Logf("no iptables DNAT baseline: %v: %s", err, out)
		} else {
			haveIPT = true
		}
	}
	const conns = 300
	rate := func(dst netip.Addr) float64 {
		start := time.Now()
		for i := 0; i < conns; i++ {
			client.talk(b, dst, 1)
		}
		return conns / time.Since(start).Seconds()
	}
	const size = 256 << 20
	gbps := func(dst netip.Addr) float64 {
		start := time.Now()
		client.talk(b, dst, size)
		return float64(size) * 8 / time.Since(start).Seconds() / 1e9
	}
	var direct, vip, ipt, tDirect, tVIP float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate the order of the modes: the first of a round runs on
		// a colder machine.
		steps := []func(){
			func() { direct += rate(backend.ip) },
			func() { vip += rate(e2eVIP) },
			func() {
				if haveIPT {
					ipt += rate(iptVIP)
				}
			},
			func() { tDirect += gbps(backend.ip) },
			func() { tVIP += gbps(e2eVIP) },
		}
		if i%2 == 1 {
			steps[0], steps[1], steps[3], steps[4] = steps[1], steps[0], steps[4], steps[3]
		}
		for _, f := range steps {
			f()
		}
	}
	n := float64(b.N)
	b.ReportMetric(direct/n, "direct-conn/s")
	b.ReportMetric(vip/n, "vip-conn/s")
	b.ReportMetric(vip/direct, "vip/direct-conn")
	if haveIPT {
		b.ReportMetric(ipt/n, "iptables-conn/s")
		b.ReportMetric(vip/ipt, "vip/iptables-conn")
	}
	b.ReportMetric(tDirect/n, "direct-Gbit/s")
	b.ReportMetric(tVIP/n, "vip-Gbit/s")
	b.ReportMetric(tVIP/tDirect, "vip/direct-Gbit")
}
