package agent_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// TestPrivilegedAgentTrace: the agent's trace stream (what geniectl trace
// reads) hands a pod's forged packet to every client whose filter matches,
// with the pod named from the attachment; the data plane's flag is set
// while clients listen and cleared when they go; a bad filter is refused.
// Under -race the agent is built with the race detector too, and a race
// fails the test when the agent stops.
func TestPrivilegedAgentTrace(t *testing.T) {
	c := newCluster(t, 1)
	e := c.nodes[0]
	ctx := context.Background()
	if _, err := c.st.CreateVPC(ctx, vpc.VPC{Name: "blue", CIDR: netip.MustParsePrefix("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.st.CreateSubnet(ctx, vpc.Subnet{VPC: "blue", Name: "web", CIDR: netip.MustParsePrefix("10.1.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	a := e.mustAttach(t, "a", "blue", "web")
	b := e.mustAttach(t, "b", "blue", "web")
	flag := func() uint32 {
		m, err := ebpf.LoadPinnedMap(filepath.Join(e.pinDir, "genie_trace_state"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		var st struct {
			Enabled, Pad uint32
			Lost         uint64
		}
		if err := m.Lookup(uint32(0), &st); err != nil {
			t.Fatal(err)
		}
		return st.Enabled
	}
	if flag() != 0 {
		t.Fatal("trace flag set without a client")
	}

	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type client struct {
		events chan *agentapi.TraceEvent
		done   chan error
	}
	start := func(req *agentapi.TraceRequest) *client {
		cl := &client{events: make(chan *agentapi.TraceEvent, 16), done: make(chan error, 1)}
		hello := make(chan struct{})
		go func() {
			first := true
			cl.done <- e.client.Trace(tctx, req, func(m *agentapi.TraceMessage) error {
				if first {
					first = false
					close(hello)
				}
				if m.Event != nil {
					cl.events <- m.Event
				}
				return nil
			})
		}()
		select {
		case <-hello:
		case err := <-cl.done:
			t.Fatalf("trace %+v: %v", req, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("trace %+v did not start", req)
		}
		return cl
	}
	all := start(&agentapi.TraceRequest{VPC: "blue"})
	ofB := start(&agentapi.TraceRequest{Pod: "default/b"})
	if flag() != 1 {
		t.Fatal("trace flag clear with two clients")
	}

	// Pod a sends from an address that is not its own.
	spoof := net.ParseIP("10.1.0.250")
	send := func() {
		err := a.ns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(a.ifName)
			if err != nil {
				return err
			}
			if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: &net.IPNet{IP: spoof, Mask: net.CIDRMask(32, 32)}}); err != nil {
				return err
			}
			u, err := net.DialUDP("udp4", &net.UDPAddr{IP: spoof}, &net.UDPAddr{IP: b.ip.AsSlice(), Port: 9})
			if err != nil {
				return err
			}
			u.Write([]byte("forged"))
			return u.Close()
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var ev *agentapi.TraceEvent
	deadline := time.After(10 * time.Second)
	for ev == nil {
		send()
		select {
		case ev = <-all.events:
		case <-deadline:
			t.Fatalf("no drop traced\n%s", e.logs())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if ev.Reason != "SPOOFED_IP" || ev.VPC != "blue" || ev.Direction != "from-pod" || ev.Src != spoof.String() || ev.Pod == nil ||
		ev.Pod.Namespace != "default" || ev.Pod.Name != "a" || ev.Pod.ContainerID != a.id || ev.Pod.Interface != a.ifName ||
		!strings.HasPrefix(ev.Interface, "gv") {
		t.Errorf("traced %+v pod %+v", ev, ev.Pod)
	}
	select {
	case ev := <-ofB.events:
		t.Errorf("the client tracing pod b got a drop of %+v", ev.Pod)
	case <-time.After(300 * time.Millisecond):
	}

	var te *types.Error
	err := e.client.Trace(tctx, &agentapi.TraceRequest{Reasons: []string{"NOPE"}}, func(*agentapi.TraceMessage) error { return nil })
	if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, `unknown drop reason "NOPE"`) {
		t.Errorf("bad reason: %v", err)
	}
	err = e.client.Trace(tctx, &agentapi.TraceRequest{Pod: "default/nobody"}, func(*agentapi.TraceMessage) error { return nil })
	if !errors.As(err, &te) || !strings.Contains(te.Msg, "no VPC attachment") {
		t.Errorf("pod without attachment: %v", err)
	}

	cancel()
	for _, cl := range []*client{all, ofB} {
		select {
		case <-cl.done:
		case <-time.After(10 * time.Second):
			t.Fatal("trace client did not end with its context")
		}
	}
	for deadline := time.Now().Add(5 * time.Second); flag() != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("trace flag still set after the clients left")
		}
	}
	e.stopAgent() // exits non-zero on a race (built with -race under -race)
}
