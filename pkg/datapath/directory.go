package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// The endpoint directory's maps (bpf/lib/maps_directory.h, directory.h):
// the agent in directory mode writes the shard-to-holders array from the
// directory's placement, the held records of its shards, the set of
// member nodes, and the remote endpoints it learned; BPF only reads them.

// MaxDirectoryReplicas is the largest replica count the data plane's shard
// array holds (DIR_MAX_REPLICAS).
const MaxDirectoryReplicas = 7

// DirectoryEntry is a record in genie_dir_held or genie_dir_lru: the
// endpoint {VNI, IP} lives on the node NodeIP with MAC; Version is its
// store revision.
type DirectoryEntry struct {
	VNI     uint32
	IP      netip.Addr
	NodeIP  netip.Addr
	MAC     net.HardwareAddr
	Version uint64
}

// DirectoryStat names a counter of genie_dir_stats (DIR_STAT_* in
// maps_directory.h).
type DirectoryStat uint32

// Directory counters.
const (
	// DirStatLRUHit: a pod's packet sent direct from a learned entry.
	DirStatLRUHit DirectoryStat = 0
	// DirStatHeldHit: a pod's packet sent direct from a held record.
	DirStatHeldHit DirectoryStat = 1
	// DirStatBounced: a pod's packet to an unknown endpoint bounced to a
	// holder.
	DirStatBounced DirectoryStat = 2
	// DirStatForwarded: a bounced packet this holder forwarded.
	DirStatForwarded DirectoryStat = 3
	// DirStatDelivered: a bounced packet that passed this hosting node's
	// bouncer checks (a holder of its shard, on behalf of a member).
	DirStatDelivered DirectoryStat = 4
	// DirStatUnverified: a packet accepted from a member before its inner
	// source was learned (then reported and learned).
	DirStatUnverified DirectoryStat = 5
)

var dirStatNames = map[DirectoryStat]string{
	DirStatLRUHit:     "lru_hit",
	DirStatHeldHit:    "held_hit",
	DirStatBounced:    "bounced",
	DirStatForwarded:  "forwarded",
	DirStatDelivered:  "delivered",
	DirStatUnverified: "unverified_source",
}

// String returns the counter's metric label, e.g. "bounced".
func (s DirectoryStat) String() string {
	if n, ok := dirStatNames[s]; ok {
		return n
	}
	return fmt.Sprintf("stat_%d", uint32(s))
}

func (e DirectoryEntry) check(what string) error {
	if err := errors.Join(checkVNI(e.VNI), checkIP("ip", e.IP), checkMAC("mac", e.MAC), checkIP("node ip", e.NodeIP)); err != nil {
		return fmt.Errorf("%s vni %d ip %s: %w", what, e.VNI, e.IP, err)
	}
	return nil
}

func (e DirectoryEntry) value() lxcDirEntry {
	v := lxcDirEntry{Ep: lxcEndpointInfo{NodeIp: ip4(e.NodeIP)}, Version: e.Version}
	copy(v.Ep.Mac[:], e.MAC)
	return v
}

func dirEntryOf(k lxcEndpointKey, v lxcDirEntry) DirectoryEntry {
	return DirectoryEntry{VNI: k.Vni, IP: addrFrom(k.Ip), NodeIP: addrFrom(v.Ep.NodeIp),
		MAC: append(net.HardwareAddr(nil), v.Ep.Mac[:]...), Version: v.Version}
}

