package datapath

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Protocol is an L4 protocol a service port can use.
type Protocol uint8

// Service protocols (IANA numbers, as in the IPv4 header).
const (
	TCP Protocol = unix.IPPROTO_TCP
	UDP Protocol = unix.IPPROTO_UDP
)

// String returns "TCP" or "UDP".
func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// ServiceKey is a service frontend as pods of its VPC address it.
type ServiceKey struct {
	VNI   uint32
	VIP   netip.Addr
	Port  uint16
	Proto Protocol
}

func (k ServiceKey) String() string {
	return fmt.Sprintf("vni %d %s:%d/%s", k.VNI, k.VIP, k.Port, k.Proto)
}

// Backend is where a service flow goes: an endpoint of the service's VPC
// and its target port.
type Backend struct {
	IP   netip.Addr
	Port uint16
}

// ServiceTable is the load-balancing state of one service frontend: its
// Maglev table (len(Slots) = M, computed by package service) and options.
type ServiceTable struct {
	// Slots maps a flow hash modulo len(Slots) to a backend. Empty: the
	// service exists but has no backend (its packets are dropped and
	// counted as NO_BACKEND). Every slot has the same port (the target
	// port): it marks the port whose packets may be replies.
	Slots []Backend
	// AffinityClientIP hashes only the client address, so all flows of a
	// client go to one backend (while the table keeps that slot).
	AffinityClientIP bool
}

// ServiceEntry is one row of the service map, as returned by Services.
type ServiceEntry struct {
	Key              ServiceKey
	TableID          uint32
	Slots            int
	Backends         int
	AffinityClientIP bool
}

const svcFlagAffinityClientIP = 0x1 // SVC_F_AFFINITY_CLIENTIP

// maxServiceSlots bounds a table (package service's MaxTableSize).
const maxServiceSlots = 1 << 20

func (k ServiceKey) bpf() (lxcSvcKey, error) {
	err := errors.Join(checkVNI(k.VNI), checkIP("vip", k.VIP))
	if k.Port == 0 {
		err = errors.Join(err, errors.New("port 0"))
	}
	if k.Proto != TCP && k.Proto != UDP {
		err = errors.Join(err, fmt.Errorf("protocol %d is not tcp or udp", uint8(k.Proto)))
	}
	if err != nil {
		return lxcSvcKey{}, err
	}
	return lxcSvcKey{Vni: k.VNI, Vip: ip4(k.VIP), Port: htons(k.Port), Proto: uint8(k.Proto)}, nil
}

// htons returns port v as the BPF side stores it: network byte order read
// as a native (little-endian: bpfel is the only target) u16.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// lbBackend mirrors struct lb_backend (bpf/lib/maps_lb.h), a Maglev slot;
// bpf2go does not emit it (it appears only in an inner-map template).
type lbBackend struct {
	Ip   uint32
	Port uint16
	_    uint16
}

func ntohs(v uint16) uint16 { return htons(v) }

// UpsertService installs or replaces the table of service frontend k. The
// new table is built aside and switched in with one map update, so packets
// see either the old or the new table, never a mix; established flows keep
// their backend through conntrack either way.
func (d *Datapath) UpsertService(k ServiceKey, t ServiceTable) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.upsertService(k, t); err != nil {
		return fmt.Errorf("upsert service %s: %w", k, err)
	}
	return nil
}

func (d *Datapath) upsertService(k ServiceKey, t ServiceTable) error {
	key, err := k.bpf()
	if err != nil {
		return err
	}
	if len(t.Slots) > maxServiceSlots {
		return fmt.Errorf("table of %d slots exceeds %d", len(t.Slots), maxServiceSlots)
	}
	distinct := map[Backend]bool{}
	for i, b := range t.Slots {
		if !b.IP.Is4() || b.Port == 0 {
			return fmt.Errorf("slot %d: backend %s:%d is not an ipv4 address and port", i, b.IP, b.Port)
		}
		if b.Port != t.Slots[0].Port {
			return fmt.Errorf("slot %d: backend port %d differs from slot 0's %d (one target port per table)", i, b.Port, t.Slots[0].Port)
		}
		distinct[b] = true
	}
	if len(distinct) > 0xffff {
		return fmt.Errorf("%d distinct backends exceed 65535", len(distinct))
	}
	var prev lxcSvcInfo
	havePrev := d.lxc.GenieSvc.Lookup(&key, &prev) == nil

	info := lxcSvcInfo{Backends: uint16(len(distinct))}
	if t.AffinityClientIP {
		info.Flags = svcFlagAffinityClientIP
	}
	if len(t.Slots) > 0 {
		id, err := d.newTable(t.Slots)
		if err != nil {
			return err
		}
		info.Table, info.M = id, uint32(len(t.Slots))
		info.TargetPort = htons(t.Slots[0].Port)
	}
	if err := d.lxc.GenieSvc.Update(&key, &info, ebpf.UpdateAny); err != nil {
		if info.Table != 0 {
			_ = d.lxc.GenieMaglev.Delete(info.Table)
		}
		return mapErr(d.lxc.GenieSvc, "update", err)
	}
	if havePrev && prev.Table != 0 {
		if err := d.lxc.GenieMaglev.Delete(prev.Table); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return mapErr(d.lxc.GenieMaglev, "delete old table of", err)
		}
	}
	return d.markPorts()
}

