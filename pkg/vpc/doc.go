// Package vpc defines the control-plane objects of the eBPF overlay: VPCs,
// subnets, endpoints (pod attachments) and nodes, with their validation.
//
// # Design notes
//
// A VPC is an isolated IPv4 network identified in the data plane by its
// 24-bit VNI. Its CIDR may overlap other VPCs' CIDRs: isolation comes from
// every data-plane key carrying the VNI, never from address ranges. Within a
// VPC, subnets must lie inside the VPC CIDR and must not overlap each other.
//
// This package only holds pure types and checks that need no storage:
// name syntax, CIDR shape, gateway placement, containment and overlap
// against a given list of siblings. Everything that needs a consistent view
// (VNI uniqueness, sibling overlap under concurrent creates, IP uniqueness)
// is enforced atomically by the store (package store), which calls these
// checks inside its transactions.
//
// Every error wraps ErrInvalid and names the object, so a CLI can print it
// as is: `subnet "blue/web" 10.1.0.0/24 overlaps subnet "blue/db"
// 10.1.0.128/25: invalid`.
//
// JSON: netip types encode as text ("10.1.0.0/24"), MACs as
// "aa:bb:cc:dd:ee:ff". The same encoding is stored in etcd and printed by
// geniectl.
package vpc
