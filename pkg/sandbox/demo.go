package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"text/tabwriter"
	"time"

	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

// Store connects to the sandbox's store. Close it when done.
func (s *Sandbox) Store(ctx context.Context) (store.Store, error) {
	return etcdstore.New(ctx, []string{s.st.StoreEndpoint}, etcdstore.Options{})
}

// DemoPod is one pod of the demo.
type DemoPod struct {
	Name, Node string
	Nets       []string
}

// DemoPods are the demo's pods: two VPCs with the same CIDR across three
// nodes (the first pod of each VPC gets the same address), and one pod in
// both.
var DemoPods = []DemoPod{
	{"blue-1", "node1", []string{"blue/web"}},
	{"red-1", "node2", []string{"red/web"}},
	{"blue-2", "node2", []string{"blue/web"}},
	{"red-2", "node3", []string{"red/web"}},
	{"multi", "node3", []string{"blue/web@eth0", "red/web@eth1"}},
}

// ErrDemoMismatch is returned by Demo when the matrix differs from the
// expectation.
var ErrDemoMismatch = errors.New("connectivity matrix differs from expectation")

// Demo runs the scripted demo on opts' sandbox (3 nodes unless set): it
// brings the sandbox up, creates two VPCs with overlapping CIDRs, attaches
// the DemoPods through genie, prints the pods and the connectivity and
// isolation matrix, gives each VPC a service at the same VIP (DemoVIP) and
// probes it, and tears everything down unless keep is set.
func Demo(ctx context.Context, opts Options, w io.Writer, keep bool) (err error) {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Name == "" {
		opts.Name = "demo"
	}
	step := func(f string, a ...any) { fmt.Fprintf(w, "\n==> "+f+"\n", a...) }
	step("sandbox %q: %d nodes on an underlay bridge, an embedded etcd, one genied per node", opts.Name, opts.Nodes)
	t0 := time.Now()
	sb, err := Up(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "up in %s\n", time.Since(t0).Round(time.Millisecond))
	defer func() {
		if keep {
			fmt.Fprintf(w, "\nsandbox %q kept; tear it down with: geniectl sandbox down --name %s\n", opts.Name, opts.Name)
			return
		}
		step("tearing down")
		if derr := sb.Down(context.Background()); derr != nil {
			err = errors.Join(err, fmt.Errorf("down: %w", derr))
			return
		}
		if left := Leftovers(opts.StateRoot, opts.BPFRoot, opts.Name); len(left) > 0 {
			err = errors.Join(err, fmt.Errorf("down left %v", left))
			return
		}
		fmt.Fprintln(w, "checked: no namespace, process, pin or state left")
	}()

	st, err := sb.Store(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	step("two VPCs with the same CIDR, each with a subnet 10.10.1.0/24")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VPC\tCIDR\tVNI\tSUBNET\tSUBNET CIDR\tGATEWAY")
	for _, name := range []string{"blue", "red"} {
		v, err := st.CreateVPC(ctx, vpc.VPC{Name: name, CIDR: netip.MustParsePrefix("10.10.0.0/16")})
		if err != nil {
			return err
		}
		sn, err := st.CreateSubnet(ctx, vpc.Subnet{VPC: name, Name: "web", CIDR: netip.MustParsePrefix("10.10.1.0/24")})
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", v.Name, v.CIDR, v.VNI, sn.Name, sn.CIDR, sn.Gateway)
	}
	tw.Flush()

	step("pods attached through the genie CNI plugin (GENIE_NETWORKS=vpc:<vpc>/<subnet>[@if])")
	var names []string
	for _, p := range DemoPods {
		t0 := time.Now()
		if _, err := sb.PodAdd(ctx, p.Name, p.Node, p.Nets); err != nil {
			return err
		}
		fmt.Fprintf(w, "%-7s on %s  %v  (ADD %s)\n", p.Name, p.Node, p.Nets, time.Since(t0).Round(time.Millisecond))
		names = append(names, p.Name)
	}
	if err := sb.SourceRoutes("multi"); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNODE\tIF\tVPC\tIP\tMAC")
	for _, p := range sb.Pods() {
		for _, ifc := range p.Interfaces {
			ip, _ := p.IP(ifc.Name)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Node, ifc.Name, ifc.VPC, ip, ifc.MAC)
		}
	}
	tw.Flush()

	step("connectivity and isolation matrix (TCP, UDP and ping must reach the target pod's own namespace)")
	targets, err := sb.Targets(names...)
	if err != nil {
		return err
	}
	checks := Matrix(ctx, targets, 1500*time.Millisecond)
	bad := PrintMatrix(w, checks)
	reach := 0
	for _, c := range checks {
		if c.Expect {
			reach++
		}
	}
	fmt.Fprintf(w, "\n%d pairs: %d must connect (same VPC), %d must stay isolated; %d mismatches\n",
		len(checks), reach, len(checks)-reach, bad)
	if bad > 0 {
		return fmt.Errorf("%w: %d of %d pairs", ErrDemoMismatch, bad, len(checks))
	}
	step("a service at the same VIP %s in each VPC (demo_services.go)", DemoVIP)
	if err := demoServices(ctx, sb, st, w); err != nil {
		return err
	}
	step("egress gateways to an external namespace %s, SNATed to the gateways' addresses (demo_egress.go)", ExternalPrefix)
	return demoEgress(ctx, sb, st, w)
}