// markPorts rewrites genie_lb_ports from genie_svc: the frontend and
// target ports in use, which gate the service hook of every packet. The
// whole array is written in one batch, so a port that stays in use is
// never seen unmarked.
func (d *Datapath) markPorts() error {
	var (
		k lxcSvcKey
		v lxcSvcInfo
	)
	flags := make([]uint8, 65536)
	it := d.lxc.GenieSvc.Iterate()
	for it.Next(&k, &v) {
		flags[ntohs(k.Port)] |= lbPortFrontend
		if v.TargetPort != 0 {
			flags[ntohs(v.TargetPort)] |= lbPortTarget
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("mark service ports: %w", err)
	}
	keys := make([]uint32, len(flags))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := d.lxc.GenieLbPorts.BatchUpdate(keys, flags, nil); err != nil {
		return fmt.Errorf("mark service ports: %w", mapErr(d.lxc.GenieLbPorts, "batch update", err))
	}
	return nil
}

// LB_PORT_* (bpf/lib/maps_lb.h).
const (
	lbPortFrontend = 0x1
	lbPortTarget   = 0x2
)

// newTable creates a Maglev table map holding slots and stores it in
// genie_maglev under a fresh non-zero id.
func (d *Datapath) newTable(slots []Backend) (uint32, error) {
	inner, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "genie_mgl_tab",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: uint32(len(slots)),
		Flags:      unix.BPF_F_INNER_MAP,
	})
	if err != nil {
		return 0, fmt.Errorf("create maglev table of %d slots: %w", len(slots), err)
	}
	defer inner.Close() // genie_maglev holds its own reference
	keys := make([]uint32, len(slots))
	vals := make([]lbBackend, len(slots))
	for i, b := range slots {
		keys[i] = uint32(i)
		vals[i] = lbBackend{Ip: ip4(b.IP), Port: htons(b.Port)}
	}
	if _, err := inner.BatchUpdate(keys, vals, nil); err != nil {
		return 0, fmt.Errorf("fill maglev table: %w", err)
	}
	for range 16 {
		id := rand.Uint32()
		if id == 0 {
			continue
		}
		err := d.lxc.GenieMaglev.Update(id, inner, ebpf.UpdateNoExist)
		if errors.Is(err, ebpf.ErrKeyExist) {
			continue
		}
		if err != nil {
			return 0, mapErr(d.lxc.GenieMaglev, "update", err)
		}
		return id, nil
	}
	return 0, errors.New("no free maglev table id")
}

// DeleteService removes service frontend k, its table and the conntrack
// entries of its flows: packets to the frontend, established flows' too,
// are no longer load-balanced (the VIP becomes an unknown address, a
// NO_ROUTE drop). Idempotent.
func (d *Datapath) DeleteService(k ServiceKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	key, err := k.bpf()
	if err != nil {
		return fmt.Errorf("delete service %s: %w", k, err)
	}
	var prev lxcSvcInfo
	if err := d.lxc.GenieSvc.Lookup(&key, &prev); err != nil {
		return nil
	}
	if err := d.lxc.GenieSvc.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete service %s: %w", k, mapErr(d.lxc.GenieSvc, "delete", err))
	}
	if prev.Table != 0 {
		if err := d.lxc.GenieMaglev.Delete(prev.Table); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete service %s: %w", k, mapErr(d.lxc.GenieMaglev, "delete", err))
		}
	}
	// After the service entry: no new flow can be created meanwhile.
	if _, err := purgeFrontend(d.lxc.GenieCt, key); err != nil {
		return fmt.Errorf("delete service %s: flows: %w", k, err)
	}
	if err := d.markPorts(); err != nil {
		return fmt.Errorf("delete service %s: %w", k, err)
	}
	return nil
}

// Services lists the service map, for reconcile diffing and status.
func (d *Datapath) Services() ([]ServiceEntry, error) {
	var (
		out []ServiceEntry
		k   lxcSvcKey
		v   lxcSvcInfo
	)
	it := d.lxc.GenieSvc.Iterate()
	for it.Next(&k, &v) {
		out = append(out, ServiceEntry{
			Key:              ServiceKey{VNI: k.Vni, VIP: addrFrom(k.Vip), Port: ntohs(k.Port), Proto: Protocol(k.Proto)},
			TableID:          v.Table,
			Slots:            int(v.M),
			Backends:         int(v.Backends),
			AffinityClientIP: v.Flags&svcFlagAffinityClientIP != 0,
		})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	return out, nil
}
