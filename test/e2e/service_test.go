package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
	"github.com/cni-genie/cni-genie/pkg/service"
	"github.com/cni-genie/cni-genie/pkg/store"
)

// Services end to end through the real binaries: two VPCs with the same
// CIDR each have a service at the same VIP and port, selecting labelled
// backends on two nodes. Every backend answers with its pod's name (an
// identity echo), so a reply proves which pod served it.

const svcPort = 7000

var svcVIP = netip.MustParseAddr("10.10.200.1")

// serveIdentity runs, in pod p, a TCP server that sends p's name, counts
// the bytes it receives until EOF and answers with the count, and a UDP
// server that answers every datagram with p's name.
func serveIdentity(t *testing.T, p *sandbox.Pod) {
	t.Helper()
	sandboxtest.ServeTCP(t, ep(p, ""), fmt.Sprintf(":%d", svcPort), func(c net.Conn) {
		fmt.Fprintf(c, "%s\n", p.Name)
		n, _ := io.Copy(io.Discard, c)
		_ = binary.Write(c, binary.BigEndian, n)
	})
	u, err := sandbox.ListenUDP(ep(p, ""), fmt.Sprintf(":%d", svcPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, a, err := u.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = u.WriteTo([]byte(p.Name), a)
		}
	}()
}

// vipConn is a TCP connection through the VIP and the backend that took it.
type vipConn struct {
	c       net.Conn
	r       *bufio.Reader
	backend string
	sent    int64
}

func dialVIP(t *testing.T, from *sandbox.Pod) (*vipConn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := sandbox.DialTCP(ctx, ep(from, ""), netip.AddrPortFrom(svcVIP, svcPort).String())
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read backend name: %w", err)
	}
	return &vipConn{c: c, r: r, backend: strings.TrimSpace(name)}, nil
}

func (v *vipConn) send(t *testing.T, n int) {
	t.Helper()
	buf := make([]byte, 32<<10)
	for left := n; left > 0; left -= len(buf) {
		k, err := v.c.Write(buf[:min(len(buf), left)])
		v.sent += int64(k)
		if err != nil {
			t.Fatalf("stream to %s broke after %d bytes: %v", v.backend, v.sent, err)
		}
	}
}

// finish half-closes and checks the backend counted every byte.
func (v *vipConn) finish(t *testing.T) {
	t.Helper()
	defer v.c.Close()
	_ = v.c.(*net.TCPConn).CloseWrite()
	var n int64
	if err := binary.Read(v.r, binary.BigEndian, &n); err != nil || n != v.sent {
		t.Fatalf("stream to %s: backend counted %d bytes (%v), sent %d", v.backend, n, err, v.sent)
	}
}

// askVIP makes one short connection through the VIP and returns the
// backend's name.
func askVIP(t *testing.T, from *sandbox.Pod) (string, error) {
	v, err := dialVIP(t, from)
	if err != nil {
		return "", err
	}
	v.send(t, 100)
	v.finish(t)
	return v.backend, nil
}

// askVIPUDP sends a datagram from a socket connected to the VIP: only a
// reply whose source is the VIP (reverse-NATed) reaches it.
func askVIPUDP(from *sandbox.Pod) (string, error) {
	var name string
	err := sandbox.InNetns(from.Netns, func() error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(svcVIP, svcPort).String())
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 100)
		for try := 0; try < 3; try++ {
			if _, err := c.Write([]byte("who")); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			if n, err := c.Read(buf); err == nil {
				name = string(buf[:n])
				return nil
			}
		}
		return fmt.Errorf("no udp answer from the vip")
	})
	return name, err
}

