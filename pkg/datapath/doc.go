// Package datapath loads, attaches and feeds the eBPF data plane of the VPC
// overlay (C sources in bpf/). It knows nothing of Kubernetes or the store:
// the agent translates its desired state into Upsert*/Delete* calls.
//
// Design notes are being written; see bpf/README.md.
package datapath
