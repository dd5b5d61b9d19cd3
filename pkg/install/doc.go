// Package install puts genie on a Kubernetes node and takes it off again:
// it is the genie-install container of the cni-genie DaemonSet
// (deploy/helm/cni-genie) and works the same from a shell.
//
// # What it does
//
// Install copies the genie binary into the host's CNI bin dir, writes
// 00-genie.conflist into the host's CNI conf dir, wrapping the cluster's
// existing default network (the first other valid conf, as the runtime
// would pick it) as genie's defaultNetworks, and writes genie.kubeconfig, the
// credentials the plugin reads pods and NADs with. Run does Install and then
// keeps the kubeconfig's token fresh until it is stopped. Uninstall removes
// exactly those three files, and only when they are genie's.
//
// # Why it is shaped so
//
// Binary upgrade. The runtime may be executing the old genie while the new
// one is installed (a DEL racing an upgrade). Opening a running executable
// for writing fails with ETXTBSY ("text file busy", Multus #1221), and
// truncating it in place would crash the running process. So the new binary
// is written to a temporary file in the same directory, synced, and renamed
// over the old name: rename(2) swaps the directory entry atomically, a
// running process keeps its inode, and every later exec sees the complete
// new file. An identical binary is not rewritten.
//
// The default network. genie becomes the runtime's network by sorting first
// in the conf dir; the network it replaces stays where it is and genie
// delegates to it by name, so nothing else's config is edited or moved.
// The wrapped network's capabilities (portMappings, bandwidth, ...) are
// declared on genie's entry, so the runtime keeps passing them (genie hands
// them to the default network only). Re-installing over genie's own file
// keeps wrapping the same network: genie's file is never chosen as the
// default. A conf that sorts before 00-genie.conflist would stay the
// runtime's choice, so install refuses it with an error naming the file
// rather than install something that silently takes no effect.
//
// Uninstall leaves every other plugin's config, binary and state in place
// (Mizar's installer deleted them). With 00-genie.conflist gone the runtime
// is back on the wrapped network, so a DEL of a pod made through genie goes
// to that network's plugin and succeeds: it does not fail forever
// (Multus #1146). Running pods keep their interfaces; genie's attachment
// records (stateDir) are kept unless Purge is set.
//
// Tokens. The plugin is a short-lived process that reads its kubeconfig on
// every call, so a refreshed file is picked up by the next call. The
// kubeconfig embeds the projected service-account token; kubelet rotates
// that token file long before it expires, and Run rewrites the kubeconfig
// (atomically, 0600) within one poll interval of a change (Multus #852:
// expired tokens).
package install