func TestPrivilegedServices(t *testing.T) {
	sb := newSandbox(t, 2)
	ctx := context.Background()
	st, err := sb.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ss := st.(store.ServiceStore)
	web := map[string]string{"app": "web"}
	backends := map[string][]*sandbox.Pod{}
	clients := map[string]*sandbox.Pod{}
	for _, v := range []string{"blue", "red"} {
		mkVPC(t, sb, v, "10.10.0.0/16", "10.10.1.0/24")
		for i, node := range []string{"node1", "node2"} {
			p, err := sb.PodAddLabeled(ctx, fmt.Sprintf("%s-web%d", v, i+1), node, []string{v + "/web"}, web)
			if err != nil {
				t.Fatal(err)
			}
			serveIdentity(t, p)
			backends[v] = append(backends[v], p)
		}
		clients[v] = addPod(t, sb, v+"-client", "node1", v+"/web")
		sv := service.Service{VPC: v, Name: "web", VIP: svcVIP, Selector: web,
			Ports: []service.Port{{Port: svcPort, Protocol: service.TCP}, {Port: svcPort, Protocol: service.UDP}}}
		if _, err := ss.CreateService(ctx, sv); err != nil {
			t.Fatal(err)
		}
	}
	// The elected resolver writes the records; node1's agent programs them.
	waitFor(t, "services resolved and programmed", 20*time.Second, func() bool {
		for _, c := range clients {
			if _, err := askVIP(t, c); err != nil {
				return false
			}
		}
		return true
	})

	for _, v := range []string{"blue", "red"} {
		want := map[string]int{backends[v][0].Name: 0, backends[v][1].Name: 0}
		for i := 0; i < 200; i++ {
			name, err := askVIP(t, clients[v])
			if err != nil {
				t.Fatalf("%s connection %d through the vip: %v", v, i, err)
			}
			if _, ok := want[name]; !ok {
				t.Fatalf("%s connection %d answered by %s, not a %s backend", v, i, name, v)
			}
			want[name]++
		}
		udp := map[string]int{}
		for i := 0; i < 40; i++ {
			name, err := askVIPUDP(clients[v])
			if err != nil {
				t.Fatalf("%s udp %d: %v", v, i, err)
			}
			if _, ok := want[name]; !ok {
				t.Fatalf("%s udp %d answered by %s, not a %s backend", v, i, name, v)
			}
			udp[name]++
		}
		for name, n := range want {
			if n == 0 || udp[name] == 0 {
				t.Errorf("%s backend %s got %d of 200 tcp and %d of 40 udp connections", v, name, n, udp[name])
			}
		}
		t.Logf("%s: tcp %v, udp %v", v, want, udp)
	}

	// A long stream through the vip survives the removal of the other
	// backend and an agent restart on the client's node.
	s, err := dialVIP(t, clients["blue"])
	if err != nil {
		t.Fatal(err)
	}
	s.send(t, 2<<20)
	gone := backends["blue"][0]
	if gone.Name == s.backend {
		gone = backends["blue"][1]
	}
	if err := sb.PodDel(ctx, gone.Name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removed backend leaves the record", 20*time.Second, func() bool {
		recs, _, err := ss.ListServiceBackends(ctx, "blue")
		return err == nil && len(recs) == 1 && len(recs[0].Backends) == 1
	})
	time.Sleep(500 * time.Millisecond) // the agent's watch programs it
	s.send(t, 2<<20)
	for i := 0; i < 30; i++ {
		name, err := askVIP(t, clients["blue"])
		if err != nil || name != s.backend {
			t.Fatalf("after removing %s, new connection %d: %s, %v; want %s", gone.Name, i, name, err, s.backend)
		}
	}
	if err := sb.RestartAgent(ctx, "node1", false); err != nil {
		t.Fatal(err)
	}
	s.send(t, 2<<20)
	s.finish(t)
	if name, err := askVIP(t, clients["red"]); err != nil {
		t.Fatalf("red after the restart: %v", err)
	} else if name != backends["red"][0].Name && name != backends["red"][1].Name {
		t.Fatalf("red after the restart answered by %s", name)
	}
}

func waitFor(t *testing.T, what string, d time.Duration, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if f() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
