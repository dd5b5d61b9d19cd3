package datapath

import (
	"errors"
	"net"
	"net/netip"
)

// EncapOverhead is the number of bytes the Geneve encapsulation adds to every
// packet: outer IPv4 (20) + UDP (8) + Geneve without options (8) + inner
// Ethernet (14). Overlay interfaces must use MTU = uplink MTU - EncapOverhead.
const EncapOverhead = 50

// GenevePort is the IANA UDP destination port of Geneve (RFC 8926).
const GenevePort = 6081

// ErrMapFull is returned (wrapped with the map's name) when an upsert fails
// because a BPF map has reached its max_entries.
var ErrMapFull = errors.New("bpf map is full")

// Config is the node-wide configuration of the data plane. It is written into
// the node config map on every Open, so a restarted agent may change it.
type Config struct {
	// PinDir is a directory on bpffs (e.g. /sys/fs/bpf/genie/<node>) where
	// maps and links are pinned. It is created if missing. Required.
	PinDir string
	// UnderlayIP is this node's underlay IPv4 address: the outer source of
	// encapsulated packets and the address decapsulation listens on.
	UnderlayIP netip.Addr
	// UplinkIfindex is the ifindex of the underlay interface encapsulated
	// packets are redirected to.
	UplinkIfindex int
	// UplinkMAC is the MAC of the uplink, the outer source MAC.
	UplinkMAC net.HardwareAddr
	// GatewayMAC is the virtual gateway MAC pods see: the answer to every
	// ARP request of a pod and the source MAC of every delivered packet. Pick
	// a locally administered unicast address (e.g. 02:...), the same on every
	// node so a migrated pod's neighbour cache stays valid.
	GatewayMAC net.HardwareAddr
}

// LocalEndpoint is an overlay interface of a pod on this node.
type LocalEndpoint struct {
	// VNI is the VPC's Geneve VNI (24 bit, non-zero).
	VNI uint32
	// IP is the pod's IPv4 address inside the VPC.
	IP netip.Addr
	// MAC is the MAC of the pod-side veth.
	MAC net.HardwareAddr
	// HostIfindex is the ifindex of the host-side veth, in the agent's netns.
	HostIfindex int
}

// RemoteEndpoint is an overlay interface of a pod on another node.
type RemoteEndpoint struct {
	// VNI is the VPC's Geneve VNI (24 bit, non-zero).
	VNI uint32
	// IP is the pod's IPv4 address inside the VPC.
	IP netip.Addr
	// MAC is the MAC of the remote pod-side veth (carried as inner
	// destination MAC; the remote node rewrites it anyway).
	MAC net.HardwareAddr
	// NodeIP is the underlay IPv4 address of the node hosting the pod. The
	// node's underlay MAC must be known through UpsertNode for encapsulated
	// packets to be sent; until then they are dropped as NO_NODE.
	NodeIP netip.Addr
}

// Entry is one row of the endpoints map, as returned by Endpoints.
// HostIfindex != 0 marks a local endpoint, otherwise NodeIP is set.
type Entry struct {
	VNI         uint32
	IP          netip.Addr
	MAC         net.HardwareAddr
	HostIfindex int
	NodeIP      netip.Addr
}

// Local reports whether the entry is an endpoint on this node.
func (e Entry) Local() bool { return e.HostIfindex != 0 }

// Datapath is a handle on the loaded programs and the pinned maps of one
// node. It is safe for use by one goroutine at a time per method group; the
// agent serialises writes (it is the only writer of the maps).
type Datapath struct {
	cfg  Config
	objs *bpfObjects
}
