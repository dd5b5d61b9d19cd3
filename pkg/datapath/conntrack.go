package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Conntrack entry flags and TCP states (bpf/lib/maps_lb.h).
const (
	ctFlagSNAT  = 0x1
	ctFlagDNAT  = 0x2
	ctFlagReply = 0x4
	// ctFlagRST marks the direction a TCP RST crossed: once that entry
	// expires the pair is over, whatever its partner's deadline.
	ctFlagRST = 0x8
	// ctFlagEgress marks egress SNAT pairs, whose reply key has VNI 0
	// (CT_F_EGRESS in bpf/lib/maps_egress.h).
	ctFlagEgress = 0x80
)

// ConntrackState is the TCP state of one direction of a tracked flow.
type ConntrackState uint8

// Conntrack states (CT_* in bpf/lib/maps_lb.h).
const (
	// ConntrackNew: a UDP flow, or a TCP flow that has only sent SYNs.
	ConntrackNew ConntrackState = 0
	// ConntrackEstablished: TCP, a packet without SYN/FIN/RST after the first.
	ConntrackEstablished ConntrackState = 1
	// ConntrackClosing: TCP, a FIN or RST was seen.
	ConntrackClosing ConntrackState = 2
)

// String returns "new", "established" or "closing".
func (s ConntrackState) String() string {
	switch s {
	case ConntrackNew:
		return "new"
	case ConntrackEstablished:
		return "established"
	case ConntrackClosing:
		return "closing"
	}
	return fmt.Sprintf("state-%d", uint8(s))
}

// Tuple is a VPC's 5-tuple as a packet of one direction carries it.
type Tuple struct {
	VNI          uint32
	Src, Dst     netip.Addr
	SPort, DPort uint16
	Proto        Protocol
}

func (t Tuple) String() string {
	return fmt.Sprintf("vni %d %s %s:%d -> %s:%d", t.VNI, t.Proto, t.Src, t.SPort, t.Dst, t.DPort)
}

// ConntrackEntry is one direction of a tracked flow and its rewrites.
type ConntrackEntry struct {
	Tuple Tuple
	// Reply is set on the entry of the reply direction.
	Reply bool
	// SNAT/DNAT: the source/destination is rewritten to SrcNAT/DstNAT.
	SNAT, DNAT     bool
	SrcNAT, DstNAT netip.AddrPort
	State          ConntrackState
	// Expires is the deadline in CLOCK_MONOTONIC time (bpf_ktime_get_coarse_ns).
	Expires time.Duration
	// VNI is the flow's VPC.
	VNI uint32
	// Egress marks an egress gateway's SNAT pair; its reply entry is keyed
	// with VNI 0 (the outside has none) and VNI gives the VPC.
	Egress bool
	// Reset: a TCP RST crossed this direction; the pair goes when this
	// entry expires.
	Reset bool
}

func tupleFrom(k lxcCtKey) Tuple {
	return Tuple{VNI: k.Vni, Src: addrFrom(k.Saddr), Dst: addrFrom(k.Daddr), SPort: ntohs(k.Sport), DPort: ntohs(k.Dport), Proto: Protocol(k.Proto)}
}

func entryFrom(k lxcCtKey, v lxcCtEntry) ConntrackEntry {
	return ConntrackEntry{
		Tuple:   tupleFrom(k),
		Reply:   v.Flags&ctFlagReply != 0,
		SNAT:    v.Flags&ctFlagSNAT != 0,
		DNAT:    v.Flags&ctFlagDNAT != 0,
		SrcNAT:  netip.AddrPortFrom(addrFrom(v.SrcAddr), ntohs(v.SrcPort)),
		DstNAT:  netip.AddrPortFrom(addrFrom(v.DstAddr), ntohs(v.DstPort)),
		State:   ConntrackState(v.State),
		Expires: time.Duration(v.Expires),
		VNI:     v.Vni,
		Egress:  v.Flags&ctFlagEgress != 0,
		Reset:   v.Flags&ctFlagRST != 0,
	}
}