// SetDirectoryMode turns directory mode on (shards is the directory's
// shard count, a power of two no larger than the shard array) or off.
// Off, a pod's packet to an unknown endpoint is a counted NO_ROUTE drop
// and the uplink checks sources against genie_endpoints only.
func (d *Datapath) SetDirectoryMode(enabled bool, shards int) error {
	cfg := lxcDirConfig{}
	if enabled {
		if shards <= 0 || shards&(shards-1) != 0 || uint32(shards) > d.lxc.GenieDirShard.MaxEntries() {
			return fmt.Errorf("set directory mode: %d shards: not a power of two up to the shard array's %d", shards, d.lxc.GenieDirShard.MaxEntries())
		}
		cfg = lxcDirConfig{Enabled: 1, ShardMask: uint32(shards - 1)}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.lxc.GenieDirCfg.Put(uint32(0), &cfg); err != nil {
		return mapErr(d.lxc.GenieDirCfg, "set directory mode: update", err)
	}
	return nil
}

// SetDirectoryShard writes the holders of shard (underlay IPv4s, highest
// rank first; at most MaxDirectoryReplicas are kept).
func (d *Datapath) SetDirectoryShard(shard uint32, holders []netip.Addr) error {
	var v lxcDirShard
	for _, h := range holders {
		if int(v.N) == len(v.Holder) {
			break
		}
		if !h.Is4() {
			return fmt.Errorf("set directory shard %d: holder %q is not ipv4", shard, h)
		}
		v.Holder[v.N] = ip4(h)
		v.N++
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.lxc.GenieDirShard.Put(shard, &v); err != nil {
		return mapErr(d.lxc.GenieDirShard, fmt.Sprintf("set directory shard %d: update", shard), err)
	}
	return nil
}

// DirectoryShard returns the holders written for shard.
func (d *Datapath) DirectoryShard(shard uint32) ([]netip.Addr, error) {
	var v lxcDirShard
	if err := d.lxc.GenieDirShard.Lookup(shard, &v); err != nil {
		return nil, fmt.Errorf("read directory shard %d: %w", shard, err)
	}
	out := make([]netip.Addr, 0, v.N)
	for i := uint32(0); i < v.N && int(i) < len(v.Holder); i++ {
		out = append(out, addrFrom(v.Holder[i]))
	}
	return out, nil
}

// SetDirectoryNodes makes the member set exactly ips (the underlay IPv4s
// of the directory's live members).
func (d *Datapath) SetDirectoryNodes(ips []netip.Addr) error {
	want := make(map[uint32]bool, len(ips))
	for _, ip := range ips {
		if !ip.Is4() {
			return fmt.Errorf("set directory nodes: %q is not ipv4", ip)
		}
		want[ip4(ip)] = true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.lxc.GenieDirNodes
	var k, v uint32
	var stale []uint32
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("set directory nodes: %w", err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return mapErr(m, "set directory nodes: delete", err)
		}
	}
	one := uint32(1)
	for k := range want {
		if err := m.Put(k, one); err != nil {
			return mapErr(m, "set directory nodes: update", err)
		}
	}
	return nil
}

// UpsertHeld writes a record of a shard this node holds.
func (d *Datapath) UpsertHeld(e DirectoryEntry) error {
	if err := e.check("upsert held record"); err != nil {
		return err
	}
	v := e.value()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.lxc.GenieDirHeld.Put(lxcEndpointKey{Vni: e.VNI, Ip: ip4(e.IP)}, &v); err != nil {
		return mapErr(d.lxc.GenieDirHeld, fmt.Sprintf("upsert held record vni %d ip %s: update", e.VNI, e.IP), err)
	}
	return nil
}

// DeleteHeld removes a held record (absent is no error).
func (d *Datapath) DeleteHeld(vni uint32, ip netip.Addr) error {
	if err := errors.Join(checkVNI(vni), checkIP("ip", ip)); err != nil {
		return fmt.Errorf("delete held record vni %d ip %s: %w", vni, ip, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.lxc.GenieDirHeld.Delete(lxcEndpointKey{Vni: vni, Ip: ip4(ip)}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return mapErr(d.lxc.GenieDirHeld, fmt.Sprintf("delete held record vni %d ip %s", vni, ip), err)
	}
	return nil
}

// HeldEntries returns every held record.
func (d *Datapath) HeldEntries() ([]DirectoryEntry, error) { return dirEntries(d.lxc.GenieDirHeld) }

// RemoteEntries returns every learned remote endpoint.
func (d *Datapath) RemoteEntries() ([]DirectoryEntry, error) { return dirEntries(d.lxc.GenieDirLru) }

func dirEntries(m *ebpf.Map) ([]DirectoryEntry, error) {
	var (
		out []DirectoryEntry
		k   lxcEndpointKey
		v   lxcDirEntry
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, dirEntryOf(k, v))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", mapName(m), err)
	}
	return out, nil
}

// RemoteEntry returns the learned entry of {vni, ip}, if any.
func (d *Datapath) RemoteEntry(vni uint32, ip netip.Addr) (DirectoryEntry, bool, error) {
	k := lxcEndpointKey{Vni: vni, Ip: ip4(ip)}
	var v lxcDirEntry
	if err := d.lxc.GenieDirLru.Lookup(&k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return DirectoryEntry{}, false, nil
		}
		return DirectoryEntry{}, false, fmt.Errorf("read learned entry vni %d ip %s: %w", vni, ip, err)
	}
	return dirEntryOf(k, v), true, nil
}

// LearnRemote installs a looked-up remote endpoint in the learned LRU,
// unless the entry there is at least as new (a larger version wins). It
// reports whether it wrote.
func (d *Datapath) LearnRemote(e DirectoryEntry) (bool, error) {
	if err := e.check("learn remote endpoint"); err != nil {
		return false, err
	}
	k := lxcEndpointKey{Vni: e.VNI, Ip: ip4(e.IP)}
	v := e.value()
	d.mu.Lock()
	defer d.mu.Unlock()
	var cur lxcDirEntry
	if d.lxc.GenieDirLru.Lookup(&k, &cur) == nil && cur.Version >= e.Version {
		return false, nil
	}
	if err := d.lxc.GenieDirLru.Put(&k, &v); err != nil {
		return false, mapErr(d.lxc.GenieDirLru, fmt.Sprintf("learn remote endpoint vni %d ip %s: update", e.VNI, e.IP), err)
	}
	return true, nil
}

// InvalidateRemote applies a directory invalidation to the learned LRU:
// the entry of {e.VNI, e.IP}, if it is older than e.Version, is deleted
// (deleted set) or overwritten with e. An absent entry stays absent (the
// node learns again on its next miss). It reports whether it changed
// anything.
func (d *Datapath) InvalidateRemote(e DirectoryEntry, deleted bool) (bool, error) {
	if err := errors.Join(checkVNI(e.VNI), checkIP("ip", e.IP)); err != nil {
		return false, fmt.Errorf("invalidate remote endpoint vni %d ip %s: %w", e.VNI, e.IP, err)
	}
	if !deleted {
		if err := e.check("invalidate remote endpoint"); err != nil {
			return false, err
		}
	}
	k := lxcEndpointKey{Vni: e.VNI, Ip: ip4(e.IP)}
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.lxc.GenieDirLru
	var cur lxcDirEntry
	if err := m.Lookup(&k, &cur); err != nil || cur.Version >= e.Version {
		return false, nil
	}
	if deleted {
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return false, mapErr(m, fmt.Sprintf("invalidate remote endpoint vni %d ip %s: delete", e.VNI, e.IP), err)
		}
		return true, nil
	}
	v := e.value()
	if err := m.Update(&k, &v, ebpf.UpdateExist); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return false, nil // evicted meanwhile
		}
		return false, mapErr(m, fmt.Sprintf("invalidate remote endpoint vni %d ip %s: update", e.VNI, e.IP), err)
	}
	return true, nil
}

