// Package selection turns a pod's network request into an attachment plan:
// which networks, in which order, under which interface names.
//
// # Design notes
//
// Three textual sources feed it, in CNI-Genie's precedence order:
//
//   - the NPWG annotation k8s.v1.cni.cncf.io/networks, in its comma form
//     ("net-a,other-ns/net-c@eth5") or its JSON list form
//     ([{"name":"net-a","interface":"eth5","ips":["10.1.1.5/24"]}]);
//   - the classic CNI-Genie annotation cni: "bridge,macvlan@eth3,bridge"
//     (names in order, repeats allowed, optional @ifname);
//   - CNI_ARGS GENIE_NETWORKS=<classic comma form> outside Kubernetes.
//
// Every form may also name a VPC subnet of the built-in overlay with the
// shorthand vpc:<vpc>/<subnet>[@ifname].
//
// Parsing is pure (strings in, Elements out) and validates everything it can
// without I/O: names, namespaces, interface names, IPs, MACs, gateways. That
// keeps the parsers fuzzable and lets the plugin refuse bad input before it
// touches a namespace. Resolving a name to a CNI configuration is the
// caller's job (conf dir, NetworkAttachmentDefinition): this package never
// reads files or talks to the API server.
//
// Plan assigns interface names: the first network gets the runtime's
// CNI_IFNAME, unnamed others get net1, net2, ... (the NPWG convention,
// skipping names taken explicitly), and it refuses duplicate names and more
// than one default-route request. The cost is linear in the number of
// requested networks; a pod has a handful.
package selection
