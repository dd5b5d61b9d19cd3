package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// MapRole says what an upgrade does with a pinned map whose layout the new
// data plane cannot use (see doc.go, "Upgrades").
type MapRole uint8

const (
	// MapDerived is state the agent rebuilds anyway (restore, VPC sync,
	// service sync, Open's config write). An upgrade replaces every
	// derived map with an empty one as soon as one of them changed, so
	// that maps that agree with each other (genie_vnis counts the local
	// entries of genie_endpoints) are rebuilt together.
	MapDerived MapRole = iota
	// MapFlow is per-flow state the agent cannot rebuild (NAT, chosen
	// backend): entries whose key and value convert field by field are
	// copied, the others are lost and counted.
	MapFlow
	// MapCounter is a counter array: values are carried over where the
	// index space overlaps, so metrics do not go backwards.
	MapCounter
	// MapTransient holds nothing that outlives a packet or a reader: a
	// ring buffer of events, a per-CPU scratch buffer. One that changed
	// is replaced by an empty one on its own (it is not part of the
	// derived group); unread events are lost. Unpinned scratch maps are
	// created by every load anyway and are listed only to have a role.
	MapTransient
)

// String returns "derived", "flow" or "counter".
func (r MapRole) String() string {
	switch r {
	case MapDerived:
		return "derived"
	case MapFlow:
		return "flow"
	case MapCounter:
		return "counter"
	case MapTransient:
		return "transient"
	}
	return fmt.Sprintf("role-%d", uint8(r))
}

// mapRoles is the role of every map of the objects, one line each
// (TestMapRoles fails on a map missing here, or listed and gone). The
// comment says why; docs/design.md ("Upgrades") says what is lost.
var mapRoles = map[string]MapRole{
	"genie_lxc":       MapDerived,   // pod behind a veth: restore rewrites every kept attachment
	"genie_endpoints": MapDerived,   // local entries (restore) and remote ones (each hosted VPC's sync)
	"genie_vnis":      MapDerived,   // counts genie_endpoints' local entries: rebuilt with them
	"genie_config":    MapDerived,   // node config: written by Open itself
	"genie_miss_seen": MapDerived,   // miss rate limit of unknown addresses: rebuilt with the endpoint and learned maps it is about
	"genie_svc":       MapDerived,   // service frontends: the service syncer's first pass
	"genie_maglev":    MapDerived,   // Maglev tables: written with their frontends
	"genie_lb_ports":  MapDerived,   // frontend/target port flags: written with the frontends
	"genie_drops":     MapCounter,   // drop counters (genie_drops_total)
	"genie_ct":        MapFlow,      // conntrack: NAT and backend of live service flows, egress SNAT on a gateway
	"genie_misses":    MapTransient, // ring buffer of miss reports: unread reports are lost (the next packet reports again)

	"genie_qos_ingress": MapDerived, // ingress token buckets, written with each pod (restore): a new bucket starts full

	"genie_trace_state":   MapDerived,   // trace switch, cleared at every start; its lost-event count restarts at 0
	"genie_trace":         MapTransient, // drop event ring: unread events are lost
	"genie_trace_scratch": MapTransient, // per-CPU header buffer of trace_drop, unpinned

	"genie_dir_cfg":   MapDerived,   // directory mode and shard count, written at start
	"genie_dir_shard": MapDerived,   // shard -> holders, from the directory ring
	"genie_dir_held":  MapDerived,   // records of the shards held here: the agent starts from empty and reloads them
	"genie_dir_lru":   MapDerived,   // learned remote endpoints: the agent empties them at every start anyway (stale after any stop: no invalidation reaches a stopped agent); relearned on the first miss
	"genie_dir_nodes": MapDerived,   // directory members, from the directory ring
	"genie_dir_stats": MapCounter,   // directory packet counters
	"genie_dir_via":   MapTransient, // per-CPU next hop handed back by directory_miss, unpinned

	"genie_vpc_routes":      MapDerived,   // VPC route tables (egress), from the store
	"genie_egress_select":   MapDerived,   // pod -> egress policy, from the store
	"genie_egress_policies": MapDerived,   // egress policies' gateway sets, from the store
	"genie_egress_gw":       MapDerived,   // gateway side: VPC -> egress address, from the store
	"genie_egress_ips":      MapDerived,   // egress addresses this node owns, from the store
	"genie_egress_flows":    MapFlow,      // pod side: a flow's gateway (an address, no policy id): losing it moves the flow to another gateway, which resets it
	"genie_egress_scratch":  MapTransient, // per-CPU frame buffer of the egress path, unpinned
}

