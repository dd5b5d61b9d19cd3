package sandbox

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cni-genie/cni-genie/pkg/egress"
	"github.com/cni-genie/cni-genie/pkg/store"
)

// demoEgress gives blue and red an egress gateway to the external namespace
// (the last node; blue's also through the one before it), and connects
// from each VPC's first pod to an identity echo there, which answers with
// the address it sees: the gateway's egress address, never the pods'
// overlapping ones.
func demoEgress(ctx context.Context, sb *Sandbox, st store.Store, w io.Writer) error {
	es, ok := st.(store.EgressStore)
	if !ok || len(sb.Nodes()) < 2 {
		return nil
	}
	nodes := sb.Nodes()
	last, prev := nodes[len(nodes)-1], nodes[len(nodes)-2]
	ext, err := sb.AddExternal(prev.Name, last.Name)
	if err != nil {
		return err
	}
	l, err := ListenTCP(ext.Endpoint(), ":7001")
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
			fmt.Fprintf(c, "%s\n", c.RemoteAddr())
			c.Close()
		}
	}()
	for _, g := range []egress.Gateway{
		{VPC: "blue", Name: "out", Destinations: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Nodes: []string{prev.Name, last.Name}},
		{VPC: "red", Name: "out", Destinations: []netip.Prefix{ExternalPrefix}, Nodes: []string{last.Name}},
	} {
		if _, err := es.CreateEgressGateway(ctx, g); err != nil {
			return err
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EGRESS GATEWAY\tFROM\tPOD IP\tTO\tSEEN AS")
	for _, p := range []struct{ vpc, pod string }{{"blue", "blue-1"}, {"red", "red-1"}} {
		pod, err := sb.Pod(p.pod)
		if err != nil {
			return err
		}
		ip, _ := pod.IP("eth0")
		if err := sb.PodRoute(pod, "eth0", ExternalPrefix); err != nil {
			return err
		}
		var seen string
		var perr error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if seen, perr = askSource(ctx, pod, ext); perr == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if perr != nil {
			tw.Flush()
			return fmt.Errorf("%w: %s could not leave %s through its egress gateway: %v", ErrDemoMismatch, p.pod, p.vpc, perr)
		}
		fmt.Fprintf(tw, "%s/out\t%s\t%s\t%s:7001\t%s\n", p.vpc, p.pod, ip, ext.IP, seen)
	}
	return tw.Flush()
}

// askSource connects from pod to the external echo and returns the source
// address it saw.
func askSource(ctx context.Context, pod *Pod, ext *External) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := DialTCP(ctx, Endpoint{Netns: pod.Netns}, netip.AddrPortFrom(ext.IP, 7001).String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	seen := strings.TrimSpace(line)
	if a, err := netip.ParseAddrPort(seen); err != nil || !isNodeAddr(a.Addr()) {
		return "", fmt.Errorf("seen as %q, not a gateway's address", seen)
	}
	return seen, nil
}

func isNodeAddr(a netip.Addr) bool {
	return segmentPrefix(0).Contains(a) || segmentPrefix(1).Contains(a)
}
