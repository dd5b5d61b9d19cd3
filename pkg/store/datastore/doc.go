// Package datastore opens the control plane's store.Store from a backend
// name and its connection settings, so the node agent (genied) and the CLI
// (geniectl) select backends the same way:
//
//	--datastore etcd        (default) --store-endpoints: etcd, external or
//	                        the sandbox's embedded one (package etcdstore)
//	--datastore kubernetes  --kubeconfig (empty: the in-cluster service
//	                        account): custom resources (package kubestore)
//
// # Design notes
//
// The backends stay independent packages behind store.Store; only this
// package imports both, and only to construct one. Nothing else in the
// agent or the CLI needs to know which backend runs, except for optional
// capabilities a backend may offer beyond store.Store (store.VPCWatcher),
// which callers discover with a type assertion.
//
// Opening is cheap and checks reachability up front: etcdstore dials its
// endpoints, kubestore asks the API server whether it serves the
// genie.cni.io CRDs (so a cluster without deploy/crds fails at start with
// a message naming the missing CRDs, not at the first ADD).
package datastore