// roleOf returns name's role; a map without one (TestMapRoles prevents
// that) is treated as derived: rebuilt, never trusted across layouts.
func roleOf(name string) MapRole { return mapRoles[name] } // zero value: MapDerived

// upgradeDir is the sub-directory of PinDir holding the replaced flow and
// counter maps while an upgrade is pending (the old programs still use
// them); its presence is the "upgrade pending" mark.
const upgradeDir = "upgrade"

// newPrefix names a replacement map pinned in the upgrade dir before it is
// renamed into place (bpffs refuses dots in names).
const newPrefix = "new-"

// MapLayout is the kernel-visible shape of a map.
type MapLayout struct {
	Type                                  ebpf.MapType
	KeySize, ValueSize, MaxEntries, Flags uint32
}

func (l MapLayout) String() string {
	return fmt.Sprintf("%s key %d value %d max %d flags %#x", l.Type, l.KeySize, l.ValueSize, l.MaxEntries, l.Flags)
}

func layoutOf(m *ebpf.Map) MapLayout {
	return MapLayout{m.Type(), m.KeySize(), m.ValueSize(), m.MaxEntries(), m.Flags()}
}

func layoutOfSpec(s *ebpf.MapSpec) MapLayout {
	return MapLayout{s.Type, s.KeySize, s.ValueSize, s.MaxEntries, s.Flags}
}

// MapMigration is what Open did with one pinned map it replaced.
type MapMigration struct {
	Map  string
	Role MapRole
	// Old is the pinned map's layout, New its replacement's.
	Old, New MapLayout
	// Reason is the incompatibility, or "rebuilt with the derived maps".
	Reason string
	// Entries is what the old map held. Kept were carried over; Lost
	// could not be (flow: no conversion or no room; counter: a non-zero
	// counter beyond the new index space). Derived maps keep nothing:
	// the agent refills them.
	Entries, Kept, Lost int
}

// String is one log line's worth.
func (m MapMigration) String() string {
	return fmt.Sprintf("%s (%s): %s -> %s (%s): %d entries, %d kept, %d lost", m.Map, m.Role, m.Old, m.New, m.Reason, m.Entries, m.Kept, m.Lost)
}

// upgrade is a pending upgrade: the old flow and counter maps, pinned under
// PinDir/upgrade, stay readable until FinishUpgrade catches up with what the
// old programs wrote since the copy.
type upgrade struct {
	dir    string
	report []MapMigration
	// snap holds the counters as copied, by map and key, so the catch-up
	// adds only what was counted after the copy (this process only).
	snap map[string]map[string][][]byte
}

// planned is one map of a migration plan.
type planned struct {
	name         string
	role         MapRole
	spec         *ebpf.MapSpec
	old          *ebpf.Map // the pinned map
	reason       string
	incompatible bool
	conv         *converter // flow and counter maps
}

// mapSpecs merges the pinned-by-name maps of the objects' specs.
func mapSpecs(specs ...*ebpf.CollectionSpec) map[string]*ebpf.MapSpec {
	out := map[string]*ebpf.MapSpec{}
	for _, cs := range specs {
		for name, ms := range cs.Maps {
			if ms.Pinning == ebpf.PinByName {
				if _, ok := out[name]; !ok {
					out[name] = ms
				}
			}
		}
	}
	return out
}

