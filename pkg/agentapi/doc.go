// Package agentapi is the contract between the genie CNI plugin and the node
// agent genied: a small JSON-over-HTTP protocol on a unix socket.
//
// # Design notes
//
// The plugin binary stays thin: for a VPC attachment it sends one Attach
// request naming the VPC, the subnet, the pod's netns and the interface name,
// and gets back a complete CNI result. The agent owns everything stateful:
// IPAM blocks, the veth, the BPF maps. The plugin never touches BPF maps.
//
// HTTP over a unix socket was chosen over gRPC because the plugin is a
// short-lived process started per CNI call: net/http has no start-up cost, the
// protocol is debuggable with curl --unix-socket, and the socket's file
// permissions are the access control. Errors travel as a CNI error object
// (code, msg, details) so the plugin can return them unchanged to the runtime.
//
// The same socket streams the data plane's drops to `geniectl trace`
// (PathTrace): one POST whose response is newline-delimited JSON, flushed
// per event, for as long as the client stays (docs/trace.md).
package agentapi
