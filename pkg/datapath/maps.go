package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// maxVNI is the largest 24-bit Geneve VNI.
const maxVNI = 1<<24 - 1

// ip4 returns an IPv4 address as the BPF side stores it: the packet's byte
// order, read as a native-endian u32.
func ip4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func addrFrom(u uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}

func checkVNI(vni uint32) error {
	if vni == 0 || vni > maxVNI {
		return fmt.Errorf("vni %d out of range 1-%d", vni, maxVNI)
	}
	return nil
}

func checkIP(what string, a netip.Addr) error {
	if !a.Is4() {
		return fmt.Errorf("%s %q is not ipv4", what, a)
	}
	return nil
}

func checkMAC(what string, m net.HardwareAddr) error {
	if len(m) != 6 {
		return fmt.Errorf("%s %q is not a 6-byte mac", what, m)
	}
	return nil
}

// mapErr wraps a map update error, mapping a full map to ErrMapFull.
func mapErr(m *ebpf.Map, op string, err error) error {
	name := mapName(m)
	if errors.Is(err, unix.E2BIG) {
		return fmt.Errorf("%s %s: %w", op, name, ErrMapFull)
	}
	return fmt.Errorf("%s %s: %w", op, name, err)
}

func mapName(m *ebpf.Map) string {
	if info, err := m.Info(); err == nil && info.Name != "" {
		return info.Name
	}
	return m.String()
}

// journal records how to undo each map write of one operation, so that an
// operation that fails halfway (a full map, a kernel error) leaves every map
// and the per-VNI reference counts as they were: all or nothing.
type journal struct{ undo []func() error }

// update writes m[key] = val and records how to restore the old value.
func (j *journal) update(m *ebpf.Map, key, val any) error {
	prev := make([]byte, m.ValueSize())
	had := m.Lookup(key, prev) == nil
	if err := m.Update(key, val, ebpf.UpdateAny); err != nil {
		return mapErr(m, "update", err)
	}
	j.undo = append(j.undo, restore(m, key, prev, had))
	return nil
}

// delete removes m[key] (absent is fine) and records how to restore it.
func (j *journal) delete(m *ebpf.Map, key any) error {
	prev := make([]byte, m.ValueSize())
	if m.Lookup(key, prev) != nil {
		return nil
	}
	if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return mapErr(m, "delete", err)
	}
	j.undo = append(j.undo, restore(m, key, prev, true))
	return nil
}

func restore(m *ebpf.Map, key any, prev []byte, had bool) func() error {
	return func() error {
		if had {
			return m.Update(key, prev, ebpf.UpdateAny)
		}
		if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
		return nil
	}
}

