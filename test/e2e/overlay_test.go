package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/vishvananda/netlink"
)

const (
	reachTimeout = 5 * time.Second
	// blockTimeout bounds probes that must fail: long enough for a
	// delivered packet to arrive many times over on this machine.
	blockTimeout = 1500 * time.Millisecond
)

func mustReach(t *testing.T, what string, from, to sandbox.Endpoint, ip netip.Addr, port int) {
	t.Helper()
	ctx := context.Background()
	if err := sandbox.ProbeTCP(ctx, from, to, ip, port, reachTimeout); err != nil {
		t.Errorf("%s: tcp: %v", what, err)
	}
	if err := sandbox.ProbeUDP(ctx, from, to, ip, port+1, reachTimeout); err != nil {
		t.Errorf("%s: udp: %v", what, err)
	}
}

func mustNotReach(t *testing.T, what string, from, to sandbox.Endpoint, ip netip.Addr, port int) {
	t.Helper()
	ctx := context.Background()
	if err := sandbox.ProbeTCP(ctx, from, to, ip, port, blockTimeout); err == nil {
		t.Errorf("%s: tcp reached the target, want isolation", what)
	}
	if err := sandbox.ProbeUDP(ctx, from, to, ip, port+1, blockTimeout); err == nil {
		t.Errorf("%s: udp reached the target, want isolation", what)
	}
}

// TestPrivilegedSameVPC: pods of one VPC reach each other on the same node
// and across nodes, TCP and UDP, both ways, on both underlays (routed:
// node1-node2 and node2-node3 through the router, node1-node3 on-link).
func TestPrivilegedSameVPC(t *testing.T) {
	for _, u := range []string{sandbox.UnderlayFlat, sandbox.UnderlayRouted} {
		t.Run(u, func(t *testing.T) { testSameVPC(t, newSandboxOn(t, 3, u)) })
	}
}

func testSameVPC(t *testing.T, sb *sandbox.Sandbox) {
	mkVPC(t, sb, "blue", "10.10.0.0/16", "10.10.1.0/24")
	a := addPod(t, sb, "a", "node1", "blue/web")
	b := addPod(t, sb, "b", "node1", "blue/web")
	c := addPod(t, sb, "c", "node2", "blue/web")
	d := addPod(t, sb, "d", "node3", "blue/web")
	mustReach(t, "a->b same node", ep(a, ""), ep(b, ""), ipOf(t, b, "eth0"), 8000)
	mustReach(t, "b->a same node", ep(b, ""), ep(a, ""), ipOf(t, a, "eth0"), 8002)
	mustReach(t, "a->c cross node", ep(a, ""), ep(c, ""), ipOf(t, c, "eth0"), 8004)
	mustReach(t, "c->a cross node", ep(c, ""), ep(a, ""), ipOf(t, a, "eth0"), 8006)
	mustReach(t, "c->d cross node", ep(c, ""), ep(d, ""), ipOf(t, d, "eth0"), 8008)
	if err := sandbox.PingTo(context.Background(), ep(d, ""), ep(b, ""), ipOf(t, b, "eth0"), reachTimeout); err != nil {
		t.Errorf("d->b ping: %v", err)
	}
	// A bulk transfer crosses nodes intact (GSO-sized writes through the
	// encapsulation, MTU set right).
	transfer(t, ep(a, ""), ep(d, ""), ipOf(t, d, "eth0"), 8<<20)
}

// transfer sends n bytes over TCP and checks they all arrive in order.
func transfer(t *testing.T, from, to sandbox.Endpoint, ip netip.Addr, n int) {
	t.Helper()
	l, err := sandbox.ListenTCP(to, ":8100")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 64<<10)
		total := 0
		for total < n {
			k, err := c.Read(buf)
			for i := 0; i < k; i++ {
				if buf[i] != byte((total+i)%251) {
					got <- fmt.Errorf("byte %d corrupted", total+i)
					return
				}
			}
			total += k
			if err != nil {
				got <- fmt.Errorf("after %d bytes: %w", total, err)
				return
			}
		}
		got <- nil
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := sandbox.DialTCP(ctx, from, netip.AddrPortFrom(ip, 8100).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a blackhole fails, not hangs
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i % 251)
	}
	if _, err := c.Write(data); err != nil {
		t.Fatalf("transfer write: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatalf("transfer: %v", err)
	}
}

