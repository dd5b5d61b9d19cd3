// Command genie is the CNI-Genie meta-plugin binary (installed in the CNI
// bin dir). All logic lives in pkg/genie; see docs/genie.md.
package main

import (
	"github.com/cni-genie/cni-genie/pkg/genie"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add: genie.CmdAdd, Check: genie.CmdCheck, Del: genie.CmdDel, Status: genie.CmdStatus, GC: genie.CmdGC,
	}, version.All, genie.About)
}