// rollback undoes the recorded writes, newest first. Restoring never needs
// room a map did not have before the operation, so it only fails on kernel
// errors; those are returned with the operation's error.
func (j *journal) rollback(err error) error {
	var errs []error
	for i := len(j.undo) - 1; i >= 0; i-- {
		if uerr := j.undo[i](); uerr != nil {
			errs = append(errs, uerr)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w (rollback incomplete: %w)", err, errors.Join(errs...))
	}
	return err
}

func (d *Datapath) upsertLocal(ep LocalEndpoint) error {
	err := errors.Join(checkVNI(ep.VNI), checkIP("ip", ep.IP), checkMAC("mac", ep.MAC))
	if ep.HostIfindex <= 0 {
		err = errors.Join(err, fmt.Errorf("host ifindex %d is invalid", ep.HostIfindex))
	}
	if _, qerr := qosFlags(ep.QoS, ep.QoSMinor); qerr != nil {
		err = errors.Join(err, qerr)
	}
	err = errors.Join(err, ep.Ingress.check())
	if err != nil {
		return fmt.Errorf("upsert local endpoint vni %d ip %s: %w", ep.VNI, ep.IP, err)
	}
	var j journal
	if err := d.doUpsertLocal(&j, ep); err != nil {
		return fmt.Errorf("upsert local endpoint vni %d ip %s: %w", ep.VNI, ep.IP, j.rollback(err))
	}
	return nil
}

func (d *Datapath) doUpsertLocal(j *journal, ep LocalEndpoint) error {
	m := &d.lxc
	key := lxcEndpointKey{Vni: ep.VNI, Ip: ip4(ep.IP)}
	ifx := uint32(ep.HostIfindex)

	// The interface was bound to another endpoint (ifindex reuse after a
	// missed delete): unbind that one first, or its address would lead
	// into this pod, possibly of another VPC.
	var prevLxc lxcLxcInfo
	if err := m.GenieLxc.Lookup(ifx, &prevLxc); err == nil {
		if prevLxc.Vni != key.Vni || prevLxc.Ip != key.Ip {
			if err := d.doDelete(j, lxcEndpointKey{Vni: prevLxc.Vni, Ip: prevLxc.Ip}); err != nil {
				return fmt.Errorf("unbind previous endpoint of ifindex %d: %w", ifx, err)
			}
		}
	}

	var prev lxcEndpointInfo
	havePrev := m.GenieEndpoints.Lookup(&key, &prev) == nil
	if havePrev && prev.Ifindex != 0 && prev.Ifindex != ifx {
		// Moved to another veth: forget the old binding.
		if err := d.unbindLxc(j, prev.Ifindex, key); err != nil {
			return err
		}
	}

	val := lxcEndpointInfo{Ifindex: ifx}
	copy(val.Mac[:], ep.MAC)
	if err := j.update(m.GenieEndpoints, key, &val); err != nil {
		return err
	}
	li := lxcLxcInfo{Vni: ep.VNI, Ip: key.Ip}
	li.Flags, _ = qosFlags(ep.QoS, ep.QoSMinor) // checked in upsertLocal
	copy(li.Mac[:], ep.MAC)
	if err := j.update(m.GenieLxc, ifx, &li); err != nil {
		return err
	}
	if err := d.qosIngressUpsert(j, ifx, ep.Ingress); err != nil {
		return err
	}
	if !havePrev || prev.Ifindex == 0 {
		return d.vniRef(j, ep.VNI, +1)
	}
	return nil
}

// unbindLxc deletes genie_lxc[ifindex] (and the ingress limit of the
// interface) if it is bound to key.
func (d *Datapath) unbindLxc(j *journal, ifindex uint32, key lxcEndpointKey) error {
	var li lxcLxcInfo
	if err := d.lxc.GenieLxc.Lookup(ifindex, &li); err != nil {
		return nil
	}
	if li.Vni != key.Vni || li.Ip != key.Ip {
		return nil
	}
	if err := j.delete(d.lxc.GenieQosIngress, ifindex); err != nil {
		return err
	}
	return j.delete(d.lxc.GenieLxc, ifindex)
}

// vniRef adds delta to the count of local endpoints of vni, deleting the
// entry at zero (the uplink then drops Geneve for it as UNKNOWN_VNI).
func (d *Datapath) vniRef(j *journal, vni uint32, delta int) error {
	m := d.lxc.GenieVnis
	var n uint32
	_ = m.Lookup(vni, &n)
	switch {
	case delta > 0:
		n++
	case n > 1:
		n--
	default:
		return j.delete(m, vni)
	}
	return j.update(m, vni, n)
}

func (d *Datapath) upsertRemote(ep RemoteEndpoint) error {
	err := errors.Join(checkVNI(ep.VNI), checkIP("ip", ep.IP), checkMAC("mac", ep.MAC), checkIP("node ip", ep.NodeIP))
	if err != nil {
		return fmt.Errorf("upsert remote endpoint vni %d ip %s: %w", ep.VNI, ep.IP, err)
	}
	m := &d.lxc
	key := lxcEndpointKey{Vni: ep.VNI, Ip: ip4(ep.IP)}
	var j journal
	var prev lxcEndpointInfo
	if m.GenieEndpoints.Lookup(&key, &prev) == nil && prev.Ifindex != 0 {
		// The pod moved away from this node.
		if err := d.doDelete(&j, key); err != nil {
			return fmt.Errorf("upsert remote endpoint vni %d ip %s: %w", ep.VNI, ep.IP, j.rollback(err))
		}
	}
	val := lxcEndpointInfo{NodeIp: ip4(ep.NodeIP)}
	copy(val.Mac[:], ep.MAC)
	if err := j.update(m.GenieEndpoints, key, &val); err != nil {
		return fmt.Errorf("upsert remote endpoint vni %d ip %s: %w", ep.VNI, ep.IP, j.rollback(err))
	}
	return nil
}

func (d *Datapath) deleteEndpoint(vni uint32, ip netip.Addr) error {
	if err := errors.Join(checkVNI(vni), checkIP("ip", ip)); err != nil {
		return fmt.Errorf("delete endpoint vni %d ip %s: %w", vni, ip, err)
	}
	var j journal
	if err := d.doDelete(&j, lxcEndpointKey{Vni: vni, Ip: ip4(ip)}); err != nil {
		return fmt.Errorf("delete endpoint vni %d ip %s: %w", vni, ip, j.rollback(err))
	}
	return nil
}

func (d *Datapath) doDelete(j *journal, key lxcEndpointKey) error {
	m := &d.lxc
	var prev lxcEndpointInfo
	if err := m.GenieEndpoints.Lookup(&key, &prev); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		return mapErr(m.GenieEndpoints, "lookup", err)
	}
	if err := j.delete(m.GenieEndpoints, key); err != nil {
		return err
	}
	if prev.Ifindex == 0 {
		return nil
	}
	if err := d.unbindLxc(j, prev.Ifindex, key); err != nil {
		return err
	}
	return d.vniRef(j, key.Vni, -1)
}

func (d *Datapath) endpoints() ([]Entry, error) {
	var (
		out []Entry
		k   lxcEndpointKey
		v   lxcEndpointInfo
	)
	it := d.lxc.GenieEndpoints.Iterate()
	for it.Next(&k, &v) {
		e := Entry{VNI: k.Vni, IP: addrFrom(k.Ip), MAC: append(net.HardwareAddr(nil), v.Mac[:]...), HostIfindex: int(v.Ifindex)}
		if v.Ifindex == 0 {
			e.NodeIP = addrFrom(v.NodeIp)
		}
		out = append(out, e)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list endpoints: %w", err)
	}
	return out, nil
}

func (d *Datapath) drops() (map[DropReason]uint64, error) {
	out := make(map[DropReason]uint64, len(dropNames))
	var per []uint64
	for _, r := range DropReasons() {
		if err := d.lxc.GenieDrops.Lookup(uint32(r), &per); err != nil {
			return nil, fmt.Errorf("read drop counter %s: %w", r, err)
		}
		var sum uint64
		for _, c := range per {
			sum += c
		}
		out[r] = sum
	}
	return out, nil
}
