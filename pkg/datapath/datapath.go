package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
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
	// UplinkIfindex is the ifindex of the underlay interface: the output
	// interface of the FIB lookup for encapsulated packets.
	UplinkIfindex int
	// UplinkMAC is the MAC of the uplink (informational: the outer MACs
	// come from the FIB and the neighbour table).
	UplinkMAC net.HardwareAddr
	// GatewayMAC is the virtual gateway MAC pods see: the answer to every
	// ARP request of a pod and the source MAC of every delivered packet. Pick
	// a locally administered unicast address (e.g. 02:...), the same on every
	// node so a migrated pod's neighbour cache stays valid.
	GatewayMAC net.HardwareAddr
	// MapSizes overrides the capacity of the maps; zero fields keep the
	// compiled-in defaults. It applies when the maps are created; pinned
	// maps of another size make Open fail (see MapSizes).
	MapSizes MapSizes
	// EndpointAttach selects how the pod program is attached to host
	// veths: AttachTCX (default, "") or AttachTC (see there).
	EndpointAttach EndpointAttach
	// ProcSysNet is where net sysctls are written (empty: /proc/sys/net),
	// for a container whose /proc/sys is read-only.
	ProcSysNet string
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
	// QoS is the endpoint's traffic class (QoSNone: unmarked) and QoSMinor
	// the minor of its own HTB class on the uplink (0: its class's shared
	// leaf); see qos.go.
	QoS      QoSClass
	QoSMinor uint16
	// Ingress is the endpoint's ingress rate limit (zero: none), enforced
	// in BPF before delivery; see qos.go.
	Ingress IngressLimit
	// NodeNet marks the attachment that is its pod's default network in a
	// VPC that may be one (LXC_F_NODE_NET, bpf/lib/egress.h): the pod
	// reaches its node's underlay address through the host stack, and
	// what leaves the VPC without an egress policy selecting it goes out
	// through this node, SNATed to its underlay address.
	NodeNet bool
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
	// NodeIP is the underlay IPv4 address of the node hosting the pod.
	// Encapsulated packets go to the kernel's next hop for it; without a
	// route they are dropped as NO_NEXTHOP.
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
// node. Its methods are safe for concurrent use; map writes are serialised
// (some, like the per-VNI endpoint count, are read-modify-write), and so
// are attaches, under a lock of their own. One agent per PinDir is assumed.
type Datapath struct {
	// mu serialises map writes; linkMu serialises program attaches and
	// detaches (pinned links). They are separate because a tcx attach or
	// detach waits for an RCU grace period in the kernel (7-20 ms on a
	// busy 2-core machine): map writes of other pods must not queue
	// behind it.
	mu     sync.Mutex
	linkMu sync.Mutex
	cfg    Config
	lxc    lxcObjects
	uplink uplinkObjects
	// pmtuFD is the raw socket that lets the kernel learn path MTUs
	// (pmtu.go), opened by AttachUplink; -1 until then.
	pmtuFD int
	// specs are the loaded objects' specs; up is a pending upgrade
	// (migrate.go), nil when none.
	specs []*ebpf.CollectionSpec
	up    *upgrade
}

// Open loads the BPF programs and maps for cfg. Maps already pinned under
// cfg.PinDir (by a previous agent) are re-adopted with their contents, so an
// agent restart does not interrupt traffic; otherwise they are created and
// pinned. Programs attached by a previous agent keep running (their links are
// pinned) until Attach* replaces them atomically with the newly loaded ones.
// Open (re)writes the node config map from cfg.
func Open(cfg Config) (*Datapath, error) { return open(cfg) }

// Close releases the file descriptors held by d. Pinned maps and links stay,
// so the data plane keeps forwarding without the agent.
func (d *Datapath) Close() error { return d.close() }

// Remove detaches every program pinned under pinDir and unpins all maps and
// links (node or sandbox teardown). Missing pins are not an error.
func Remove(pinDir string) error { return remove(pinDir) }

// AttachUplink attaches the decapsulation program to tcx ingress of the
// uplink ifindex. The link is pinned; an existing pinned link is updated in
// place with the current program (no gap in forwarding). It also prepares
// the uplink for encapsulation: IPv4 forwarding on (the FIB lookup of the
// next hop needs it), UDP segmentation off on a veth, and a socket that
// lets the kernel learn path MTUs to the peers, held until Close (see
// pmtu.go).
func (d *Datapath) AttachUplink(ifindex int) error {
	d.linkMu.Lock()
	defer d.linkMu.Unlock()
	return d.attachUplink(ifindex)
}