// TestPrivilegedOverlappingVPCsIsolated: two VPCs with the same CIDR, and
// pods with the very same IPs, on the same and different nodes, reach only
// their own VPC.
func TestPrivilegedOverlappingVPCsIsolated(t *testing.T) {
	sb := newSandbox(t, 3)
	mkVPC(t, sb, "blue", "10.10.0.0/16", "10.10.1.0/24")
	mkVPC(t, sb, "red", "10.10.0.0/16", "10.10.1.0/24")
	// The first pod of each VPC on its node claims the subnet's first
	// block in that VPC: same address in both VPCs.
	blue1 := addPod(t, sb, "blue-1", "node1", "blue/web")
	red1 := addPod(t, sb, "red-1", "node2", "red/web")
	blue2 := addPod(t, sb, "blue-2", "node2", "blue/web")
	red2 := addPod(t, sb, "red-2", "node3", "red/web")
	red3 := addPod(t, sb, "red-3", "node1", "red/web")
	if ipOf(t, blue1, "eth0") != ipOf(t, red1, "eth0") {
		t.Fatalf("want the same IP in both VPCs, got blue-1 %s red-1 %s", ipOf(t, blue1, "eth0"), ipOf(t, red1, "eth0"))
	}
	if ipOf(t, blue2, "eth0") != ipOf(t, red2, "eth0") {
		t.Logf("note: blue-2 %s and red-2 %s differ", ipOf(t, blue2, "eth0"), ipOf(t, red2, "eth0"))
	}
	// The same address reaches the pod of the sender's own VPC only.
	same := ipOf(t, blue1, "eth0")
	mustReach(t, "blue-2 -> blue-1 (shared IP)", ep(blue2, ""), ep(blue1, ""), same, 8000)
	mustNotReach(t, "blue-2 -> red-1 (shared IP)", ep(blue2, ""), ep(red1, ""), same, 8002)
	mustReach(t, "red-2 -> red-1 (shared IP)", ep(red2, ""), ep(red1, ""), same, 8004)
	mustNotReach(t, "red-2 -> blue-1 (shared IP)", ep(red2, ""), ep(blue1, ""), same, 8006)
	// Same node, different VPCs: red-3 shares node1 with blue-1.
	mustNotReach(t, "red-3 -> blue-1 (same node)", ep(red3, ""), ep(blue1, ""), same, 8008)
	mustReach(t, "red-3 -> red-1", ep(red3, ""), ep(red1, ""), same, 8010)

	// The full matrix, TCP, UDP and ICMP.
	targets, err := sb.Targets()
	if err != nil {
		t.Fatal(err)
	}
	checks := sandbox.Matrix(context.Background(), targets, blockTimeout)
	for _, c := range checks {
		if !c.OK() {
			t.Errorf("%s (%s) -> %s (%s) %s: expect reach=%v, tcp=%v udp=%v icmp=%v",
				c.From, c.From.VPC, c.To, c.To.VPC, c.To.IP, c.Expect, c.TCP, c.UDP, c.ICMP)
		}
	}
}

// TestPrivilegedAntiSpoof: a pod that changes its IP or its MAC gets
// nothing through, and the data plane counts the drops.
func TestPrivilegedAntiSpoof(t *testing.T) {
	sb := newSandbox(t, 3)
	mkVPC(t, sb, "blue", "10.10.0.0/16", "10.10.1.0/24")
	a := addPod(t, sb, "a", "node1", "blue/web")
	b := addPod(t, sb, "b", "node2", "blue/web")
	c := addPod(t, sb, "c", "node1", "blue/web")
	bIP := ipOf(t, b, "eth0")
	mustReach(t, "a->b before", ep(a, ""), ep(b, ""), bIP, 8000)
	ctx := context.Background()

	// New IP: an address of the subnet nobody owns.
	ipBefore, _ := sb.Drops(ctx, "node1", "SPOOFED_IP")
	orig := ipOf(t, a, "eth0")
	spoof := netip.MustParseAddr("10.10.1.250")
	setAddr(t, a.Netns, orig, spoof)
	mustNotReach(t, "a->b with a forged IP", ep(a, ""), ep(b, ""), bIP, 8002)
	mustNotReach(t, "a->c with a forged IP (same node)", ep(a, ""), ep(c, ""), ipOf(t, c, "eth0"), 8004)
	ipAfter, err := sb.Drops(ctx, "node1", "SPOOFED_IP")
	if err != nil {
		t.Errorf("metrics: %v", err)
	} else if ipAfter <= ipBefore {
		t.Errorf("SPOOFED_IP drops on node1 did not rise: %v -> %v", ipBefore, ipAfter)
	}
	setAddr(t, a.Netns, spoof, orig)
	mustReach(t, "a->b with its own IP again", ep(a, ""), ep(b, ""), bIP, 8006)

	// New MAC.
	macBefore, _ := sb.Drops(ctx, "node1", "SPOOFED_MAC")
	err = sandbox.InNetns(a.Netns, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.LinkSetHardwareAddr(l, net.HardwareAddr{0x02, 0x66, 0x66, 0x66, 0x66, 0x66})
	})
	if err != nil {
		t.Fatal(err)
	}
	mustNotReach(t, "a->b with a forged MAC", ep(a, ""), ep(b, ""), bIP, 8008)
	macAfter, err := sb.Drops(ctx, "node1", "SPOOFED_MAC")
	if err != nil {
		t.Errorf("metrics: %v", err)
	} else if macAfter <= macBefore {
		t.Errorf("SPOOFED_MAC drops on node1 did not rise: %v -> %v", macBefore, macAfter)
	}
}

