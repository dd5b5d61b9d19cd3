package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/datapath"
	"github.com/cni-genie/cni-genie/pkg/store"
)

// Drop tracing (geniectl trace). One goroutine reads the data plane's trace
// ring; each event is described once (interface, VPC, pod) and handed to
// every client whose filter it matches. The data plane's trace flag is set
// while at least one client listens and cleared when the last one leaves,
// at start-up (a crashed agent may have left it set) and at shutdown.

// traceBuffer is the number of events queued per client; a client that
// falls further behind loses events (reported to it as Lost).
const traceBuffer = 1024

// tracer holds the trace clients.
type tracer struct {
	mu   sync.Mutex
	subs map[*traceSub]struct{}
}

type traceSub struct {
	ch    chan *agentapi.TraceEvent
	lost  atomic.Uint64
	match func(datapath.TraceEvent, *agentapi.TraceEvent) bool
}

// startTrace clears the trace flag and starts the ring's reader.
func (a *Agent) startTrace(ctx context.Context) error {
	if err := a.setTracing(false); err != nil {
		return err
	}
	a.mu.Lock()
	rd, err := a.dp.Trace()
	a.mu.Unlock()
	if err != nil {
		return err
	}
	t := &tracer{subs: map[*traceSub]struct{}{}}
	a.bg.Add(2)
	go func() {
		defer a.bg.Done()
		<-ctx.Done()
		rd.Close()
	}()
	go func() {
		defer a.bg.Done()
		a.readTrace(t, rd)
		// Clients end with the run context; the flag goes before the data
		// plane handle does (shutdown waits for a.bg).
		if err := a.setTracing(false); err != nil {
			a.log.Warn("clearing the trace flag", "err", err)
		}
	}()
	a.mu.Lock()
	a.trace = t
	a.mu.Unlock()
	return nil
}

// setTracing sets the data plane's trace flag.
func (a *Agent) setTracing(on bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dp == nil || a.dpClosed {
		return errors.New("data plane not open")
	}
	return a.dp.SetTracing(on)
}

// readTrace delivers events until the reader is closed. Once a second it
// also hands the data plane's lost-event count to the clients.
func (a *Agent) readTrace(t *tracer, rd *datapath.TraceReader) {
	var lastLost uint64
	if a.dp != nil {
		lastLost, _ = a.dp.TraceLost()
	}
	next := time.Now().Add(time.Second)
	for {
		rd.SetDeadline(next)
		ev, err := rd.Read()
		if errors.Is(err, datapath.ErrTraceClosed) {
			return
		}
		if time.Now().After(next) {
			next = time.Now().Add(time.Second)
			a.mu.Lock()
			var lost uint64
			if !a.dpClosed {
				lost, _ = a.dp.TraceLost()
			}
			a.mu.Unlock()
			if lost > lastLost {
				t.mu.Lock()
				for s := range t.subs {
					s.lost.Add(lost - lastLost)
				}
				t.mu.Unlock()
			}
			lastLost = lost
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			a.log.Warn("reading drop trace", "err", err)
			continue
		}
		t.mu.Lock()
		if len(t.subs) == 0 {
			t.mu.Unlock()
			continue // left over from the last client
		}
		subs := make([]*traceSub, 0, len(t.subs))
		for s := range t.subs {
			subs = append(subs, s)
		}
		t.mu.Unlock()
		out := a.describeDrop(ev)
		for _, s := range subs {
			if !s.match(ev, out) {
				continue
			}
			select {
			case s.ch <- out:
			default:
				s.lost.Add(1)
			}
		}
	}
}

// describeDrop names the interface, VPC and pod of a drop.
func (a *Agent) describeDrop(ev datapath.TraceEvent) *agentapi.TraceEvent {
	out := &agentapi.TraceEvent{
		Time:      ev.Time,
		Node:      a.cfg.NodeName,
		Reason:    ev.Reason.String(),
		Direction: "from-pod",
		VNI:       ev.VNI,
		Length:    ev.Len,
		Protocol:  protocolName(ev),
	}
	if ev.Ifindex == a.uplinkIx && !ev.FromPod {
		out.Direction = "from-underlay"
	}
	if ev.OuterSrc.IsValid() {
		out.OuterSrc = ev.OuterSrc.String()
	}
	if ev.Src.IsValid() {
		out.Src, out.Dst = ev.Src.String(), ev.Dst.String()
	}
	if ev.HasPorts {
		if ev.Proto == unix.IPPROTO_ICMP {
			typ, code := uint8(ev.SrcPort), uint8(ev.DstPort)
			out.ICMPType, out.ICMPCode = &typ, &code
		} else {
			out.SrcPort, out.DstPort = ev.SrcPort, ev.DstPort
		}
	}
	if len(ev.SrcMAC) > 0 {
		out.SrcMAC, out.DstMAC = ev.SrcMAC.String(), ev.DstMAC.String()
	}
	a.mu.Lock()
	var at *attachment
	if out.Direction == "from-pod" {
		for _, x := range a.atts {
			if x.HostIndex == ev.Ifindex {
				at = x
				break
			}
		}
	} else if ev.Dst.IsValid() {
		at = a.atts[a.local[vniIP{ev.VNI, ev.Dst}]]
	}
	for name, vs := range a.vpcs {
		if ev.VNI != 0 && vs.vpc.VNI == ev.VNI {
			out.VPC = name
		}
	}
	a.mu.Unlock()
	switch {
	case at != nil && out.Direction == "from-pod":
		out.Interface = at.HostIf
	case ev.Ifindex == a.uplinkIx:
		out.Interface = a.cfg.Uplink
	default:
		out.Interface = "if" + strconv.Itoa(ev.Ifindex)
		if l, err := net.InterfaceByIndex(ev.Ifindex); err == nil {
			out.Interface = l.Name
		}
	}
	if at != nil {
		out.Pod = &agentapi.TracePod{Namespace: at.PodNamespace, Name: at.PodName, ContainerID: at.ContainerID, Interface: at.IfName}
		if out.VPC == "" {
			out.VPC = at.VPC
		}
	}
	return out
}