// partnerKey returns the key of the other direction of the flow of entry
// (k, v): a reply comes from the rewritten destination to the rewritten
// source, and the same formula maps a reply entry back to its forward one.
func partnerKey(k lxcCtKey, v lxcCtEntry) lxcCtKey {
	p := lxcCtKey{Vni: k.Vni, Proto: k.Proto, Saddr: k.Daddr, Sport: k.Dport, Daddr: k.Saddr, Dport: k.Sport}
	if v.Flags&ctFlagDNAT != 0 {
		p.Saddr, p.Sport = v.DstAddr, v.DstPort
	}
	if v.Flags&ctFlagSNAT != 0 {
		p.Daddr, p.Dport = v.SrcAddr, v.SrcPort
	}
	if v.Flags&ctFlagEgress != 0 {
		// Egress SNAT: the reply side has no VNI, the forward side the VPC's.
		p.Vni = 0
		if v.Flags&ctFlagReply != 0 {
			p.Vni = v.Vni
		}
	}
	return p
}

// monotonicNow is the clock of conntrack deadlines (lb_now in bpf/lib/lb.h:
// bpf_ktime_get_coarse_ns, CLOCK_MONOTONIC at tick resolution).
func monotonicNow() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// Conntrack lists the conntrack map (both directions of every flow).
func (d *Datapath) Conntrack() ([]ConntrackEntry, error) {
	var (
		out []ConntrackEntry
		k   lxcCtKey
		v   lxcCtEntry
	)
	it := d.lxc.GenieCt.Iterate()
	for it.Next(&k, &v) {
		out = append(out, entryFrom(k, v))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list conntrack: %w", err)
	}
	return out, nil
}

// ConntrackStats is the result of one conntrack GC pass, for metrics.
type ConntrackStats struct {
	// Entries is the number of entries left (both directions count).
	Entries int
	// Capacity is the map's max_entries; Entries/Capacity is the fill.
	// At capacity the LRU evicts the least recently used entries, which
	// may belong to live flows.
	Capacity int
	// Deleted is the number of expired entries this pass removed.
	Deleted int
	// InsertFailures is the data plane's count of failed conntrack
	// inserts so far (those packets were dropped as CT_FAILED).
	InsertFailures uint64
	// EgressFlows and EgressFlowsDeleted count the egress gateway's
	// pod-side flow pins left and removed.
	EgressFlows, EgressFlowsDeleted int
}

const ctBatch = 4096

// GCConntrack deletes the expired flows from the conntrack map: an entry
// goes when its deadline has passed and its partner's has too (or the
// partner is gone), so a one-way flow's quiet reply side never takes the
// live side with it. An expired entry that carried a RST takes its partner
// with it (the other side of a reset flow sends nothing more and would
// stay established for hours). An entry whose partner key holds another,
// newer flow's entry counts as alone.
// Safe while the data plane runs; a flow that becomes active during the
// pass just recreates its entries.
func (d *Datapath) GCConntrack() (ConntrackStats, error) {
	return gcConntrackAll(d.lxc.GenieCt, d.lxc.GenieDrops, d.lxc.GenieEgressFlows)
}

// gcConntrackAll is gcConntrack plus the egress gateway's pod-side flow
// pins (egress may be nil: maps pinned by an older data plane).
func gcConntrackAll(ct, drops, egress *ebpf.Map) (ConntrackStats, error) {
	st, err := gcConntrack(ct, drops)
	if err != nil || egress == nil {
		return st, err
	}
	st.EgressFlows, st.EgressFlowsDeleted, err = gcEgressFlows(egress)
	return st, err
}

// Conntrack is a handle of its own on the pinned conntrack map, for a GC
// that must not depend on (or lock) the agent's Datapath handle.
type Conntrack struct{ ct, drops, egress *ebpf.Map }

// OpenConntrack opens the conntrack and drop counter maps pinned under
// pinDir by Open.
func OpenConntrack(pinDir string) (*Conntrack, error) {
	ct, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, lxcMapGenieCt), nil)
	if err != nil {
		return nil, fmt.Errorf("open conntrack map: %w", err)
	}
	drops, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, lxcMapGenieDrops), nil)
	if err != nil {
		ct.Close()
		return nil, fmt.Errorf("open drop counters: %w", err)
	}
	// The egress flow pins, if this data plane has them.
	egress, _ := ebpf.LoadPinnedMap(filepath.Join(pinDir, lxcMapGenieEgressFlows), nil)
	return &Conntrack{ct: ct, drops: drops, egress: egress}, nil
}

