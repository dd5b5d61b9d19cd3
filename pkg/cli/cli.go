package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cni-genie/cni-genie/pkg/store/datastore"
)

// globals are the persistent flags shared by every command.
type globals struct {
	datastore      string
	kubeconfig     string
	storeEndpoints string
	sandbox        string
	stateRoot      string
	out, errOut    io.Writer
}

// Main runs geniectl with args and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := NewCommand(stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(stderr, "geniectl:", ee.msg)
			}
			return ee.code
		}
		fmt.Fprintln(stderr, "geniectl:", err)
		return 1
	}
	return 0
}

// exitError ends geniectl with a specific code.
type exitError struct {
	code int
	msg  string
}

// Error returns the message printed before exiting.
func (e exitError) Error() string { return e.msg }

// NewCommand returns geniectl's root command writing to stdout and stderr.
func NewCommand(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{out: stdout, errOut: stderr}
	root := &cobra.Command{
		Use:           "geniectl",
		Short:         "Manage CNI-Genie VPC networks and the sandbox cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	ds := os.Getenv("GENIE_DATASTORE")
	if ds == "" {
		ds = datastore.Etcd
	}
	pf.StringVar(&g.datastore, "datastore", ds,
		"where VPCs, subnets and endpoints live: etcd (--store-endpoints) or kubernetes (--kubeconfig); env GENIE_DATASTORE")
	pf.StringVar(&g.kubeconfig, "kubeconfig", datastore.DefaultKubeconfig(),
		"kubeconfig of --datastore kubernetes (default $KUBECONFIG; empty: the in-cluster service account)")
	pf.StringVar(&g.storeEndpoints, "store-endpoints", os.Getenv("GENIE_STORE_ENDPOINTS"),
		"comma-separated etcd endpoints of --datastore etcd (default: the running sandbox's store)")
	pf.StringVar(&g.sandbox, "sandbox", "", "sandbox to use (default: the only one up, else \"genie\")")
	pf.StringVar(&g.stateRoot, "state-root", "", "parent dir of sandbox state (default /run/genie-sandbox)")
	pf.MarkHidden("state-root")
	root.AddCommand(sandboxCommand(g), vpcCommand(g), subnetCommand(g), nodeCommand(g), serviceCommand(g), egressCommand(g), statusCommand(g), traceCommand(g), directoryCommand(g))
	return root
}

// table returns a tab-aligned writer; Flush it.
func table(w io.Writer, header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	return tw
}

func row(w io.Writer, cols ...any) {
	s := make([]string, len(cols))
	for i, c := range cols {
		s[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(w, strings.Join(s, "\t"))
}
