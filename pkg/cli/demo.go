package cli

import "github.com/spf13/cobra"

func sandboxDemo(g *globals) *cobra.Command {
	return &cobra.Command{Use: "demo", Short: "Run the scripted demo", Hidden: true}
}
