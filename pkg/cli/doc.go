// Package cli is geniectl's command tree (cobra).
//
// # Design notes
//
// Every command is a thin shell over a library: pkg/sandbox for the
// virtual cluster, pkg/store (etcdstore) for VPCs and subnets. The
// commands parse flags, call one library function, and print a table or a
// clear error; nothing here holds state between runs. The store is found
// from --store-endpoints, or from the running sandbox (--sandbox, or the
// only one up), so the sandbox workflow needs no flags at all.
package cli
