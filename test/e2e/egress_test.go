package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/egress"
	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/store"
)

// Egress gateways end to end through the real binaries. Node1 hosts the
// pods; node2 (behind the router) and node3 (on node1's segment) are the
// gateways, and only they route to the external namespace (198.18.0.10),
// the stand-in for the outside world. The external server is an identity
// echo: it first says which address and port it sees the connection from,
// then echoes every line, so a reply proves both the SNAT (the egress
// address) and which pod's connection it belongs to (overlapping VPCs:
// "a reply came back" proves nothing). Tx checksum offload is off on the
// gateways' uplinks and on one pod: the SNAT's incremental checksums are
// then checked by the receivers, not filled in later.

const extPort = 7001

// serveEcho runs the identity echo in the external namespace.
func serveEcho(t *testing.T, ext *sandbox.External) {
	t.Helper()
	sandboxtest.ServeTCP(t, ext.Endpoint(), fmt.Sprintf(":%d", extPort), func(c net.Conn) {
		fmt.Fprintf(c, "%s\n", c.RemoteAddr())
		_, _ = io.Copy(c, c)
	})
}

// extConn is a connection to the external echo and the source it saw.
type extConn struct {
	c    net.Conn
	r    *bufio.Reader
	seen netip.AddrPort
}

// dialExt connects from pod p (optionally from local port lport) and reads
// the address the external server sees.
func dialExt(ctx context.Context, p *sandbox.Pod, ext *sandbox.External, lport int, timeout time.Duration) (*extConn, error) {
	var c net.Conn
	err := sandbox.InNetns(p.Netns, func() error {
		d := net.Dialer{Timeout: timeout}
		if lport != 0 {
			d.LocalAddr = &net.TCPAddr{Port: lport}
		}
		var err error
		c, err = d.DialContext(ctx, "tcp4", netip.AddrPortFrom(ext.IP, extPort).String())
		return err
	})
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(timeout + 20*time.Second))
	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	line, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read the address the server saw: %w", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	seen, err := netip.ParseAddrPort(strings.TrimSpace(line))
	if err != nil {
		c.Close()
		return nil, err
	}
	return &extConn{c: c, r: r, seen: seen}, nil
}

// echo sends a line and checks the same line comes back.
func (e *extConn) echo(line string) error {
	if _, err := fmt.Fprintf(e.c, "%s\n", line); err != nil {
		return err
	}
	got, err := e.r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != line {
		return fmt.Errorf("sent %q, got %q back", line, strings.TrimSpace(got))
	}
	return nil
}

func vpcIf(t *testing.T, p *sandbox.Pod) string {
	t.Helper()
	for _, i := range p.Interfaces {
		if i.VPC != "" {
			return i.Name
		}
	}
	t.Fatalf("pod %s has no vpc interface", p.Name)
	return ""
}

