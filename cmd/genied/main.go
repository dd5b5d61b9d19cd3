// Command genied is the CNI-Genie node agent: it owns the node's eBPF data
// plane, serves VPC attachments to the genie CNI plugin over a unix socket
// and keeps the data plane in sync with the store. See package agent.
//
// Usage:
//
//	genied [flags]
//
// Run `genied --help` for the flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/cni-genie/cni-genie/pkg/agent"
)

func main() {
	cfg := agent.DefaultConfig()
	fs := flag.NewFlagSet("genied", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "genied is the CNI-Genie node agent (eBPF VPC overlay).\n\nUsage: genied [flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	cfg.RegisterFlags(fs)
	_ = fs.Parse(os.Args[1:])
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))

	a, err := agent.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "genied:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "genied:", err)
		os.Exit(1)
	}
}
