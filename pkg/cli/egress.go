package cli

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cni-genie/cni-genie/pkg/egress"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/vpc"
)

func (g *globals) egressStore(c *cobra.Command) (store.Store, store.EgressStore, error) {
	st, err := g.openStore(c.Context())
	if err != nil {
		return nil, nil, err
	}
	es, ok := st.(store.EgressStore)
	if !ok {
		st.Close()
		return nil, nil, fmt.Errorf("the %s datastore has no egress gateways", g.datastore)
	}
	return st, es, nil
}

func egressCommand(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "egress", Short: "Create, list, delete and drain egress gateways of VPCs"}
	var (
		dests, nodes, selector, nodeSelector, egressIPs []string
	)
	create := &cobra.Command{
		Use:   "create VPC/NAME --dest CIDR... (--node NODE... | --node-selector K=V...) [--selector K=V...] [--egress-ip NODE=IP...]",
		Short: "Let pods of a VPC leave it through gateway nodes, SNATed to each gateway's egress address",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			v, name, err := splitSubnet(args[0])
			if err != nil {
				return fmt.Errorf("egress gateway %q: want VPC/NAME", args[0])
			}
			gw := egress.Gateway{VPC: v, Name: name, Nodes: nodes}
			for _, d := range dests {
				p, err := netip.ParsePrefix(d)
				if err != nil {
					return fmt.Errorf("egress gateway %q: --dest: %w", args[0], err)
				}
				gw.Destinations = append(gw.Destinations, p)
			}
			if gw.Selector, err = parseLabels("--selector", selector); err != nil {
				return fmt.Errorf("egress gateway %q: %w", args[0], err)
			}
			if gw.NodeSelector, err = parseLabels("--node-selector", nodeSelector); err != nil {
				return fmt.Errorf("egress gateway %q: %w", args[0], err)
			}
			ips, err := parseLabels("--egress-ip", egressIPs)
			if err != nil {
				return fmt.Errorf("egress gateway %q: %w", args[0], err)
			}
			for n, s := range ips {
				a, err := netip.ParseAddr(s)
				if err != nil {
					return fmt.Errorf("egress gateway %q: --egress-ip %s: %w", args[0], n, err)
				}
				if gw.EgressIPs == nil {
					gw.EgressIPs = map[string]netip.Addr{}
				}
				gw.EgressIPs[n] = a
			}
			st, es, err := g.egressStore(c)
			if err != nil {
				return err
			}
			defer st.Close()
			out, err := es.CreateEgressGateway(c.Context(), gw)
			if err != nil {
				return err
			}
			return printEgress(c.Context(), g, st, []egress.Gateway{out})
		},
	}
	f := create.Flags()
	f.StringSliceVar(&dests, "dest", nil, "destination prefixes reached through the gateways (0.0.0.0/0: everything outside the VPC)")
	f.StringSliceVar(&nodes, "node", nil, "gateway nodes by name")
	f.StringArrayVar(&nodeSelector, "node-selector", nil, "gateway nodes by label KEY=VALUE (repeatable, all must match)")
	f.StringArrayVar(&selector, "selector", nil, "pods by label KEY=VALUE (repeatable, all must match; default every pod of the VPC)")
	f.StringArrayVar(&egressIPs, "egress-ip", nil, "NODE=IP: the node's egress address (default its underlay address; the node must own it)")
	list := &cobra.Command{
		Use:   "list [VPC]",
		Short: "List egress gateways with their gateway nodes and their state",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			v := ""
			if len(args) == 1 {
				v = args[0]
			}
			st, es, err := g.egressStore(c)
			if err != nil {
				return err
			}
			defer st.Close()
			gws, _, err := es.ListEgressGateways(c.Context(), v)
			if err != nil {
				return err
			}
			return printEgress(c.Context(), g, st, gws)
		},
	}
	del := &cobra.Command{
		Use:   "delete VPC/NAME",
		Short: "Delete an egress gateway (its pods' traffic outside the VPC is dropped again)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			v, name, err := splitSubnet(args[0])
			if err != nil {
				return fmt.Errorf("egress gateway %q: want VPC/NAME", args[0])
			}
			st, es, err := g.egressStore(c)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := es.DeleteEgressGateway(c.Context(), v, name); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "egress gateway %q deleted\n", args[0])
			return nil
		},
	}
	var undo bool
	drain := &cobra.Command{
		Use:   "drain NODE [--undo]",
		Short: "Take a gateway node out of every egress gateway: no new flows, established ones stay until they end or the agents' drain timeout",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			node := args[0]
			if err := vpc.ValidateNodeName(node); err != nil {
				return fmt.Errorf("drain: %w", err)
			}
			st, es, err := g.egressStore(c)
			if err != nil {
				return err
			}
			defer st.Close()
			n, err := drainNode(c.Context(), st, es, node, undo, time.Now())
			if err != nil {
				return err
			}
			verb := "draining"
			if undo {
				verb = "no longer draining"
			}
			fmt.Fprintf(g.out, "node %q %s in %d egress gateways\n", node, verb, n)
			return nil
		},
	}
	drain.Flags().BoolVar(&undo, "undo", false, "end the drain: the node takes new flows again")
	c.AddCommand(create, list, del, drain)
	return c
}