// DeleteRemote removes a learned entry (absent is no error).
func (d *Datapath) DeleteRemote(vni uint32, ip netip.Addr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.lxc.GenieDirLru.Delete(lxcEndpointKey{Vni: vni, Ip: ip4(ip)}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return mapErr(d.lxc.GenieDirLru, fmt.Sprintf("delete learned entry vni %d ip %s", vni, ip), err)
	}
	return nil
}

// DirectoryStats returns the directory's data plane counters, summed over
// CPUs, by name.
func (d *Datapath) DirectoryStats() (map[DirectoryStat]uint64, error) {
	out := make(map[DirectoryStat]uint64, len(dirStatNames))
	var per []uint64
	for s := range dirStatNames {
		if err := d.lxc.GenieDirStats.Lookup(uint32(s), &per); err != nil {
			return nil, fmt.Errorf("read directory counter %s: %w", s, err)
		}
		var sum uint64
		for _, c := range per {
			sum += c
		}
		out[s] = sum
	}
	return out, nil
}

// DirectoryMaps is a read-only handle on a node's pinned learned and
// held maps, for tests and tools outside the agent (e.g. timing when an
// entry appears).
type DirectoryMaps struct{ learned, held *ebpf.Map }

// OpenDirectoryMaps opens the learned LRU and the held records pinned
// under pinDir.
func OpenDirectoryMaps(pinDir string) (*DirectoryMaps, error) {
	ro := &ebpf.LoadPinOptions{ReadOnly: true}
	l, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, lxcMapGenieDirLru), ro)
	if err != nil {
		return nil, fmt.Errorf("open learned map in %s: %w", pinDir, err)
	}
	h, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, lxcMapGenieDirHeld), ro)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("open held map in %s: %w", pinDir, err)
	}
	return &DirectoryMaps{learned: l, held: h}, nil
}

func lookupDir(m *ebpf.Map, vni uint32, ip netip.Addr) (DirectoryEntry, bool) {
	k := lxcEndpointKey{Vni: vni, Ip: ip4(ip)}
	var v lxcDirEntry
	if m.Lookup(&k, &v) != nil {
		return DirectoryEntry{}, false
	}
	return dirEntryOf(k, v), true
}

// Learned returns the learned entry of {vni, ip}, if any.
func (d *DirectoryMaps) Learned(vni uint32, ip netip.Addr) (DirectoryEntry, bool) {
	return lookupDir(d.learned, vni, ip)
}

// Held returns the held record of {vni, ip}, if any.
func (d *DirectoryMaps) Held(vni uint32, ip netip.Addr) (DirectoryEntry, bool) {
	return lookupDir(d.held, vni, ip)
}

// Close releases the handles.
func (d *DirectoryMaps) Close() error { return errors.Join(d.learned.Close(), d.held.Close()) }

// ClearDirectoryEntries empties the held records and the learned LRU: a
// starting agent cannot know which of a previous run's entries are still
// true (it received no invalidation meanwhile), so it starts from nothing
// and learns again on demand (packets bounce through a holder meanwhile).
// It returns how many entries it removed.
func (d *Datapath) ClearDirectoryEntries() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, m := range []*ebpf.Map{d.lxc.GenieDirHeld, d.lxc.GenieDirLru} {
		var keys []lxcEndpointKey
		var k lxcEndpointKey
		var v lxcDirEntry
		it := m.Iterate()
		for it.Next(&k, &v) {
			keys = append(keys, k)
		}
		if err := it.Err(); err != nil {
			return n, fmt.Errorf("clear %s: %w", mapName(m), err)
		}
		for _, k := range keys {
			if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return n, mapErr(m, "clear: delete", err)
			}
			n++
		}
	}
	return n, nil
}
