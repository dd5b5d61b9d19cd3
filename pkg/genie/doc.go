// Package genie implements the genie CNI meta-plugin: it attaches a pod to
// several networks, each either delegated to an installed CNI plugin through
// libcni or served by the node agent's VPC overlay, and reports the result.
//
// # Design notes
//
// ADD is plan, record, execute:
//
//  1. Resolve. The selection comes from the pod's NPWG annotation, else its
//     classic "cni" annotation, else the default network(s) (Kubernetes
//     mode: K8S_POD_NAME in CNI_ARGS and a kubeconfig configured), or from
//     CNI_ARGS GENIE_NETWORKS outside Kubernetes. Each name resolves to a
//     conflist (NAD spec.config, or the conf dir by name, then by type) or
//     to a VPC subnet. Interface names are planned by pkg/selection and
//     plugin binaries are looked up. All bad input fails here, before
//     anything is attached.
//  2. Record. The plan (each network's exact conflist and runtimeConfig,
//     ifname, order, container ID, netns, args) is written atomically to
//     <stateDir>/<containerID>+<ifname>.json before any delegate runs. DEL,
//     CHECK and GC need nothing else: not the pod, not the NAD, not the API
//     server, not the conf file (which may have changed since).
//  3. Execute. The first network (the pod's default, CNI_IFNAME) is
//     attached alone, then all others at once, at most attachParallelism
//     at a time (waves.go: no attachment's input is another's result, and
//     every delegate copes with concurrent calls already; attachParallelism
//     1 restores strict order). Goroutines enter the caller's netns, so
//     delegates start where a sequential ADD would start them. The
//     runtime's runtimeConfig goes to the default network only; per-network
//     NPWG requests (ips, mac, bandwidth, ...) go to their delegate as
//     runtimeConfig, which libcni passes on only for declared capabilities.
//     On any failure genie waits for the attachments in flight, deletes in
//     reverse order every network whose ADD ran (the failing ones too), never
//     one not started, removes the record and returns the first error in
//     selection order with its code; if that rollback itself fails the
//     record stays so the runtime's DEL retries it.
//
// Results are converted to 1.x, merged in selection order whatever the
// order of completion (interfaces concatenated, IP
// interface indexes shifted, routes appended, DNS merged) and printed in the
// version the runtime asked for. In Kubernetes mode the NPWG network-status
// annotation is written with exactly one default entry.
//
// <stateDir>/.lock is held shared by ADD, DEL and CHECK and exclusively by
// GC, so GC never judges a record while its ADD or DEL is half done, while
// ADDs of different pods still run in parallel.
//
// libcni's result cache lives under <stateDir>/cache, private to genie, so
// GC of a delegate network (which DELs cached attachments missing from the
// valid list) only ever touches attachments genie made.
//
// Scaling: genie is a short-lived process per CNI call; its cost is its own
// start-up (a static Go binary linking client-go: see "Cost per call" in
// docs/genie.md), one conf-dir read (every file's name and type peeked, only
// the networks used parsed), one small record file and the delegate
// executions, which dominate. Nothing is cached across calls, so a rotated
// kubeconfig token or an edited conf file takes effect on the next call.
package genie