// drainNode marks node as draining (or not, undo) in every gateway it is a
// gateway node of, and returns how many changed. An unknown node is an
// error; a node that is no gateway changes nothing.
func drainNode(ctx context.Context, st store.Store, es store.EgressStore, node string, undo bool, now time.Time) (int, error) {
	what := fmt.Sprintf("drain node %q", node)
	n, err := st.GetNode(ctx, node)
	if errors.Is(err, store.ErrNotFound) {
		return 0, fmt.Errorf("%s: no such node: %w", what, err)
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	gws, _, err := es.ListEgressGateways(ctx, "")
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	changed := 0
	for _, gw := range gws {
		if !gw.SelectsNode(n) {
			continue
		}
		var next egress.Gateway
		var ok bool
		if undo {
			next, ok = gw.WithoutDrain(node)
		} else {
			next, ok = gw.WithDrain(node, now)
		}
		if !ok {
			continue
		}
		if _, err := es.UpdateEgressGateway(ctx, next); err != nil {
			return changed, fmt.Errorf("%s: %w", what, err)
		}
		changed++
	}
	return changed, nil
}

// egressNodeStates describes each gateway node of gw: its egress address
// and "active", "draining Ns" or "no heartbeat"/"heartbeat Ns ago".
func egressNodeStates(gw egress.Gateway, nodes map[string]vpc.Node, beats map[string]time.Time, now time.Time) []string {
	var out []string
	addrs := gw.EgressAddrs(nodes)
	for _, n := range gw.GatewayNodes(nodes) {
		state := "active"
		if since, ok := gw.DrainedSince(n.Name); ok {
			state = fmt.Sprintf("draining %s", now.Sub(since).Round(time.Second))
		}
		if beats != nil {
			b, ok := beats[n.Name]
			switch {
			case !ok:
				state += ", no heartbeat"
			case now.Sub(b) > 2*time.Second:
				state += fmt.Sprintf(", last heartbeat %s ago", now.Sub(b).Round(time.Second))
			}
		}
		out = append(out, fmt.Sprintf("%s(%s %s)", n.Name, addrs[n.Name], state))
	}
	for _, name := range gw.Nodes {
		if _, ok := nodes[name]; !ok {
			out = append(out, name+"(unknown node)")
		}
	}
	return out
}

func printEgress(ctx context.Context, g *globals, st store.Store, gws []egress.Gateway) error {
	ns, _, err := st.ListNodes(ctx)
	if err != nil {
		return err
	}
	nodes := map[string]vpc.Node{}
	for _, n := range ns {
		nodes[n.Name] = n
	}
	var beats map[string]time.Time
	if bs, ok := st.(store.BeatStore); ok {
		if list, _, err := bs.ListBeats(ctx); err == nil {
			beats = map[string]time.Time{}
			for _, b := range list {
				beats[b.Node] = b.Time
			}
		}
	}
	now := time.Now()
	tw := table(g.out, "EGRESS GATEWAY", "DESTINATIONS", "SELECTOR", "GATEWAYS")
	for _, gw := range gws {
		var dests []string
		for _, d := range gw.Destinations {
			dests = append(dests, d.String())
		}
		sel := labelString(gw.Selector)
		row(tw, gw.Key(), strings.Join(dests, ","), sel, strings.Join(egressNodeStates(gw, nodes, beats, now), " "))
	}
	tw.Flush()
	return nil
}

func labelString(m map[string]string) string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ",")
}

// printStatusEgress adds the egress gateways to geniectl status (stores
// without them, or without any, print nothing).
func printStatusEgress(ctx context.Context, g *globals, st store.Store) error {
	es, ok := st.(store.EgressStore)
	if !ok {
		return nil
	}
	gws, _, err := es.ListEgressGateways(ctx, "")
	if err != nil || len(gws) == 0 {
		return err
	}
	fmt.Fprintln(g.out)
	return printEgress(ctx, g, st, gws)
}