// migrate replaces the pinned maps under pinDir that the specs cannot use
// (ErrMapIncompatible), as their roles say, before the objects are loaded
// again. It checks everything first and changes nothing on error.
func migrate(pinDir string, specs ...*ebpf.CollectionSpec) (*upgrade, error) {
	plan, err := planMigration(pinDir, mapSpecs(specs...))
	defer func() {
		for _, p := range plan {
			p.old.Close()
		}
	}()
	if err != nil || len(plan) == 0 {
		return nil, err
	}
	up := &upgrade{dir: filepath.Join(pinDir, upgradeDir), snap: map[string]map[string][][]byte{}}
	if err := os.Mkdir(up.dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("migrate maps: create %s: %w", up.dir, err)
	}
	// Half-built replacements of an interrupted run.
	if tmps, _ := filepath.Glob(filepath.Join(up.dir, newPrefix+"*")); len(tmps) > 0 {
		for _, t := range tmps {
			_ = os.Remove(t)
		}
	}
	for _, p := range plan {
		mm, err := up.replace(pinDir, p)
		if err != nil {
			return nil, fmt.Errorf("migrate map %s: %w", p.name, err)
		}
		up.report = append(up.report, mm)
	}
	return up, nil
}

// planMigration loads every pinned map and decides which to replace.
// Replacements forced by the derived group come first and the incompatible
// maps last, so that an agent killed half-way finds an incompatible map
// again and redoes the whole group.
func planMigration(pinDir string, specs map[string]*ebpf.MapSpec) ([]*planned, error) {
	var all []*planned
	fail := func(err error) ([]*planned, error) {
		for _, p := range all {
			p.old.Close()
		}
		return nil, err
	}
	derivedChanged := false
	names := make([]string, 0, len(specs))
	for n := range specs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		spec := specs[name]
		old, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue // created by the load
		}
		if err != nil {
			return fail(fmt.Errorf("migrate maps: load pinned %s: %w", name, err))
		}
		p := &planned{name: name, role: roleOf(name), spec: spec, old: old}
		all = append(all, p)
		if cerr := spec.Compatible(old); cerr != nil {
			if !errors.Is(cerr, ebpf.ErrMapIncompatible) {
				return fail(fmt.Errorf("migrate maps: %s: %w", name, cerr))
			}
			p.incompatible = true
			p.reason = strings.TrimSuffix(cerr.Error(), ": "+ebpf.ErrMapIncompatible.Error())
			if p.role == MapDerived {
				derivedChanged = true
			}
		}
	}
	var plan, last, unused []*planned
	for _, p := range all {
		switch {
		case p.incompatible:
			last = append(last, p)
		case p.role == MapDerived && derivedChanged:
			p.reason = "rebuilt with the derived maps"
			plan = append(plan, p)
		default:
			unused = append(unused, p)
			continue
		}
		if err := p.check(); err != nil {
			return fail(err)
		}
		if p.role == MapFlow || p.role == MapCounter {
			c, err := newConverter(p.old, p.spec)
			if err != nil {
				p.conv = &converter{why: err.Error()}
			} else {
				p.conv = c
			}
		}
	}
	for _, p := range unused {
		p.old.Close()
	}
	return append(plan, last...), nil
}

// check refuses to replace a derived hash map by one too small for what it
// holds: the agent's refill would fail half-way (an operator shrinking
// --map-sizes below the node's entries). LRU maps evict by design, flow
// maps report what did not fit, arrays have fixed contents.
func (p *planned) check() error {
	if p.role != MapDerived || p.spec.MaxEntries >= p.old.MaxEntries() {
		return nil
	}
	switch p.spec.Type {
	case ebpf.Hash, ebpf.HashOfMaps, ebpf.PerCPUHash:
	default:
		return nil
	}
	n, err := countEntries(p.old)
	if err != nil {
		return fmt.Errorf("migrate maps: count %s: %w", p.name, err)
	}
	if n > int(p.spec.MaxEntries) {
		return fmt.Errorf("migrate maps: %s holds %d entries, more than its new size %d: keep a size of at least %d (--map-sizes) or remove entries first", p.name, n, p.spec.MaxEntries, n)
	}
	return nil
}

