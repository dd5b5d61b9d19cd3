// Command genie-install installs the genie CNI plugin on a node (the
// installer container of the cni-genie DaemonSet) and uninstalls it. All
// logic lives in pkg/install; see docs/install.md.
package main

import (
	"os"

	"github.com/cni-genie/cni-genie/pkg/install"
)

func main() { os.Exit(install.Main(os.Args[1:], os.Stdout, os.Stderr)) }
