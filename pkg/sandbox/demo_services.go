package sandbox

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"text/tabwriter"
	"time"

	"github.com/cni-genie/cni-genie/pkg/service"
	"github.com/cni-genie/cni-genie/pkg/store"
)

// DemoVIP is the address of the demo's service in each of its two VPCs.
var DemoVIP = netip.MustParseAddr("10.10.200.1")

// demoServices gives blue and red a service at the same VIP and port, each
// backed by its VPC's second pod, and probes them from each VPC's first
// pod: the probe succeeds only if the connection reached that backend's
// own namespace.
func demoServices(ctx context.Context, sb *Sandbox, st store.Store, w io.Writer) error {
	ss, ok := st.(store.ServiceStore)
	if !ok {
		return nil
	}
	const port = 8080
	pairs := []struct{ vpc, client, backend string }{{"blue", "blue-1", "blue-2"}, {"red", "red-1", "red-2"}}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tVIP\tBACKEND\tFROM\tREACHED")
	for _, p := range pairs {
		be, err := sb.Pod(p.backend)
		if err != nil {
			return err
		}
		ip, _ := be.IP("eth0")
		sv := service.Service{VPC: p.vpc, Name: "web", VIP: DemoVIP, Endpoints: []netip.Addr{ip},
			Ports: []service.Port{{Port: port, Protocol: service.TCP}, {Port: port, Protocol: service.UDP}}}
		if _, err := ss.CreateService(ctx, sv); err != nil {
			return err
		}
		cl, err := sb.Pod(p.client)
		if err != nil {
			return err
		}
		from, to := Endpoint{Netns: cl.Netns}, Endpoint{Netns: be.Netns}
		// The elected resolver writes the backends, the client's agent
		// programs them: allow a few seconds.
		var perr error
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
			if perr = ProbeTCP(ctx, from, to, DemoVIP, port, time.Second); perr == nil {
				perr = ProbeUDP(ctx, from, to, DemoVIP, port, 2*time.Second)
			}
			if perr == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		reached := "yes (tcp, udp)"
		if perr != nil {
			reached = "NO: " + perr.Error()
		}
		fmt.Fprintf(tw, "%s/web\t%s:%d\t%s %s\t%s\t%s\n", p.vpc, DemoVIP, port, p.backend, ip, p.client, reached)
		if perr != nil {
			tw.Flush()
			return fmt.Errorf("%w: %s's service at %s did not reach %s: %v", ErrDemoMismatch, p.vpc, DemoVIP, p.backend, perr)
		}
	}
	return tw.Flush()
}