func protocolName(ev datapath.TraceEvent) string {
	switch {
	case ev.EthProto == datapath.EtherTypeARP:
		return "arp"
	case ev.EthProto != datapath.EtherTypeIPv4:
		return fmt.Sprintf("ethertype/0x%04x", ev.EthProto)
	case ev.Proto == unix.IPPROTO_TCP:
		return "tcp"
	case ev.Proto == unix.IPPROTO_UDP:
		return "udp"
	case ev.Proto == unix.IPPROTO_ICMP:
		return "icmp"
	}
	return "ipv4/" + strconv.Itoa(int(ev.Proto))
}

// podMatches reports whether pod (a "namespace/name", a container ID or
// an ID prefix of at least 6 characters) names the attachment's pod.
func podMatches(pod string, p *agentapi.TracePod) bool {
	if p == nil {
		return false
	}
	if ns, name, ok := strings.Cut(pod, "/"); ok {
		return p.Namespace == ns && p.Name == name
	}
	return p.ContainerID == pod || (len(pod) >= 6 && strings.HasPrefix(p.ContainerID, pod))
}

// traceFilter checks req and returns its predicate.
func (a *Agent) traceFilter(ctx context.Context, req *agentapi.TraceRequest) (func(datapath.TraceEvent, *agentapi.TraceEvent) bool, error) {
	invalid := func(format string, args ...any) error {
		return &types.Error{Code: types.ErrInvalidNetworkConfig, Msg: "trace: " + fmt.Sprintf(format, args...)}
	}
	reasons := map[datapath.DropReason]bool{}
	for _, s := range req.Reasons {
		r, err := datapath.ParseDropReason(s)
		if err != nil {
			return nil, invalid("%v", err)
		}
		reasons[r] = true
	}
	var vni uint32
	if req.VPC != "" {
		a.mu.Lock()
		if vs := a.vpcs[req.VPC]; vs != nil {
			vni = vs.vpc.VNI
		}
		a.mu.Unlock()
		if vni == 0 {
			v, err := a.st.GetVPC(ctx, req.VPC)
			if errors.Is(err, store.ErrNotFound) {
				return nil, invalid("vpc %q not found", req.VPC)
			}
			if err != nil {
				return nil, fmt.Errorf("trace: looking up vpc %q: %w", req.VPC, err)
			}
			vni = v.VNI
		}
	}
	if req.Pod != "" {
		found := false
		a.mu.Lock()
		for _, at := range a.atts {
			if podMatches(req.Pod, &agentapi.TracePod{Namespace: at.PodNamespace, Name: at.PodName, ContainerID: at.ContainerID}) {
				found = true
			}
		}
		a.mu.Unlock()
		if !found {
			return nil, invalid("pod %q has no VPC attachment on node %s", req.Pod, a.cfg.NodeName)
		}
	}
	pod := req.Pod
	return func(ev datapath.TraceEvent, out *agentapi.TraceEvent) bool {
		return (len(reasons) == 0 || reasons[ev.Reason]) &&
			(vni == 0 || ev.VNI == vni) &&
			(pod == "" || podMatches(pod, out.Pod))
	}, nil
}

// Trace implements agentapi.Tracer: it streams the drops matching req.
func (a *Agent) Trace(ctx context.Context, req *agentapi.TraceRequest, send func(*agentapi.TraceMessage) error) error {
	a.mu.Lock()
	t := a.trace
	a.mu.Unlock()
	if t == nil || !a.ready.Load() {
		return &types.Error{Code: types.ErrTryAgainLater, Msg: "trace: agent not ready"}
	}
	match, err := a.traceFilter(ctx, req)
	if err != nil {
		return err
	}
	s := &traceSub{ch: make(chan *agentapi.TraceEvent, traceBuffer), match: match}
	t.mu.Lock()
	if len(t.subs) == 0 {
		if err := a.setTracing(true); err != nil {
			t.mu.Unlock()
			return fmt.Errorf("trace: setting the trace flag: %w", err)
		}
	}
	t.subs[s] = struct{}{}
	t.mu.Unlock()
	a.log.Info("trace client connected", "vpc", req.VPC, "pod", req.Pod, "reasons", req.Reasons)
	defer func() {
		t.mu.Lock()
		delete(t.subs, s)
		if len(t.subs) == 0 {
			if err := a.setTracing(false); err != nil {
				a.log.Warn("clearing the trace flag", "err", err)
			}
		}
		t.mu.Unlock()
		a.log.Info("trace client gone")
	}()
	if err := send(&agentapi.TraceMessage{}); err != nil {
		return nil
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.runCtx.Done():
			return nil
		case ev := <-s.ch:
			if err := send(&agentapi.TraceMessage{Event: ev}); err != nil {
				return nil
			}
		case <-tick.C:
			if n := s.lost.Swap(0); n > 0 {
				if err := send(&agentapi.TraceMessage{Lost: n}); err != nil {
					return nil
				}
			}
		}
	}
}