// AttachUplinkPrefilter attaches the optional XDP prefilter (xdp.frags) to
// the uplink. It drops malformed Geneve and Geneve for VNIs without a local
// endpoint before an skb is built; everything else passes to the tcx
// program. Worth it on NICs with native multi-buffer XDP. Do NOT use it on a
// veth uplink: attaching any XDP program to a veth (frags-aware or not)
// clears TSO/USO on its peer on kernel 6.18 (measured), which costs about
// half of the cross-node TCP throughput (BenchmarkE2EThroughput).
func (d *Datapath) AttachUplinkPrefilter(ifindex int) error {
	d.linkMu.Lock()
	defer d.linkMu.Unlock()
	return d.attachPrefilter(ifindex)
}

// DetachUplinkPrefilter removes only the XDP prefilter (idempotent), e.g.
// when a restarted agent no longer wants it.
func (d *Datapath) DetachUplinkPrefilter(ifindex int) error {
	d.linkMu.Lock()
	defer d.linkMu.Unlock()
	return d.detachPrefilter(ifindex)
}

// DetachUplink removes the uplink tcx program and XDP prefilter (idempotent).
func (d *Datapath) DetachUplink(ifindex int) error {
	d.linkMu.Lock()
	defer d.linkMu.Unlock()
	return d.detachUplink(ifindex)
}

// AttachEndpoint attaches the pod program to tcx ingress of the host-side
// veth hostIfindex (packets the pod sends). Idempotent; the link is pinned.
// Attach after UpsertLocalEndpoint: until the endpoint is known its packets
// are dropped as UNKNOWN_ENDPOINT.
func (d *Datapath) AttachEndpoint(hostIfindex int) error {
	d.linkMu.Lock()
	defer d.linkMu.Unlock()
	return d.attachEndpoint(hostIfindex)
}

// DetachEndpoint detaches the pod program from hostIfindex and removes the
// pin. Idempotent: a missing link or interface is not an error.
func (d *Datapath) DetachEndpoint(hostIfindex int) error {
	d.linkMu.Lock()
	defer d.linkMu.Unlock()
	return d.detachEndpoint(hostIfindex)
}

// UpsertLocalEndpoint writes a local endpoint to the endpoints map and the
// endpoint-by-ifindex map and counts its VNI as hosted here (prefilter).
func (d *Datapath) UpsertLocalEndpoint(ep LocalEndpoint) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.upsertLocal(ep)
}

// UpsertRemoteEndpoint writes an endpoint hosted on another node.
func (d *Datapath) UpsertRemoteEndpoint(ep RemoteEndpoint) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.upsertRemote(ep)
}

// DeleteEndpoint removes {vni, ip} from the endpoints map (and, if it was
// local, its endpoint-by-ifindex entry and VNI reference). Idempotent.
func (d *Datapath) DeleteEndpoint(vni uint32, ip netip.Addr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.deleteEndpoint(vni, ip)
}

// UpsertNode validates its arguments and does nothing else.
//
// Deprecated: the outer packet leaves through the kernel's next hop for
// the node's underlay address (bpf_fib_lookup, bpf_redirect_neigh), on a
// flat or a routed underlay alike, so the data plane needs no node MACs.
// Kept so that callers compile; it will be removed with them.
func (d *Datapath) UpsertNode(ip netip.Addr, mac net.HardwareAddr) error {
	if err := errors.Join(checkIP("ip", ip), checkMAC("mac", mac)); err != nil {
		return fmt.Errorf("upsert node %s: %w", ip, err)
	}
	return nil
}

// DeleteNode validates its argument and does nothing else.
//
// Deprecated: see UpsertNode.
func (d *Datapath) DeleteNode(ip netip.Addr) error {
	if err := checkIP("ip", ip); err != nil {
		return fmt.Errorf("delete node %s: %w", ip, err)
	}
	return nil
}

// Endpoints lists the endpoints map, for reconcile diffing.
func (d *Datapath) Endpoints() ([]Entry, error) { return d.endpoints() }

// Drops returns the drop counters summed over CPUs, by reason. Reasons that
// never occurred are present with 0.
func (d *Datapath) Drops() (map[DropReason]uint64, error) { return d.drops() }
