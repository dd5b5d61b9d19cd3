package cli

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cni-genie/cni-genie/pkg/service"
	"github.com/cni-genie/cni-genie/pkg/store"
)

// parsePort parses PORT[:TARGET][/PROTO], e.g. 80:8080/tcp or 53/udp.
func parsePort(s string) (service.Port, error) {
	p := service.Port{Protocol: service.TCP}
	spec, proto, ok := strings.Cut(s, "/")
	if ok {
		p.Protocol = service.Protocol(strings.ToUpper(proto))
	}
	port, target, hasTarget := strings.Cut(spec, ":")
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return p, fmt.Errorf("--port %q: want PORT[:TARGET][/tcp|udp]", s)
	}
	p.Port = uint16(n)
	if hasTarget {
		t, err := strconv.ParseUint(target, 10, 16)
		if err != nil || t == 0 {
			return p, fmt.Errorf("--port %q: bad target port", s)
		}
		p.TargetPort = uint16(t)
	}
	return p, nil
}

func parseLabels(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want KEY=VALUE", flag, kv)
		}
		out[k] = v
	}
	return out, nil
}

func (g *globals) serviceStore(c *cobra.Command) (store.Store, store.ServiceStore, error) {
	st, err := g.openStore(c.Context())
	if err != nil {
		return nil, nil, err
	}
	ss, ok := st.(store.ServiceStore)
	if !ok {
		st.Close()
		return nil, nil, fmt.Errorf("the %s datastore has no services", g.datastore)
	}
	return st, ss, nil
}

func serviceCommand(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "service", Short: "Create, list and delete services of a VPC"}
	var (
		vip, affinity   string
		ports, selector []string
		endpoints       []string
		tableSize       int
	)
	create := &cobra.Command{
		Use:   "create VPC/NAME --port PORT[:TARGET][/tcp|udp]... (--selector K=V... | --endpoints IP,...) [--vip IP]",
		Short: "Create a service in a VPC (its VIP is allocated unless --vip is given)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			v, name, err := splitSubnet(args[0])
			if err != nil {
				return fmt.Errorf("service %q: want VPC/NAME", args[0])
			}
			sv := service.Service{VPC: v, Name: name, Affinity: service.Affinity(affinity), TableSize: tableSize}
			if vip != "" {
				if sv.VIP, err = netip.ParseAddr(vip); err != nil {
					return fmt.Errorf("service %q: --vip: %w", args[0], err)
				}
			}
			for _, p := range ports {
				sp, err := parsePort(p)
				if err != nil {
					return fmt.Errorf("service %q: %w", args[0], err)
				}
				sv.Ports = append(sv.Ports, sp)
			}
			if sv.Selector, err = parseLabels("--selector", selector); err != nil {
				return fmt.Errorf("service %q: %w", args[0], err)
			}
			for _, e := range endpoints {
				a, err := netip.ParseAddr(e)
				if err != nil {
					return fmt.Errorf("service %q: --endpoints: %w", args[0], err)
				}
				sv.Endpoints = append(sv.Endpoints, a)
			}
			st, ss, err := g.serviceStore(c)
			if err != nil {
				return err
			}
			defer st.Close()
			out, err := ss.CreateService(c.Context(), sv)
			if err != nil {
				return err
			}
			printServices(g, []ServiceStatus{{Service: out.Key(), VIP: out.VIP, Ports: out.Ports, Selector: out.Selector, Endpoints: out.Endpoints}})
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&vip, "vip", "", "requested VIP, inside the VPC's CIDR and outside its subnets (default: the highest free address)")
	f.StringArrayVar(&ports, "port", nil, "a port: PORT[:TARGET][/tcp|udp] (repeatable)")
	f.StringArrayVar(&selector, "selector", nil, "backend label selector KEY=VALUE (repeatable, all must match)")
	f.StringSliceVar(&endpoints, "endpoints", nil, "explicit backend addresses (instead of --selector)")
	f.StringVar(&affinity, "affinity", "", "session affinity: None or ClientIP")
	f.IntVar(&tableSize, "table-size", 0, fmt.Sprintf("Maglev table size, a prime (default %d)", service.DefaultTableSize))
	list := &cobra.Command{
		Use:   "list [VPC]",
		Short: "List services with their VIP, ports, selector and current backends",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			v := ""
			if len(args) == 1 {
				v = args[0]
			}
			st, _, err := g.serviceStore(c)
			if err != nil {
				return err
			}
			defer st.Close()
			svcs, err := collectServices(c.Context(), st, v)
			if err != nil {
				return err
			}
			printServices(g, svcs)
			return nil
		},
	}
	del := &cobra.Command{
		Use:   "delete VPC/NAME",
		Short: "Delete a service (its flows end with it: agents drop their conntrack entries)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			v, name, err := splitSubnet(args[0])
			if err != nil {
				return fmt.Errorf("service %q: want VPC/NAME", args[0])
			}
			st, ss, err := g.serviceStore(c)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := ss.DeleteService(c.Context(), v, name); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "service %q deleted\n", args[0])
			return nil
		},
	}
	c.AddCommand(create, list, del, serviceControllerCommand(g))
	return c
}