func countEntries(m *ebpf.Map) (int, error) {
	var k []byte
	n := 0
	it := m.Iterate()
	var v []byte
	if m.Type() == ebpf.PerCPUHash || m.Type() == ebpf.PerCPUArray || m.Type() == ebpf.LRUCPUHash {
		var pv [][]byte
		for it.Next(&k, &pv) {
			n++
		}
		return n, it.Err()
	}
	if m.Type() == ebpf.HashOfMaps || m.Type() == ebpf.ArrayOfMaps {
		var id ebpf.MapID
		for it.Next(&k, &id) {
			n++
		}
		return n, it.Err()
	}
	for it.Next(&k, &v) {
		n++
	}
	return n, it.Err()
}

// replace builds p's new map, fills it as the role says and pins it in
// place of the old one. The old flow or counter map is pinned again under
// the upgrade dir first, for FinishUpgrade; the programs still attached
// keep using it either way.
func (up *upgrade) replace(pinDir string, p *planned) (MapMigration, error) {
	mm := MapMigration{Map: p.name, Role: p.role, Old: layoutOf(p.old), New: layoutOfSpec(p.spec), Reason: p.reason}
	spec := p.spec.Copy()
	spec.Pinning = ebpf.PinNone
	nm, err := ebpf.NewMap(spec)
	if err != nil {
		return mm, fmt.Errorf("create: %w", err)
	}
	defer nm.Close()
	mm.New = layoutOf(nm)
	switch p.role {
	case MapTransient:
		// Nothing to count or carry (ring buffers do not iterate).
	case MapDerived:
		if n, err := countEntries(p.old); err == nil {
			mm.Entries = n
		}
		if p.old.Type() == ebpf.Array {
			// Arrays list every index: count the written ones.
			if _, vals, err := entries(p.old); err == nil {
				mm.Entries = 0
				for _, v := range vals {
					if !allZero(v) {
						mm.Entries++
					}
				}
			}
		}
	case MapFlow:
		mm.Entries, mm.Kept, mm.Lost, err = copyFlows(p.old, nm, p.conv, false)
	case MapCounter:
		var snap map[string][][]byte
		mm.Entries, mm.Kept, mm.Lost, snap, err = copyCounters(p.old, nm, p.conv)
		up.snap[p.name] = snap
	}
	if err != nil {
		return mm, err
	}
	path := filepath.Join(pinDir, p.name)
	if p.role == MapFlow || p.role == MapCounter {
		keep := filepath.Join(up.dir, p.name)
		_ = os.Remove(keep) // an earlier upgrade's, if one never finished
		if err := p.old.Pin(keep); err != nil {
			return mm, fmt.Errorf("keep old map: %w", err)
		}
	}
	tmp := filepath.Join(up.dir, newPrefix+p.name)
	if err := nm.Pin(tmp); err != nil {
		return mm, fmt.Errorf("pin: %w", err)
	}
	// rename(2) replaces the old pin atomically: the path never dangles.
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return mm, fmt.Errorf("pin in place: %w", err)
	}
	return mm, nil
}

// perCPU reports whether m's values are per CPU.
func perCPU(t ebpf.MapType) bool {
	switch t {
	case ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUCPUHash, ebpf.PerCPUCGroupStorage:
		return true
	}
	return false
}

