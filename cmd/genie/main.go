// genie is a process per CNI call that lives a few milliseconds and mostly
// waits for its delegates, so the runtime's GOMAXPROCS tracking (a cgroup
// read at start, a background update goroutine) and its naming of memory
// mappings are start-up cost with no use here (measured ~0.1 ms per call).
//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0
//go:debug decoratemappings=0

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
