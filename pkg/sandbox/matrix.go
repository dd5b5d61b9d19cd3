package sandbox

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"text/tabwriter"
	"time"
)

// Target is one overlay interface of a pod.
type Target struct {
	Pod, IfName, VPC string
	IP               netip.Addr
	Netns            string
}

// Endpoint returns the target as a probe endpoint bound to its interface.
func (t Target) Endpoint() Endpoint { return Endpoint{Netns: t.Netns, Device: t.IfName} }

// String returns "pod/ifname".
func (t Target) String() string { return fmt.Sprintf("%s/%s", t.Pod, t.IfName) }

// Targets lists the overlay interfaces of the given pods (all pods if none).
func (s *Sandbox) Targets(pods ...string) ([]Target, error) {
	if len(pods) == 0 {
		for _, p := range s.Pods() {
			pods = append(pods, p.Name)
		}
	}
	var out []Target
	for _, name := range pods {
		p, err := s.Pod(name)
		if err != nil {
			return nil, err
		}
		for _, ifc := range p.Interfaces {
			if ifc.VPC == "" {
				continue
			}
			ip, ok := p.IP(ifc.Name)
			if !ok {
				continue
			}
			out = append(out, Target{Pod: p.Name, IfName: ifc.Name, VPC: ifc.VPC, IP: ip, Netns: p.Netns})
		}
	}
	return out, nil
}

// Check is one cell of the connectivity matrix.
type Check struct {
	From, To Target
	// Expect is whether From should reach To: the same VPC.
	Expect bool
	// TCP, UDP and ICMP are the probe results (nil = reached To's namespace).
	TCP, UDP, ICMP error
	// ICMPSkipped is set when To's pod has the same address on another
	// interface: the kernel's echo reply cannot tell which interface it
	// belongs to (that needs a VRF per interface), so ping proves nothing.
	ICMPSkipped bool
}

// OK reports whether every probe matched the expectation.
func (c *Check) OK() bool {
	for i, err := range []error{c.TCP, c.UDP, c.ICMP} {
		if i == 2 && c.ICMPSkipped {
			continue
		}
		if (err == nil) != c.Expect {
			return false
		}
	}
	return true
}

// Matrix probes every ordered pair of targets on different pods with TCP,
// UDP and ICMP, in parallel; each probe succeeds only when it reaches the
// target's own namespace. Pairs in the same VPC are expected to connect,
// all others not.
func Matrix(ctx context.Context, targets []Target, timeout time.Duration) []*Check {
	var checks []*Check
	for _, f := range targets {
		for _, t := range targets {
			if f.Pod == t.Pod {
				continue
			}
			c := &Check{From: f, To: t, Expect: f.VPC == t.VPC}
			for _, o := range targets {
				if o.Pod == t.Pod && o.IfName != t.IfName && o.IP == t.IP {
					c.ICMPSkipped = true
				}
			}
			checks = append(checks, c)
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			port := 20000 + 2*i
			c.TCP = ProbeTCP(ctx, c.From.Endpoint(), c.To.Endpoint(), c.To.IP, port, timeout)
			c.UDP = ProbeUDP(ctx, c.From.Endpoint(), c.To.Endpoint(), c.To.IP, port+1, timeout)
			if !c.ICMPSkipped {
				c.ICMP = PingTo(ctx, c.From.Endpoint(), c.To.Endpoint(), c.To.IP, timeout)
			}
		}()
	}
	wg.Wait()
	return checks
}

// PrintMatrix writes the checks as a table and returns how many differ
// from the expectation.
func PrintMatrix(w io.Writer, checks []*Check) int {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM\tVPC\tTO\tVPC\tIP\tEXPECT\tTCP\tUDP\tPING\tRESULT")
	mark := func(err error) string {
		if err == nil {
			return "reached"
		}
		return "blocked"
	}
	bad := 0
	for _, c := range checks {
		exp := "blocked"
		if c.Expect {
			exp = "reach"
		}
		res := "ok"
		if !c.OK() {
			res = "MISMATCH"
			bad++
		}
		icmp := mark(c.ICMP)
		if c.ICMPSkipped {
			icmp = "n/a"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.From, c.From.VPC, c.To, c.To.VPC, c.To.IP,
			exp, mark(c.TCP), mark(c.UDP), icmp, res)
	}
	tw.Flush()
	for _, c := range checks {
		if c.ICMPSkipped {
			fmt.Fprintln(w, "n/a: the pod has this address on two interfaces; an ICMP echo reply cannot pick the right one without a VRF per interface")
			break
		}
	}
	return bad
}
