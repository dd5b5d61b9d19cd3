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

func (d *Datapath) upsertLocal(ep LocalEndpoint) error {
	err := errors.Join(checkVNI(ep.VNI), checkIP("ip", ep.IP), checkMAC("mac", ep.MAC))
	if ep.HostIfindex <= 0 {
		err = errors.Join(err, fmt.Errorf("host ifindex %d is invalid", ep.HostIfindex))
	}
	if err != nil {
		return fmt.Errorf("upsert local endpoint vni %d ip %s: %w", ep.VNI, ep.IP, err)
	}
	if err := d.doUpsertLocal(ep); err != nil {
		return fmt.Errorf("upsert local endpoint vni %d ip %s: %w", ep.VNI, ep.IP, err)
	}
	return nil
}

func (d *Datapath) doUpsertLocal(ep LocalEndpoint) error {
	m := &d.lxc
	key := lxcEndpointKey{Vni: ep.VNI, Ip: ip4(ep.IP)}
	ifx := uint32(ep.HostIfindex)

	// The interface was bound to another endpoint (ifindex reuse after a
	// missed delete): unbind that one first, or its address would lead
	// into this pod, possibly of another VPC.
	var prevLxc lxcLxcInfo
	if err := m.GenieLxc.Lookup(ifx, &prevLxc); err == nil {
		if prevLxc.Vni != key.Vni || prevLxc.Ip != key.Ip {
			if err := d.doDelete(lxcEndpointKey{Vni: prevLxc.Vni, Ip: prevLxc.Ip}); err != nil {
				return fmt.Errorf("unbind previous endpoint of ifindex %d: %w", ifx, err)
			}
		}
	}

	var prev lxcEndpointInfo
	havePrev := m.GenieEndpoints.Lookup(&key, &prev) == nil
	if havePrev && prev.Ifindex != 0 && prev.Ifindex != ifx {
		// Moved to another veth: forget the old binding.
		if err := d.unbindLxc(prev.Ifindex, key); err != nil {
			return err
		}
	}

	val := lxcEndpointInfo{Ifindex: ifx}
	copy(val.Mac[:], ep.MAC)
	if err := m.GenieEndpoints.Update(&key, &val, ebpf.UpdateAny); err != nil {
		return mapErr(m.GenieEndpoints, "update", err)
	}
	li := lxcLxcInfo{Vni: ep.VNI, Ip: key.Ip}
	copy(li.Mac[:], ep.MAC)
	if err := m.GenieLxc.Update(ifx, &li, ebpf.UpdateAny); err != nil {
		return mapErr(m.GenieLxc, "update", err)
	}
	if !havePrev || prev.Ifindex == 0 {
		return d.vniRef(ep.VNI, +1)
	}
	return nil
}

// unbindLxc deletes genie_lxc[ifindex] if it is bound to key.
func (d *Datapath) unbindLxc(ifindex uint32, key lxcEndpointKey) error {
	var li lxcLxcInfo
	if err := d.lxc.GenieLxc.Lookup(ifindex, &li); err != nil {
		return nil
	}
	if li.Vni != key.Vni || li.Ip != key.Ip {
		return nil
	}
	if err := d.lxc.GenieLxc.Delete(ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return mapErr(d.lxc.GenieLxc, "delete", err)
	}
	return nil
}

// vniRef adds delta to the count of local endpoints of vni, deleting the
// entry at zero (the uplink then drops Geneve for it as UNKNOWN_VNI).
func (d *Datapath) vniRef(vni uint32, delta int) error {
	m := d.lxc.GenieVnis
	var n uint32
	_ = m.Lookup(vni, &n)
	switch {
	case delta > 0:
		n++
	case n > 1:
		n--
	default:
		if err := m.Delete(vni); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return mapErr(m, "delete", err)
		}
		return nil
	}
	if err := m.Update(vni, n, ebpf.UpdateAny); err != nil {
		return mapErr(m, "update", err)
	}
	return nil
}

func (d *Datapath) upsertRemote(ep RemoteEndpoint) error {
	err := errors.Join(checkVNI(ep.VNI), checkIP("ip", ep.IP), checkMAC("mac", ep.MAC), checkIP("node ip", ep.NodeIP))
	if err != nil {
		return fmt.Errorf("upsert remote endpoint vni %d ip %s: %w", ep.VNI, ep.IP, err)
	}
	m := &d.lxc
	key := lxcEndpointKey{Vni: ep.VNI, Ip: ip4(ep.IP)}
	var prev lxcEndpointInfo
	if m.GenieEndpoints.Lookup(&key, &prev) == nil && prev.Ifindex != 0 {
		// The pod moved away from this node.
		if err := d.doDelete(key); err != nil {
			return fmt.Errorf("upsert remote endpoint vni %d ip %s: %w", ep.VNI, ep.IP, err)
		}
	}
	val := lxcEndpointInfo{NodeIp: ip4(ep.NodeIP)}
	copy(val.Mac[:], ep.MAC)
	if err := m.GenieEndpoints.Update(&key, &val, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("upsert remote endpoint vni %d ip %s: %w", ep.VNI, ep.IP, mapErr(m.GenieEndpoints, "update", err))
	}
	return nil
}

func (d *Datapath) deleteEndpoint(vni uint32, ip netip.Addr) error {
	if err := errors.Join(checkVNI(vni), checkIP("ip", ip)); err != nil {
		return fmt.Errorf("delete endpoint vni %d ip %s: %w", vni, ip, err)
	}
	if err := d.doDelete(lxcEndpointKey{Vni: vni, Ip: ip4(ip)}); err != nil {
		return fmt.Errorf("delete endpoint vni %d ip %s: %w", vni, ip, err)
	}
	return nil
}

func (d *Datapath) doDelete(key lxcEndpointKey) error {
	m := &d.lxc
	var prev lxcEndpointInfo
	if err := m.GenieEndpoints.Lookup(&key, &prev); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		return mapErr(m.GenieEndpoints, "lookup", err)
	}
	if err := m.GenieEndpoints.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return mapErr(m.GenieEndpoints, "delete", err)
	}
	if prev.Ifindex == 0 {
		return nil
	}
	if err := d.unbindLxc(prev.Ifindex, key); err != nil {
		return err
	}
	return d.vniRef(key.Vni, -1)
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
