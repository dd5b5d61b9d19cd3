package cli

import (
	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/spf13/cobra"
)

func sandboxDemo(g *globals) *cobra.Command {
	var f upFlags
	var keep bool
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run the demo: two overlapping VPCs on 3 nodes, a multihomed pod, a connectivity matrix",
		Long: `Brings up a sandbox, creates VPCs blue and red with the same CIDR, attaches pods
in both across three nodes (the first pod of each VPC gets the same address) and one
pod in both VPCs, prints a connectivity and isolation matrix, and tears down.
Exits non-zero if any pair differs from the expectation (same VPC: reachable;
different VPC: isolated).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			name := g.sandbox
			if name == "" {
				name = "demo"
			}
			opts := f.options(g, name)
			opts.Log = nil
			return sandbox.Demo(c.Context(), opts, g.out, keep)
		},
	}
	f.register(c)
	c.Flags().BoolVar(&keep, "keep", false, "leave the sandbox up afterwards")
	return c
}