func TestPrivilegedEgress(t *testing.T) {
	sb := newSandbox(t, 3)
	ctx := t.Context()
	mkVPC(t, sb, "blue", "10.10.0.0/16", "10.10.1.0/24")
	mkVPC(t, sb, "red", "10.10.0.0/16", "10.10.1.0/24")
	ext, err := sb.AddExternal("node2", "node3")
	if err != nil {
		t.Fatal(err)
	}
	serveEcho(t, ext)
	nodeIP := map[string]netip.Addr{}
	for _, n := range sb.Nodes() {
		nodeIP[n.Name] = n.UnderlayIP
	}
	// Checksum offload off on the gateways' uplinks: the SNATed packets
	// leave with the checksums BPF computed.
	for _, n := range []string{"node2", "node3"} {
		nd, err := sb.Node(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := sandbox.SetTxChecksum(nd.Netns, sandbox.NodeUplink, false); err != nil {
			t.Fatal(err)
		}
	}

	st, err := sb.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	es := st.(store.EgressStore)
	all := netip.MustParsePrefix("0.0.0.0/0")
	if _, err := es.CreateEgressGateway(ctx, egress.Gateway{VPC: "blue", Name: "out", Selector: map[string]string{"app": "web"},
		Destinations: []netip.Prefix{all}, Nodes: []string{"node2", "node3"}}); err != nil {
		t.Fatal(err)
	}
	// Red leaves through node3 as a dedicated egress address (the agent
	// adds it to node3's uplink).
	redEgress := netip.MustParseAddr("172.30.0.203")
	if _, err := es.CreateEgressGateway(ctx, egress.Gateway{VPC: "red", Name: "out",
		Destinations: []netip.Prefix{sandbox.ExternalPrefix}, Nodes: []string{"node3"},
		EgressIPs: map[string]netip.Addr{"node3": redEgress}}); err != nil {
		t.Fatal(err)
	}

	pod := func(name, vpc string, labels map[string]string) *sandbox.Pod {
		p, err := sb.PodAddLabeled(ctx, name, "node1", []string{vpc + "/web"}, labels)
		if err != nil {
			t.Fatal(err)
		}
		if err := sb.PodRoute(p, vpcIf(t, p), sandbox.ExternalPrefix); err != nil {
			t.Fatal(err)
		}
		return p
	}
	blue := pod("blue-web", "blue", map[string]string{"app": "web"})
	red := pod("red-web", "red", nil)
	other := pod("blue-other", "blue", map[string]string{"app": "db"})
	if ipOf(t, blue, "") != ipOf(t, red, "") {
		t.Fatalf("blue %s and red %s: the test wants the same address in both vpcs", ipOf(t, blue, ""), ipOf(t, red, ""))
	}
	// The red pod sends with full checksums (offload off in the pod too).
	if err := sandbox.SetTxChecksum(red.Netns, vpcIf(t, red), false); err != nil {
		t.Fatal(err)
	}
	gateways := map[netip.Addr]string{nodeIP["node2"]: "node2", nodeIP["node3"]: "node3"}

	// The agents program the gateways within a moment of the create.
	var first *extConn
	deadline := time.Now().Add(10 * time.Second)
	for first == nil {
		c, err := dialExt(ctx, blue, ext, 0, time.Second)
		if err == nil {
			first = c
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("blue pod never reached the external server: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Run("the external server sees the egress address", func(t *testing.T) {
		defer first.c.Close()
		if _, ok := gateways[first.seen.Addr()]; !ok || first.seen.Port() < 61000 {
			t.Fatalf("the server saw %s: want a gateway's address and an snat port", first.seen)
		}
		if err := first.echo("blue-web"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("blue and red with the same address and port each get their own replies", func(t *testing.T) {
		const lport = 40123
		var wg sync.WaitGroup
		seen := make([]netip.AddrPort, 2)
		errs := make([]error, 2)
		for i, p := range []*sandbox.Pod{blue, red} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := dialExt(ctx, p, ext, lport, 5*time.Second)
				if err != nil {
					errs[i] = fmt.Errorf("%s: %w", p.Name, err)
					return
				}
				defer c.c.Close()
				seen[i] = c.seen
				for k := range 20 {
					if err := c.echo(fmt.Sprintf("%s-%d", p.Name, k)); err != nil {
						errs[i] = fmt.Errorf("%s: %w", p.Name, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if seen[0] == seen[1] {
			t.Fatalf("blue and red seen as the same %s", seen[0])
		}
		if seen[1].Addr() != redEgress {
			t.Errorf("red seen from %s, its gateway is node3 as %s", seen[1], redEgress)
		}
	})

	t.Run("a pod outside the selector gets nothing out", func(t *testing.T) {
		before, _ := sb.Drops(ctx, "node1", "EGRESS_NOT_SELECTED")
		if c, err := dialExt(ctx, other, ext, 0, 700*time.Millisecond); err == nil {
			c.c.Close()
			t.Fatalf("unselected pod reached the outside, seen as %s", c.seen)
		}
		if after, _ := sb.Drops(ctx, "node1", "EGRESS_NOT_SELECTED"); after <= before {
			t.Errorf("EGRESS_NOT_SELECTED drops %v -> %v: not counted", before, after)
		}
	})

	t.Run("drain a gateway: a running stream survives, new flows go elsewhere", func(t *testing.T) {
		s, err := dialExt(ctx, blue, ext, 0, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer s.c.Close()
		drained := gateways[s.seen.Addr()]
		stop := make(chan struct{})
		streamErr := make(chan error, 1)
		go func() {
			for k := 0; ; k++ {
				select {
				case <-stop:
					streamErr <- nil
					return
				default:
				}
				if err := s.echo(fmt.Sprintf("stream-%d-%s", k, strings.Repeat("x", 1000))); err != nil {
					streamErr <- fmt.Errorf("stream through %s broke at line %d: %w", drained, k, err)
					return
				}
			}
		}()
		n, err := drainGateway(ctx, st, es, drained, false)
		if err != nil || n == 0 {
			t.Fatalf("drain %s: %d gateways, %v", drained, n, err)
		}
		defer func() {
			if n, err := drainGateway(context.WithoutCancel(ctx), st, es, drained, true); err != nil || n == 0 {
				t.Errorf("undo the drain of %s: %d gateways, %v", drained, n, err)
			}
		}()
		time.Sleep(1500 * time.Millisecond) // every agent saw the drain
		for range 6 {
			c, err := dialExt(ctx, blue, ext, 0, 3*time.Second)
			if err != nil {
				t.Fatalf("new connection while %s drains: %v", drained, err)
			}
			c.c.Close()
			if gateways[c.seen.Addr()] == drained {
				t.Fatalf("new connection through %s, which drains", drained)
			}
		}
		time.Sleep(time.Second)
		close(stop)
		if err := <-streamErr; err != nil {
			t.Fatal(err)
		}
		if err := s.echo("after the drain"); err != nil {
			t.Fatalf("stream through the draining %s: %v", drained, err)
		}
	})

	t.Run("kill a gateway: new connections succeed within 2 s", func(t *testing.T) {
		d, err := killGatewayAndWait(ctx, sb, blue, ext, "node2", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("gateway node2 killed: every new connection through node3 after %v", d.Round(time.Millisecond))
		if d > 2*time.Second {
			t.Errorf("failover took %v, want at most 2s", d)
		}
	})
}

// drainGateway is geniectl egress drain NODE [--undo] through the store.
func drainGateway(ctx context.Context, st store.Store, es store.EgressStore, node string, undo bool) (int, error) {
	n, err := st.GetNode(ctx, node)
	if err != nil {
		return 0, err
	}
	gws, _, err := es.ListEgressGateways(ctx, "")
	if err != nil {
		return 0, err
	}
	changed := 0
	for _, g := range gws {
		if !g.SelectsNode(n) {
			continue
		}
		next, ok := g.WithDrain(node, time.Now())
		if undo {
			next, ok = g.WithoutDrain(node)
		}
		if !ok {
			continue
		}
		if _, err := es.UpdateEgressGateway(ctx, next); err != nil {
			return changed, err
		}
		changed++
	}
	return changed, nil
}

// killGatewayAndWait kills gateway node's agent and cuts its uplink (the
// node is gone, data plane included), then dials from p every 50 ms with a
// short timeout. It returns the time from the kill to the first connection
// of a run of 10 consecutive successes none of which went through node.
func killGatewayAndWait(ctx context.Context, sb *sandbox.Sandbox, p *sandbox.Pod, ext *sandbox.External, node string, limit time.Duration) (time.Duration, error) {
	nd, err := sb.Node(node)
	if err != nil {
		return 0, err
	}
	if err := sb.StopAgent(node, true); err != nil {
		return 0, err
	}
	if err := sb.SetUplink(node, false); err != nil {
		return 0, err
	}
	start := time.Now()
	var runStart time.Time
	run := 0
	for time.Since(start) < limit {
		t0 := time.Now()
		c, err := dialExt(ctx, p, ext, 0, 300*time.Millisecond)
		ok := err == nil && c.seen.Addr() != nd.UnderlayIP
		if err == nil {
			c.c.Close()
		}
		if ok {
			if run == 0 {
				runStart = t0
			}
			if run++; run == 10 {
				return runStart.Sub(start), nil
			}
		} else {
			run = 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("no stable failover within %v of killing %s", limit, node)
}