// ServiceStatus is a service as list and status show it: its frontend,
// how it picks backends, and the backends the resolver last wrote.
type ServiceStatus struct {
	Service   string            `json:"service"` // vpc/name
	VIP       netip.Addr        `json:"vip"`
	Ports     []service.Port    `json:"ports"`
	Selector  map[string]string `json:"selector,omitempty"`
	Endpoints []netip.Addr      `json:"endpoints,omitempty"`
	// Resolved is false until the resolver wrote a backend record.
	Resolved bool              `json:"resolved"`
	Backends []service.Backend `json:"backends,omitempty"`
}

// collectServices lists the services of vpc ("" for all) with their
// backend records; nil for a store without services.
func collectServices(ctx context.Context, st store.Store, vpc string) ([]ServiceStatus, error) {
	ss, ok := st.(store.ServiceStore)
	if !ok {
		return nil, nil
	}
	svcs, _, err := ss.ListServices(ctx, vpc)
	if err != nil {
		return nil, err
	}
	recs, _, err := ss.ListServiceBackends(ctx, vpc)
	if err != nil {
		return nil, err
	}
	byKey := map[string]service.Backends{}
	for _, r := range recs {
		byKey[r.Key()] = r
	}
	out := make([]ServiceStatus, 0, len(svcs))
	for _, s := range svcs {
		r, ok := byKey[s.Key()]
		out = append(out, ServiceStatus{Service: s.Key(), VIP: s.VIP, Ports: s.Ports, Selector: s.Selector,
			Endpoints: s.Endpoints, Resolved: ok, Backends: r.Backends})
	}
	return out, nil
}

// printServices prints a table of services. BACKENDS is "pending" until
// the resolver wrote a record, "none" for an empty one, else ip@node per
// backend (the target ports are in PORTS).
func printServices(g *globals, svcs []ServiceStatus) {
	tw := table(g.out, "SERVICE", "VIP", "PORTS", "SELECTOR", "BACKENDS")
	for _, s := range svcs {
		var ports []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%d:%d/%s", p.Port, p.TargetPort, strings.ToLower(string(p.Protocol))))
		}
		var sel []string
		for k, v := range s.Selector {
			sel = append(sel, k+"="+v)
		}
		slices.Sort(sel)
		if len(s.Endpoints) > 0 {
			var eps []string
			for _, e := range s.Endpoints {
				eps = append(eps, e.String())
			}
			sel = append(sel, "endpoints="+strings.Join(eps, ","))
		}
		be := "pending"
		if s.Resolved {
			var bs []string
			for _, b := range s.Backends {
				if b.Node != "" {
					bs = append(bs, b.IP.String()+"@"+b.Node)
				} else {
					bs = append(bs, b.IP.String())
				}
			}
			be = strings.Join(bs, ",")
			if be == "" {
				be = "none"
			}
		}
		selStr := strings.Join(sel, ",")
		if selStr == "" {
			selStr = "-"
		}
		row(tw, s.Service, s.VIP, strings.Join(ports, ","), selStr, be)
	}
	tw.Flush()
}

// printStatusServices adds the services, with their current backends, to
// geniectl status (stores without services print nothing).
func printStatusServices(g *globals, svcs []ServiceStatus) {
	if len(svcs) == 0 {
		return
	}
	fmt.Fprintln(g.out)
	printServices(g, svcs)
}
