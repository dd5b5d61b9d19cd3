// Command geniectl manages CNI-Genie's VPCs and subnets and runs the
// sandbox, a virtual multi-node cluster on one machine.
package main

import (
	"os"

	"github.com/cni-genie/cni-genie/pkg/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