// entries returns every entry of m as raw bytes (per-CPU values
// concatenated, one valueSize slot per possible CPU).
func entries(m *ebpf.Map) (keys, vals [][]byte, err error) {
	var k []byte
	it := m.Iterate()
	if perCPU(m.Type()) {
		var v [][]byte
		for it.Next(&k, &v) {
			keys = append(keys, slices.Clone(k))
			vals = append(vals, bytes.Join(v, nil))
		}
	} else {
		var v []byte
		for it.Next(&k, &v) {
			keys = append(keys, slices.Clone(k))
			vals = append(vals, slices.Clone(v))
		}
	}
	return keys, vals, it.Err()
}

// splitCPU cuts a concatenated per-CPU value into size-byte slots.
func splitCPU(v []byte, size int) [][]byte {
	var out [][]byte
	for len(v) >= size {
		out = append(out, v[:size:size])
		v = v[size:]
	}
	return out
}

// convertValue converts a raw (possibly per-CPU) value.
func (c *converter) convertValue(m *ebpf.Map, v []byte, oldSize int) []byte {
	if !perCPU(m.Type()) {
		return c.value(v)
	}
	var out []byte
	for _, s := range splitCPU(v, oldSize) {
		out = append(out, c.value(s)...)
	}
	return out
}

func put(m *ebpf.Map, k, v []byte, flags ebpf.MapUpdateFlags) error {
	if perCPU(m.Type()) {
		return m.Update(k, splitCPU(v, int(m.ValueSize())), flags)
	}
	return m.Update(k, v, flags)
}

// copyFlows copies old's entries that convert into nm. With onlyNew,
// entries nm already has are left alone (the catch-up: the new programs
// own them now).
func copyFlows(old, nm *ebpf.Map, c *converter, onlyNew bool) (n, kept, lost int, err error) {
	keys, vals, err := entries(old)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("read: %w", err)
	}
	flags := ebpf.UpdateAny
	if onlyNew {
		flags = ebpf.UpdateNoExist
	}
	for i, k := range keys {
		if c.why != "" {
			lost++
			continue
		}
		nk, _ := c.key(k)
		nv := c.convertValue(old, vals[i], int(old.ValueSize()))
		switch err := put(nm, nk, nv, flags); {
		case err == nil:
			kept++
		case errors.Is(err, ebpf.ErrKeyExist):
			// The new programs' entry wins.
		case errors.Is(err, unix.E2BIG):
			lost++ // no room (a smaller map)
		default:
			return len(keys), kept, lost, fmt.Errorf("write: %w", err)
		}
	}
	return len(keys), kept, lost, nil
}