// GCConntrack is Datapath.GCConntrack on this handle.
func (c *Conntrack) GCConntrack() (ConntrackStats, error) {
	return gcConntrackAll(c.ct, c.drops, c.egress)
}

// Close releases the handle (the maps stay pinned).
func (c *Conntrack) Close() error {
	err := errors.Join(c.ct.Close(), c.drops.Close())
	if c.egress != nil {
		err = errors.Join(err, c.egress.Close())
	}
	return err
}

func gcConntrack(m, dropsMap *ebpf.Map) (ConntrackStats, error) {
	st := ConntrackStats{Capacity: int(m.MaxEntries())}
	now := monotonicNow()

	expired := func(v lxcCtEntry) bool { return time.Duration(v.Expires) < now }
	doomed := map[lxcCtKey]bool{}
	total, err := ctEach(m, func(k lxcCtKey, v lxcCtEntry) {
		if !expired(v) || doomed[k] {
			return
		}
		pk := partnerKey(k, v)
		var pv lxcCtEntry
		// An entry under the partner key that does not point back belongs
		// to a newer flow (the pod reused its tuple): k is alone.
		if err := m.Lookup(&pk, &pv); err == nil && partnerKey(pk, pv) == k {
			if !expired(pv) && v.Flags&ctFlagRST == 0 {
				return
			}
			doomed[pk] = true
		}
		doomed[k] = true
	})
	if err != nil {
		return st, fmt.Errorf("conntrack gc: %w", err)
	}
	st.Deleted, err = ctDelete(m, doomed)
	if err != nil {
		return st, fmt.Errorf("conntrack gc: %w", err)
	}
	st.Entries = total - st.Deleted
	var per []uint64
	if err := dropsMap.Lookup(uint32(DropCTFailed), &per); err != nil {
		return st, fmt.Errorf("conntrack gc: read drop counter: %w", err)
	}
	for _, n := range per {
		st.InsertFailures += n
	}
	return st, nil
}

// ctEach calls fn for every entry of conntrack map m, read in batches, and
// returns how many it read.
func ctEach(m *ebpf.Map, fn func(lxcCtKey, lxcCtEntry)) (int, error) {
	var (
		cursor ebpf.MapBatchCursor
		keys   = make([]lxcCtKey, ctBatch)
		vals   = make([]lxcCtEntry, ctBatch)
		total  int
	)
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		total += n
		for i := 0; i < n; i++ {
			fn(keys[i], vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return total, nil
		}
		if err != nil {
			return total, mapErr(m, "batch lookup", err)
		}
	}
}

// ctDelete deletes keys from conntrack map m in batches and returns how
// many it deleted; keys already gone (LRU eviction, the data path
// replacing a flow) are not an error.
func ctDelete(m *ebpf.Map, keys map[lxcCtKey]bool) (int, error) {
	del := make([]lxcCtKey, 0, len(keys))
	for k := range keys {
		del = append(del, k)
	}
	deleted := 0
	for len(del) > 0 {
		chunk := del[:min(len(del), ctBatch)]
		del = del[len(chunk):]
		n, err := m.BatchDelete(chunk, nil)
		deleted += n
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return deleted, mapErr(m, "batch delete", err)
		}
		if n < len(chunk) {
			// An entry vanished under us: delete the rest one by one.
			for _, k := range chunk[n:] {
				if m.Delete(&k) == nil {
					deleted++
				}
			}
		}
	}
	return deleted, nil
}

// purgeFrontend deletes the flows of service frontend k (both entries of
// each): the data path looks conntrack up before the service map, so an
// established flow would otherwise outlive its service until it expires.
func purgeFrontend(m *ebpf.Map, k lxcSvcKey) (int, error) {
	doomed := map[lxcCtKey]bool{}
	_, err := ctEach(m, func(ck lxcCtKey, v lxcCtEntry) {
		if v.Flags&ctFlagReply != 0 || v.Flags&ctFlagDNAT == 0 || v.SvcTable == 0 ||
			ck.Vni != k.Vni || ck.Daddr != k.Vip || ck.Dport != k.Port || ck.Proto != k.Proto {
			return
		}
		doomed[ck] = true
		doomed[partnerKey(ck, v)] = true
	})
	if err != nil {
		return 0, err
	}
	return ctDelete(m, doomed)
}
