package datapath

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/safchain/ethtool"
)

func (d *Datapath) linkPin(kind string, ifindex int) string {
	return filepath.Join(d.cfg.PinDir, linksDir, fmt.Sprintf("%s-%d", kind, ifindex))
}

func (d *Datapath) attachUplink(ifindex int) error {
	ifc, err := net.InterfaceByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("attach uplink ifindex %d: find uplink: %w", ifindex, err)
	}
	if err := tuneVethUplink(ifc.Name); err != nil {
		return fmt.Errorf("attach uplink %s: %w", ifc.Name, err)
	}
	if err := enableForwarding(d.cfg.ProcSysNet, ifc.Name); err != nil {
		return fmt.Errorf("attach uplink %s: %w", ifc.Name, err)
	}
	if d.pmtuFD < 0 {
		fd, err := pmtuSocket(d.cfg.UnderlayIP, ifindex)
		if err != nil {
			return fmt.Errorf("attach uplink %s: %w", ifc.Name, err)
		}
		d.pmtuFD = fd
	}
	if err := d.attach(d.linkPin("uplink", ifindex), ifindex, d.uplink.FromUplink, attachTCXIngress); err != nil {
		return fmt.Errorf("attach uplink %s: %w", ifc.Name, err)
	}
	return nil
}

func (d *Datapath) attachPrefilter(ifindex int) error {
	if err := d.attach(d.linkPin("prefilter", ifindex), ifindex, d.uplink.UplinkPrefilter, attachXDP); err != nil {
		return fmt.Errorf("attach uplink prefilter ifindex %d: %w", ifindex, err)
	}
	return nil
}

func (d *Datapath) detachUplink(ifindex int) error {
	err := errors.Join(detachPinned(d.linkPin("uplink", ifindex)), detachPinned(d.linkPin("prefilter", ifindex)))
	if err != nil {
		return fmt.Errorf("detach uplink ifindex %d: %w", ifindex, err)
	}
	return nil
}

func (d *Datapath) detachPrefilter(ifindex int) error {
	if err := detachPinned(d.linkPin("prefilter", ifindex)); err != nil {
		return fmt.Errorf("detach uplink prefilter ifindex %d: %w", ifindex, err)
	}
	return nil
}

func (d *Datapath) attachEndpoint(hostIfindex int) error {
	if d.cfg.EndpointAttach == AttachTC {
		return d.attachEndpointTC(hostIfindex)
	}
	// A filter an agent in tc mode left goes (cheap when absent).
	if err := detachEndpointTC(hostIfindex); err != nil {
		return err
	}
	if err := d.attach(d.linkPin("lxc", hostIfindex), hostIfindex, d.lxc.FromPod, attachTCXIngress); err != nil {
		return fmt.Errorf("attach endpoint ifindex %d: %w", hostIfindex, err)
	}
	return nil
}

func (d *Datapath) detachEndpoint(hostIfindex int) error {
	if err := detachPinned(d.linkPin("lxc", hostIfindex)); err != nil {
		return fmt.Errorf("detach endpoint ifindex %d: %w", hostIfindex, err)
	}
	// Either mode removes the other's attachment too (a restarted agent
	// may have switched modes); both steps are cheap when absent.
	return detachEndpointTC(hostIfindex)
}

// udpSegFeature is the ethtool feature for UDP GSO (NETIF_F_GSO_UDP_L4).
const udpSegFeature = "tx-udp-segmentation"

// tuneVethUplink turns UDP segmentation offload off on a veth uplink.
//
// Why: a veth hands GSO super-packets to its peer unsegmented. An
// encapsulated UDP GSO packet (gso_type UDP_L4|UDP_TUNNEL) then reaches the
// peer node's decap still marked as a tunnel packet; kernels before the
// BPF_F_ADJ_ROOM_DECAP_L4_UDP flags (7.x) cannot clear that, and the pod's
// UDP stack fails to segment it (the datagrams vanish). Without the feature
// the sending node's stack segments such packets at the uplink, keeping
// datagram boundaries; TCP super-packets (TCPV4|UDP_TUNNEL) still cross
// whole, so TCP throughput is unaffected. Real NICs segment on the wire and
// are left alone.
func tuneVethUplink(name string) error {
	et, err := ethtool.NewEthtool()
	if err != nil {
		return fmt.Errorf("open ethtool: %w", err)
	}
	defer et.Close()
	drv, err := et.DriverName(name)
	if err != nil || drv != "veth" {
		return nil // not a veth (or no driver info): nothing to fix
	}
	feats, err := et.Features(name)
	if err != nil {
		return fmt.Errorf("read offloads of %s: %w", name, err)
	}
	if !feats[udpSegFeature] {
		return nil
	}
	if err := et.Change(name, map[string]bool{udpSegFeature: false}); err != nil {
		return fmt.Errorf("turn %s off on %s: %w", udpSegFeature, name, err)
	}
	return nil
}

type attachKind int

const (
	attachTCXIngress attachKind = iota
	attachXDP
)

// attach makes prog the program behind the pinned link at pin, attached to
// ifindex. A live pinned link (left by this or an earlier agent) is updated
// atomically, so packets never see a gap. A stale pin (interface deleted,
// ifindex possibly reused) is dropped and a new link created and pinned.
func (d *Datapath) attach(pin string, ifindex int, prog *ebpf.Program, kind attachKind) error {
	if ifindex <= 0 {
		return fmt.Errorf("invalid ifindex %d", ifindex)
	}
	old, err := link.LoadPinnedLink(pin, nil)
	switch {
	case err == nil:
		live := linkIfindex(old) == ifindex
		if live {
			if err := old.Update(prog); err == nil {
				return old.Close()
			}
		}
		// Stale or not updatable: replace it.
		_ = old.Unpin()
		_ = old.Close()
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("load pinned link %s: %w", pin, err)
	}

	var l link.Link
	switch kind {
	case attachTCXIngress:
		l, err = link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
	case attachXDP:
		l, err = link.AttachXDP(link.XDPOptions{Interface: ifindex, Program: prog})
	}
	if err != nil {
		return err
	}
	if err := l.Pin(pin); err != nil {
		_ = l.Close()
		return fmt.Errorf("pin link %s: %w", pin, err)
	}
	return l.Close()
}

// linkIfindex returns the interface a tcx/xdp link is attached to, 0 if the
// link is defunct (its interface was deleted).
func linkIfindex(l link.Link) int {
	info, err := l.Info()
	if err != nil {
		return 0
	}
	if t := info.TCX(); t != nil {
		return int(t.Ifindex)
	}
	if x := info.XDP(); x != nil {
		return int(x.Ifindex)
	}
	return 0
}

// detachPinned detaches and unpins the link pinned at pin. A missing pin or
// an already defunct link is not an error.
func detachPinned(pin string) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		// Not a link (or unreadable): removing the pin is all we can do.
		if rmErr := os.Remove(pin); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			return fmt.Errorf("remove pin %s: %w", pin, rmErr)
		}
		return nil
	}
	defer l.Close()
	if linkIfindex(l) != 0 {
		if err := l.Detach(); err != nil {
			return fmt.Errorf("detach link %s: %w", pin, err)
		}
	}
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin link %s: %w", pin, err)
	}
	return nil
}