// copyCounters copies old's counters into nm where the index exists in
// both, and returns what it copied (the catch-up's baseline).
func copyCounters(old, nm *ebpf.Map, c *converter) (n, kept, lost int, snap map[string][][]byte, err error) {
	keys, vals, err := entries(old)
	if err != nil {
		return 0, 0, 0, nil, fmt.Errorf("read: %w", err)
	}
	snap = map[string][][]byte{}
	for i, k := range keys {
		if allZero(vals[i]) {
			continue // nothing to carry (arrays list every index)
		}
		n++
		if c.why != "" {
			lost++
			continue
		}
		nk, _ := c.key(k)
		nv := c.convertValue(old, vals[i], int(old.ValueSize()))
		switch err := put(nm, nk, nv, ebpf.UpdateAny); {
		case err == nil:
			kept++
			snap[string(k)] = splitCPU(vals[i], int(old.ValueSize()))
		case errors.Is(err, ebpf.ErrKeyNotExist), errors.Is(err, unix.E2BIG), errors.Is(err, unix.EINVAL):
			lost++ // beyond the new index space
		default:
			return n, kept, lost, nil, fmt.Errorf("write: %w", err)
		}
	}
	return n, kept, lost, snap, nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// catchUpCounters adds to nm what the old programs counted since snap.
// Values are summed as u64 words (every counter map is made of them); a
// value of another shape is not caught up.
func catchUpCounters(old, nm *ebpf.Map, c *converter, snap map[string][][]byte) (int, error) {
	if snap == nil || c.why != "" || old.ValueSize()%8 != 0 || nm.ValueSize()%8 != 0 {
		return 0, nil
	}
	keys, vals, err := entries(old)
	if err != nil {
		return 0, err
	}
	added := 0
	for i, k := range keys {
		base := snap[string(k)]
		nk, _ := c.key(k)
		cur := splitCPU(vals[i], int(old.ValueSize()))
		delta := make([][]byte, len(cur))
		counted := false
		for cpu, v := range cur {
			var b []byte
			if cpu < len(base) {
				b = base[cpu]
			}
			d := make([]byte, len(v))
			for w := 0; w+8 <= len(v); w += 8 {
				x := binary.NativeEndian.Uint64(v[w:])
				if b != nil {
					x -= binary.NativeEndian.Uint64(b[w:])
				}
				binary.NativeEndian.PutUint64(d[w:], x)
				counted = counted || x != 0
			}
			delta[cpu] = c.value(d)
		}
		if !counted {
			continue
		}
		var have [][]byte
		if perCPU(nm.Type()) {
			if err := nm.Lookup(nk, &have); err != nil {
				continue // beyond the new index space
			}
		} else {
			var v []byte
			if err := nm.Lookup(nk, &v); err != nil {
				continue
			}
			have = [][]byte{v}
		}
		for cpu := range have {
			if cpu >= len(delta) {
				break
			}
			for w := 0; w+8 <= len(have[cpu]); w += 8 {
				x := binary.NativeEndian.Uint64(have[cpu][w:]) + binary.NativeEndian.Uint64(delta[cpu][w:])
				binary.NativeEndian.PutUint64(have[cpu][w:], x)
			}
		}
		if perCPU(nm.Type()) {
			err = nm.Update(nk, have, ebpf.UpdateExist)
		} else {
			err = nm.Update(nk, have[0], ebpf.UpdateExist)
		}
		if err != nil {
			return added, err
		}
		added++
	}
	return added, nil
}

// pendingUpgrade returns the pending upgrade under pinDir: the one migrate
// just did, or one an earlier agent started and did not finish (it
// stopped before its programs were attached). Nil if none.
func pendingUpgrade(pinDir string, up *upgrade) *upgrade {
	if up != nil {
		return up
	}
	dir := filepath.Join(pinDir, upgradeDir)
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	return &upgrade{dir: dir}
}

// UpgradeCatchUp is what FinishUpgrade carried over from the old maps.
type UpgradeCatchUp struct {
	// Flows are flow entries the old programs created after the copy.
	Flows int
	// Counters are counter slots that counted after the copy.
	Counters int
}

// finish catches up with the old programs' writes and unpins the old maps.
func (d *Datapath) finishUpgrade() (UpgradeCatchUp, error) {
	var out UpgradeCatchUp
	up := d.up
	if up == nil {
		return out, nil
	}
	specs := mapSpecs(d.specs...)
	ents, err := os.ReadDir(up.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return out, fmt.Errorf("finish upgrade: %w", err)
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		spec := specs[name]
		if strings.HasPrefix(name, newPrefix) || spec == nil {
			continue
		}
		if err := func() error {
			old, err := ebpf.LoadPinnedMap(filepath.Join(up.dir, name), nil)
			if err != nil {
				return err
			}
			defer old.Close()
			nm, err := ebpf.LoadPinnedMap(filepath.Join(d.cfg.PinDir, name), nil)
			if err != nil {
				return err
			}
			defer nm.Close()
			c, err := newConverter(old, spec)
			if err != nil {
				return nil // nothing converts: nothing to catch up
			}
			switch roleOf(name) {
			case MapFlow:
				_, kept, _, err := copyFlows(old, nm, c, true)
				out.Flows += kept
				return err
			case MapCounter:
				n, err := catchUpCounters(old, nm, c, up.snap[name])
				out.Counters += n
				return err
			}
			return nil
		}(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Keep the old maps: the next agent tries again.
		return out, fmt.Errorf("finish upgrade: %w", err)
	}
	if err := os.RemoveAll(up.dir); err != nil {
		return out, fmt.Errorf("finish upgrade: unpin old maps: %w", err)
	}
	d.up = nil
	return out, nil
}

// converter turns an entry of an old map's layout into the new one, field
// by field by BTF member name: a field kept under its name (same size) is
// copied, a new field is zero, a field that changed size or vanished makes
// the entry unconvertible. Without BTF on either side only identical
// layouts convert (byte copy).
type converter struct {
	k, v fieldPlan
	// why is set when no entry converts.
	why string
}

type fieldPlan struct {
	newSize int
	copies  []fieldCopy // nil with same: a byte copy
	same    bool
}

type fieldCopy struct{ from, to, n int }

func (c *converter) key(k []byte) ([]byte, bool) { return c.k.apply(k), true }

func (c *converter) value(v []byte) []byte { return c.v.apply(v) }

func (f fieldPlan) apply(b []byte) []byte {
	out := make([]byte, f.newSize)
	if f.same {
		copy(out, b)
		return out
	}
	for _, c := range f.copies {
		if c.from+c.n <= len(b) {
			copy(out[c.to:c.to+c.n], b[c.from:c.from+c.n])
		}
	}
	return out
}

func newConverter(old *ebpf.Map, spec *ebpf.MapSpec) (*converter, error) {
	oldKey, oldVal, _ := mapBTF(old)
	k, err := planFields("key", oldKey, spec.Key, int(old.KeySize()), int(spec.KeySize))
	if err != nil {
		return nil, err
	}
	v, err := planFields("value", oldVal, spec.Value, int(old.ValueSize()), int(spec.ValueSize))
	if err != nil {
		return nil, err
	}
	return &converter{k: k, v: v}, nil
}

// planFields maps the old type's fields onto the new type's.
func planFields(what string, oldT, newT btf.Type, oldSize, newSize int) (fieldPlan, error) {
	if oldT == nil || newT == nil {
		if oldSize == newSize {
			return fieldPlan{newSize: newSize, same: true}, nil
		}
		return fieldPlan{}, fmt.Errorf("%s size %d -> %d without BTF to convert it", what, oldSize, newSize)
	}
	ost, nst := structOf(oldT), structOf(newT)
	if ost == nil || nst == nil {
		// Scalars and arrays: the same size, or an unsigned integer grown
		// (little-endian: the low bytes come first).
		if oldSize == newSize {
			return fieldPlan{newSize: newSize, same: true}, nil
		}
		oi, ok1 := btf.UnderlyingType(oldT).(*btf.Int)
		ni, ok2 := btf.UnderlyingType(newT).(*btf.Int)
		if ok1 && ok2 && oi.Encoding&btf.Signed == 0 && ni.Encoding&btf.Signed == 0 && newSize > oldSize && binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
			return fieldPlan{newSize: newSize, copies: []fieldCopy{{0, 0, oldSize}}}, nil
		}
		return fieldPlan{}, fmt.Errorf("%s type %s (%d bytes) -> %s (%d bytes)", what, oldT, oldSize, newT, newSize)
	}
	byName := map[string]btf.Member{}
	for _, m := range nst.Members {
		byName[m.Name] = m
	}
	f := fieldPlan{newSize: newSize}
	for _, om := range ost.Members {
		if om.Name == "" || strings.HasPrefix(om.Name, "pad") || strings.HasPrefix(om.Name, "_") {
			continue // padding carries nothing
		}
		nm, ok := byName[om.Name]
		if !ok {
			return fieldPlan{}, fmt.Errorf("%s field %s was removed", what, om.Name)
		}
		osz, err1 := btf.Sizeof(om.Type)
		nsz, err2 := btf.Sizeof(nm.Type)
		if err1 != nil || err2 != nil || osz != nsz || om.BitfieldSize != 0 || nm.BitfieldSize != 0 || om.Offset%8 != 0 || nm.Offset%8 != 0 {
			return fieldPlan{}, fmt.Errorf("%s field %s changed its size or is a bitfield", what, om.Name)
		}
		f.copies = append(f.copies, fieldCopy{from: int(om.Offset.Bytes()), to: int(nm.Offset.Bytes()), n: osz})
	}
	return f, nil
}

func structOf(t btf.Type) *btf.Struct {
	s, _ := btf.UnderlyingType(t).(*btf.Struct)
	return s
}

// bpfMapInfo is the head of the kernel's struct bpf_map_info, up to the BTF
// type IDs (ebpf.MapInfo does not expose them).
type bpfMapInfo struct {
	Type, ID, KeySize, ValueSize, MaxEntries, MapFlags uint32
	Name                                               [16]byte
	Ifindex, BtfVmlinuxValueTypeID                     uint32
	NetnsDev, NetnsIno                                 uint64
	BtfID, BtfKeyTypeID, BtfValueTypeID, BtfVmlinuxID  uint32
	MapExtra                                           uint64
}

// mapBTF returns the key and value types a pinned map was created with
// (nil if it has no BTF).
func mapBTF(m *ebpf.Map) (key, value btf.Type, err error) {
	info := new(bpfMapInfo) // on the heap: the kernel writes through a raw address
	attr := &struct {
		fd, infoLen uint32
		info        uint64
	}{uint32(m.FD()), uint32(unsafe.Sizeof(*info)), uint64(uintptr(unsafe.Pointer(info)))}
	const bpfObjGetInfoByFD = 15
	_, _, errno := unix.Syscall(unix.SYS_BPF, bpfObjGetInfoByFD, uintptr(unsafe.Pointer(attr)), unsafe.Sizeof(*attr))
	runtime.KeepAlive(info)
	if errno != 0 {
		return nil, nil, fmt.Errorf("map info: %w", errno)
	}
	if info.BtfID == 0 {
		return nil, nil, nil
	}
	h, err := btf.NewHandleFromID(btf.ID(info.BtfID))
	if err != nil {
		return nil, nil, err
	}
	defer h.Close()
	spec, err := h.Spec(nil)
	if err != nil {
		return nil, nil, err
	}
	if info.BtfKeyTypeID != 0 {
		key, _ = spec.TypeByID(btf.TypeID(info.BtfKeyTypeID))
	}
	if info.BtfValueTypeID != 0 {
		value, _ = spec.TypeByID(btf.TypeID(info.BtfValueTypeID))
	}
	return key, value, nil
}

// Migrations returns the maps this Open replaced because the pinned ones
// did not fit the new data plane (another version or other map sizes),
// nil when every pinned map was re-adopted as it was.
func (d *Datapath) Migrations() []MapMigration {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.up == nil {
		return nil
	}
	return slices.Clone(d.up.report)
}

// UpgradePending reports whether maps were replaced, by this Open or by an
// earlier agent that stopped before finishing: the programs still attached
// use the old maps, and the new derived maps start empty. The caller must
// write every local endpoint, remote endpoint and service BEFORE attaching
// the new programs (the old ones keep forwarding meanwhile), then call
// FinishUpgrade.
func (d *Datapath) UpgradePending() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.up != nil
}

// FinishUpgrade ends a pending upgrade once the new programs are attached
// everywhere: it copies the flow entries the old programs created since
// Open and adds what they counted, then unpins the old maps (freed with
// the last old program). A no-op without a pending upgrade. On error the
// old maps stay pinned and the next agent tries again.
func (d *Datapath) FinishUpgrade() (UpgradeCatchUp, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.finishUpgrade()
}
