package directory

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// Key names one endpoint in the directory: an IPv4 address inside the VPC
// with the given VNI. Overlapping VPCs reuse addresses, so the VNI is part
// of every key, as it is of every data-plane map key.
type Key struct {
	VNI uint32     `json:"vni"`
	IP  netip.Addr `json:"ip"`
}

// String returns "vni/ip".
func (k Key) String() string { return fmt.Sprintf("%d/%s", k.VNI, k.IP) }

// Validate checks that the key can be placed: a non-zero VNI and an IPv4
// address (the overlay is IPv4 only, like vpc.Endpoint).
func (k Key) Validate() error {
	if k.VNI == 0 {
		return fmt.Errorf("key %s: vni 0", k)
	}
	if !k.IP.Is4() {
		return fmt.Errorf("key %s: not an ipv4 address", k)
	}
	return nil
}

// Record is the directory's answer for a key: where the endpoint lives.
// Version is the store's revision of the record's last change (etcd's
// mod_revision, a Kubernetes resourceVersion parsed as an integer): a
// larger version always wins, so replayed or reordered updates and
// invalidations are harmless.
type Record struct {
	Key
	// Node is the name of the node hosting the endpoint.
	Node string `json:"node"`
	// MAC is the endpoint's interface MAC.
	MAC     [6]byte `json:"mac"`
	Version uint64  `json:"version"`
}

// HardwareAddr returns the MAC as a net.HardwareAddr.
func (r Record) HardwareAddr() net.HardwareAddr {
	m := r.MAC
	return net.HardwareAddr(m[:])
}

// Mix64 is the 64-bit finalizer of MurmurHash3 (fmix64). It is the only
// hash of the directory, so the BPF data plane can compute a key's shard
// with the same five instructions (see ShardOf and doc.go).
func Mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// ShardOf returns the shard of the endpoint (vni, ip4), ip4 in host
// order, among shards shards (a power of two):
//
//	Mix64(uint64(vni)<<32 | uint64(ip4)) & (shards-1)
//
// The BPF program computes exactly this to index the shard-to-holder map.
func ShardOf(vni, ip4 uint32, shards int) uint32 {
	return uint32(Mix64(uint64(vni)<<32|uint64(ip4)) & uint64(shards-1))
}

// Shard returns the key's shard among shards shards (a power of two).
// Non-IPv4 keys map to shard 0; Validate refuses them first.
func (k Key) Shard(shards int) uint32 {
	if !k.IP.Is4() {
		return 0
	}
	a := k.IP.As4()
	return ShardOf(k.VNI, binary.BigEndian.Uint32(a[:]), shards)
}
