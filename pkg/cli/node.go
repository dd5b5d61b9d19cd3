package cli

import (
	"fmt"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agent/reclaim"
	"github.com/spf13/cobra"
)

// defaultStaleAfter is how old a node's heartbeat must be for node delete
// to take it without --force (genied's default --node-reclaim-after).
const defaultStaleAfter = 10 * time.Minute

func nodeCommand(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "node", Short: "List nodes and delete dead ones (their IPAM blocks and endpoints)"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List nodes with their heartbeat age and IPAM blocks",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			st, err := g.openStore(c.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			nodes, _, err := st.ListNodes(c.Context())
			if err != nil {
				return err
			}
			blocks, err := st.ListBlocks(c.Context(), "", "")
			if err != nil {
				return err
			}
			held := map[string]int{}
			for _, b := range blocks {
				held[b.Node]++
			}
			tw := table(g.out, "NODE", "UNDERLAY", "HEARTBEAT", "BLOCKS")
			for _, n := range nodes {
				hb := "-"
				if !n.Heartbeat.IsZero() {
					hb = time.Since(n.Heartbeat).Round(time.Second).String() + " ago"
				}
				row(tw, n.Name, n.UnderlayIP, hb, held[n.Name])
				delete(held, n.Name)
			}
			for name, k := range held {
				row(tw, name+" (no node object)", "-", "-", k)
			}
			tw.Flush()
			return nil
		},
	}
	var force bool
	var staleAfter time.Duration
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a dead node: its endpoints, its IPAM blocks and its node object",
		Long: "Delete a node that is gone for good: its endpoints are deleted, its IPAM blocks released for\n" +
			"other nodes and its node object removed. A node whose agent reported itself alive within\n" +
			"--stale-after (or whose store keeps no heartbeat) is refused unless --force is given.",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			st, err := g.openStore(c.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			r, err := reclaim.Node(c.Context(), st, args[0], force, staleAfter)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "node %q deleted: %d endpoint(s) deleted, %d block(s) released\n", args[0], len(r.Endpoints), len(r.Blocks))
			return nil
		},
	}
	del.Flags().BoolVar(&force, "force", false, "delete the node even if it looks alive")
	del.Flags().DurationVar(&staleAfter, "stale-after", defaultStaleAfter, "a heartbeat older than this counts as dead")
	c.AddCommand(list, del)
	return c
}
