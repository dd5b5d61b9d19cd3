package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
)

// ErrNoEndpoint is returned by LookupEndpoint when {vni, ip} has no entry.
var ErrNoEndpoint = errors.New("no such endpoint")

// LookupEndpoint returns the endpoints map entry of {vni, ip}: one map
// lookup, where Endpoints dumps the whole map (100k entries at scale).
func (d *Datapath) LookupEndpoint(vni uint32, ip netip.Addr) (Entry, error) {
	if err := errors.Join(checkVNI(vni), checkIP("ip", ip)); err != nil {
		return Entry{}, fmt.Errorf("lookup endpoint vni %d ip %s: %w", vni, ip, err)
	}
	key := lxcEndpointKey{Vni: vni, Ip: ip4(ip)}
	var v lxcEndpointInfo
	if err := d.lxc.GenieEndpoints.Lookup(&key, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Entry{}, fmt.Errorf("lookup endpoint vni %d ip %s: %w", vni, ip, ErrNoEndpoint)
		}
		return Entry{}, fmt.Errorf("lookup endpoint vni %d ip %s: %w", vni, ip, mapErr(d.lxc.GenieEndpoints, "lookup", err))
	}
	e := Entry{VNI: vni, IP: ip, MAC: append(net.HardwareAddr(nil), v.Mac[:]...), HostIfindex: int(v.Ifindex)}
	if v.Ifindex == 0 {
		e.NodeIP = addrFrom(v.NodeIp)
	}
	return e, nil
}
