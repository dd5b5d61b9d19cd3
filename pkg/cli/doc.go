// Package cli is geniectl's command tree (cobra).
//
// # Design notes
//
// Every command is a thin shell over a library: pkg/sandbox for the
// virtual cluster, pkg/store for VPCs and subnets, pkg/agent/reclaim for
// node delete. The commands parse
// flags, call one library function, and print a table or a clear error;
// nothing here holds state between runs. The store is the Kubernetes API
// with --datastore kubernetes (--kubeconfig, default $KUBECONFIG; package
// datastore opens it as genied does), else etcd at --store-endpoints, or
// the running sandbox's etcd (--sandbox, or the only one up), so the
// sandbox workflow needs no flags at all.
package cli