// setAddr replaces address old with new (same prefix length) on eth0.
func setAddr(t *testing.T, path string, old, new netip.Addr) {
	t.Helper()
	err := sandbox.InNetns(path, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.IP.Equal(old.AsSlice()) {
				ones, _ := a.Mask.Size()
				na, _ := netlink.ParseAddr(fmt.Sprintf("%s/%d", new, ones))
				// Delete first: deleting a primary address also deletes
				// the secondaries of its subnet. The connected route comes
				// back with the new address.
				if err := netlink.AddrDel(l, &a); err != nil {
					return err
				}
				return netlink.AddrAdd(l, na)
			}
		}
		return fmt.Errorf("address %s not found", old)
	})
	if err != nil {
		t.Fatalf("set address %s -> %s: %v", old, new, err)
	}
}

// TestPrivilegedAgentRestart: an established TCP stream between pods on
// two nodes keeps flowing while both agents restart, one gracefully and
// one killed.
func TestPrivilegedAgentRestart(t *testing.T) {
	sb := newSandbox(t, 3)
	mkVPC(t, sb, "blue", "10.10.0.0/16", "10.10.1.0/24")
	a := addPod(t, sb, "a", "node1", "blue/web")
	b := addPod(t, sb, "b", "node2", "blue/web")

	l, err := sandbox.ListenTCP(ep(b, ""), ":8200")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var received atomic.Int64
	srvErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			received.Add(int64(n))
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				srvErr <- err
				return
			}
		}
	}()
	ctx := context.Background()
	c, err := sandbox.DialTCP(ctx, ep(a, ""), netip.AddrPortFrom(ipOf(t, b, "eth0"), 8200).String())
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	cliErr := make(chan error, 1)
	go func() {
		chunk := make([]byte, 16<<10)
		for {
			select {
			case <-stop:
				cliErr <- c.Close()
				return
			default:
			}
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			// Paced, so the restart is not starved of CPU.
			if _, err := c.Write(chunk); err != nil {
				cliErr <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	window := func(what string) int64 {
		start := received.Load()
		time.Sleep(time.Second)
		n := received.Load() - start
		t.Logf("%s: %d bytes in 1s", what, n)
		return n
	}
	if window("before restart") == 0 {
		t.Fatal("stream not flowing before the restart")
	}
	if err := sb.RestartAgent(ctx, "node1", false); err != nil {
		t.Fatal(err)
	}
	if window("after graceful restart of node1's agent") == 0 {
		t.Error("stream stalled after node1's agent restarted")
	}
	if err := sb.RestartAgent(ctx, "node2", true); err != nil {
		t.Fatal(err)
	}
	if window("after node2's agent was killed and restarted") == 0 {
		t.Error("stream stalled after node2's agent was killed and restarted")
	}
	// New attachments work after the restart, and reach the old pods.
	d := addPod(t, sb, "d", "node1", "blue/web")
	mustReach(t, "new pod d -> b", ep(d, ""), ep(b, ""), ipOf(t, b, "eth0"), 8010)
	close(stop)
	if err := <-cliErr; err != nil {
		t.Errorf("stream client: %v", err)
	}
	select {
	case err := <-srvErr:
		if err != nil {
			t.Errorf("stream server: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("stream server did not see the end of the stream")
	}
}
