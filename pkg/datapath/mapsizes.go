package datapath

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// MapSizes sets the capacity (max_entries) of the data plane's hash maps.
// A zero field keeps the compiled-in default (MAX_* in bpf/lib/maps.h).
// The maps hold no preallocated memory (BPF_F_NO_PREALLOC), so a large
// capacity costs kernel memory only for the entries actually stored.
//
// Pinned maps keep the size they were created with: an agent restarted
// with other sizes fails in Open with ErrMapIncompatible (and a hint) until
// the pin dir is removed, because resizing a BPF map means replacing it,
// which would interrupt traffic.
type MapSizes struct {
	// Endpoints bounds genie_endpoints: local plus remote endpoints of
	// the VPCs hosted on the node (default 65536).
	Endpoints uint32
	// LXC bounds genie_lxc: pod interfaces on the node (default 4096).
	LXC uint32
	// Nodes is ignored and reported as 0.
	//
	// Deprecated: the data plane has no node map any more (the outer
	// packet's next hop comes from the kernel's FIB); kept so that
	// existing flags and callers compile.
	Nodes uint32
	// VNIs bounds genie_vnis: VPCs with a local endpoint (default 4096).
	VNIs uint32
	// DirectoryShards sizes genie_dir_shard, the shard-to-holders array:
	// at least the directory's shard count (default 4096). Preallocated,
	// 32 bytes per shard.
	DirectoryShards uint32
	// DirectoryHeld bounds genie_dir_held: the records of the shards the
	// node holds, R·E/N of E endpoints (default 262144).
	DirectoryHeld uint32
	// DirectoryRemote bounds genie_dir_lru, the learned remote endpoints
	// (default 65536; least recently used entries are evicted).
	DirectoryRemote uint32
}

// DefaultMapSizes returns the compiled-in capacities.
func DefaultMapSizes() MapSizes {
	spec, err := loadLxc()
	if err != nil {
		return MapSizes{}
	}
	return sizesOf(spec)
}

func sizesOf(spec *ebpf.CollectionSpec) MapSizes {
	get := func(name string) uint32 {
		if m := spec.Maps[name]; m != nil {
			return m.MaxEntries
		}
		return 0
	}
	return MapSizes{
		Endpoints: get(lxcMapGenieEndpoints),
		LXC:       get(lxcMapGenieLxc),
		VNIs:      get(lxcMapGenieVnis),

		DirectoryShards: get(lxcMapGenieDirShard),
		DirectoryHeld:   get(lxcMapGenieDirHeld),
		DirectoryRemote: get(lxcMapGenieDirLru),
	}
}

// apply overrides the capacities of spec's maps with the non-zero sizes.
func (s MapSizes) apply(spec *ebpf.CollectionSpec) error {
	for name, n := range map[string]uint32{
		lxcMapGenieEndpoints:  s.Endpoints,
		lxcMapGenieLxc:        s.LXC,
		lxcMapGenieQosIngress: s.LXC, // at most one per pod interface
		lxcMapGenieVnis:       s.VNIs,
		lxcMapGenieDirShard:   s.DirectoryShards,
		lxcMapGenieDirHeld:    s.DirectoryHeld,
		lxcMapGenieDirLru:     s.DirectoryRemote,
	} {
		if n == 0 {
			continue
		}
		m := spec.Maps[name]
		if m == nil {
			continue // this object does not use the map
		}
		m.MaxEntries = n
	}
	return nil
}

// validate bounds the sizes: at most 1<<24 entries per map, far beyond any
// node, so a typo cannot ask the kernel for an absurd map.
func (s MapSizes) validate() error {
	const limit = 1 << 24
	for name, n := range map[string]uint32{"endpoints": s.Endpoints, "lxc": s.LXC, "nodes": s.Nodes, "vnis": s.VNIs} {
		if n > limit {
			return fmt.Errorf("config: map size %s = %d exceeds %d", name, n, limit)
		}
	}
	return nil
}

// MapSizes returns the capacities of the loaded maps (pinned maps keep
// the size they were created with).
func (d *Datapath) MapSizes() MapSizes {
	return MapSizes{
		Endpoints: d.lxc.GenieEndpoints.MaxEntries(),
		LXC:       d.lxc.GenieLxc.MaxEntries(),
		VNIs:      d.lxc.GenieVnis.MaxEntries(),
	}
}
