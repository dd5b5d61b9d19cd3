// Package store defines the control plane's storage interface: VPCs (with
// VNI allocation), subnets, nodes, endpoints and IPAM blocks.
//
// # Design notes
//
// The interface is small and backend-neutral, in the spirit of flannel's
// subnet.Manager: the etcd backend (package etcdstore, embedded or
// external etcd) serves the standalone and sandbox modes, the Kubernetes
// CRD backend (package kubestore) a cluster; package datastore opens
// either by name (--datastore etcd|kubernetes). No backend type
// leaks through it; revisions are opaque int64 values that only need to be
// passed back to the same store's Watch calls.
//
// Every uniqueness rule is the store's job and must be atomic across
// processes, because many agents and CLIs share one store:
//   - VPC names and VNIs (lowest free VNI, claimed in the same transaction
//     as the VPC);
//   - subnet names and non-overlap within a VPC;
//   - one endpoint per IP within a VPC, and only inside a block held by
//     the endpoint's node;
//   - one owner per IPAM block.
//
// Failures a retry may not have are told apart from refusals: a store
// that does not answer before the caller's deadline is ErrUnavailable
// (naming the store), and an optimistic read-compare-commit that keeps
// losing to concurrent writers is ErrBusy after the jittered backoff of
// Retrier (wait.Backoff); Transient reports both (the agent answers CNI
// code 11). ErrConflict and the other sentinels are the store's rules
// refusing the request.
//
// Reads that drive watches (ListEndpoints, ListNodes) return the revision
// of the read, and Watch* resume strictly after it, so a consumer can
// list-then-watch without a gap. Watch failures arrive in-band as one
// EventError before the channel closes; ErrCompacted means "list again".
package store
