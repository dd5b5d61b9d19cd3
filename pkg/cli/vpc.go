package cli

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/store"
	"github.com/cni-genie/cni-genie/pkg/store/datastore"
	"github.com/cni-genie/cni-genie/pkg/store/etcdstore"
	"github.com/cni-genie/cni-genie/pkg/vpc"
	"github.com/spf13/cobra"
)

// openStore connects to the selected datastore: the Kubernetes API
// (--datastore kubernetes, --kubeconfig), etcd at --store-endpoints, or
// else the running sandbox's etcd.
func (g *globals) openStore(ctx context.Context) (store.Store, error) {
	backend, err := datastore.ParseBackend(g.datastore)
	if err != nil {
		return nil, fmt.Errorf("--datastore: %w", err)
	}
	if backend == datastore.Kubernetes {
		return datastore.Open(ctx, datastore.Config{Backend: backend, Kubeconfig: g.kubeconfig})
	}
	eps := g.storeEndpoints
	if eps == "" {
		sb, err := g.openSandbox()
		if err != nil {
			return nil, fmt.Errorf("no --store-endpoints given and %w", err)
		}
		eps = sb.StoreEndpoint()
	}
	return etcdstore.New(ctx, datastore.SplitEndpoints(eps), etcdstore.Options{})
}

// sandboxStore reports whether openStore uses the running sandbox's store
// (whose agents can then be asked for their health).
func (g *globals) sandboxStore() bool {
	return g.datastore == datastore.Etcd && g.storeEndpoints == ""
}

// OpenSandboxStore connects to the store of a running sandbox.
func OpenSandboxStore(ctx context.Context, sb *sandbox.Sandbox) (store.Store, error) {
	return etcdstore.New(ctx, []string{sb.StoreEndpoint()}, etcdstore.Options{})
}

func vpcCommand(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "vpc", Short: "Create, list and delete VPC networks"}
	var cidr, qosClass string
	var mtu int
	create := &cobra.Command{
		Use:   "create NAME --cidr CIDR [--mtu N] [--qos-class high|normal|low]",
		Short: "Create a VPC (its VNI is allocated by the store)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			p, err := netip.ParsePrefix(cidr)
			if err != nil {
				return fmt.Errorf("vpc %q: --cidr %q: %w", args[0], cidr, err)
			}
			st, err := g.openStore(c.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			v, err := st.CreateVPC(c.Context(), vpc.VPC{Name: args[0], CIDR: p, MTU: mtu, QoSClass: qosClass})
			if err != nil {
				return err
			}
			printVPCs(g, []vpc.VPC{v})
			return nil
		},
	}
	create.Flags().StringVar(&cidr, "cidr", "", "the VPC's address range, e.g. 10.10.0.0/16")
	create.MarkFlagRequired("cidr")
	create.Flags().IntVar(&mtu, "mtu", 0, "the MTU of the VPC's pod interfaces (default: the smallest uplink MTU in the cluster minus the 50-byte encapsulation)")
	create.Flags().StringVar(&qosClass, "qos-class", "", "the default QoS class of the VPC's attachments: high, normal or low (a pod's own class overrides it; default none)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List VPCs",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			st, err := g.openStore(c.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			vs, err := st.ListVPCs(c.Context())
			if err != nil {
				return err
			}
			printVPCs(g, vs)
			return nil
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a VPC (it must have no subnets)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			st, err := g.openStore(c.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.DeleteVPC(c.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "vpc %q deleted\n", args[0])
			return nil
		},
	}
	c.AddCommand(create, list, del)
	return c
}

func printVPCs(g *globals, vs []vpc.VPC) {
	tw := table(g.out, "VPC", "CIDR", "VNI", "MTU", "QOS")
	for _, v := range vs {
		mtu := "auto"
		if v.MTU != 0 {
			mtu = fmt.Sprint(v.MTU)
		}
		row(tw, v.Name, v.CIDR, v.VNI, mtu, orDash(v.QoSClass))
	}
	tw.Flush()
}

func splitSubnet(ref string) (string, string, error) {
	v, s, ok := strings.Cut(ref, "/")
	if !ok || v == "" || s == "" || strings.Contains(s, "/") {
		return "", "", fmt.Errorf("subnet %q: want VPC/NAME", ref)
	}
	return v, s, nil
}

func subnetCommand(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "subnet", Short: "Create, list and delete VPC subnets"}
	var cidr, gw string
	var block int
	create := &cobra.Command{
		Use:   "create VPC/NAME --cidr CIDR [--gateway IP]",
		Short: "Create a subnet inside a VPC",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			v, name, err := splitSubnet(args[0])
			if err != nil {
				return err
			}
			sn := vpc.Subnet{VPC: v, Name: name, BlockPrefixLen: block}
			if sn.CIDR, err = netip.ParsePrefix(cidr); err != nil {
				return fmt.Errorf("subnet %q: --cidr %q: %w", args[0], cidr, err)
			}
			if gw != "" {
				if sn.Gateway, err = netip.ParseAddr(gw); err != nil {
					return fmt.Errorf("subnet %q: --gateway %q: %w", args[0], gw, err)
				}
			}
			st, err := g.openStore(c.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			out, err := st.CreateSubnet(c.Context(), sn)
			if err != nil {
				return err
			}
			printSubnets(g, []vpc.Subnet{out})
			return nil
		},
	}
	create.Flags().StringVar(&cidr, "cidr", "", "the subnet's range, inside its VPC's CIDR")
	create.Flags().StringVar(&gw, "gateway", "", "gateway address (default: the first address)")
	create.Flags().IntVar(&block, "block-size", 0, "prefix length of the IPAM blocks nodes claim (default: /26, or 16 blocks per subnet for subnets smaller than /22)")
	create.MarkFlagRequired("cidr")
	list := &cobra.Command{
		Use:   "list [VPC]",
		Short: "List subnets (of one VPC, or all)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			st, err := g.openStore(c.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			v := ""
			if len(args) == 1 {
				v = args[0]
			}
			ss, err := st.ListSubnets(c.Context(), v)
			if err != nil {
				return err
			}
			printSubnets(g, ss)
			return nil
		},
	}
	del := &cobra.Command{
		Use:   "delete VPC/NAME",
		Short: "Delete a subnet (it must have no endpoints)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			v, name, err := splitSubnet(args[0])
			if err != nil {
				return err
			}
			st, err := g.openStore(c.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.DeleteSubnet(c.Context(), v, name); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "subnet %q deleted\n", args[0])
			return nil
		},
	}
	c.AddCommand(create, list, del)
	return c
}

func printSubnets(g *globals, ss []vpc.Subnet) {
	tw := table(g.out, "VPC", "SUBNET", "CIDR", "GATEWAY", "BLOCK")
	for _, s := range ss {
		row(tw, s.VPC, s.Name, s.CIDR, s.Gateway, fmt.Sprintf("/%d", s.BlockPrefixLen))
	}
	tw.Flush()
}
