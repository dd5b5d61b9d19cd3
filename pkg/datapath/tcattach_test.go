package datapath

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// tcIngressProgs returns the IDs of the bpf filters' programs on the
// ingress of ifindex (in the current netns).
func tcIngressProgs(ifindex int) ([]ebpf.ProgramID, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, err
	}
	fs, err := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return nil, err
	}
	var ids []ebpf.ProgramID
	for _, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok {
			ids = append(ids, ebpf.ProgramID(b.Id))
		}
	}
	return ids, nil
}

func TestEndpointAttachValidate(t *testing.T) {
	for _, m := range []EndpointAttach{"", AttachTC, AttachTCX} {
		if err := m.validate(); err != nil {
			t.Errorf("%q: %v", m, err)
		}
	}
	if err := EndpointAttach("xdp").validate(); err == nil {
		t.Error("mode xdp accepted")
	}
}

// In tc mode the pod program is a cls_bpf filter: attach is idempotent, a
// restarted agent replaces it in place, switching modes removes the other
// mode's attachment, and detach is idempotent and leaves nothing.
func TestPrivilegedAttachTC(t *testing.T) {
	needBPF(t)
	pin := testPinDir(t)
	netns := newNetNS(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	inNS(t, netns, func() error {
		cfg := testConfig(pin)
		cfg.EndpointAttach = AttachTC
		d, err := Open(cfg)
		if err != nil {
			return err
		}
		defer d.Close()
		idx, err := addVeth("tctest")
		if err != nil {
			return err
		}
		for range 2 {
			if err := d.AttachEndpoint(idx); err != nil {
				return err
			}
		}
		if ids, err := tcIngressProgs(idx); err != nil || len(ids) != 1 || ids[0] != progID(d.lxc.FromPod) {
			return fmt.Errorf("after attach: tc ingress %v (%v), want only from_pod %d", ids, err, progID(d.lxc.FromPod))
		}
		if ids := tcxIngress(idx); len(ids) != 0 {
			return fmt.Errorf("tc mode attached tcx programs %v", ids)
		}
		d.Close()
		d2, err := Open(cfg)
		if err != nil {
			return err
		}
		defer d2.Close()
		if err := d2.AttachEndpoint(idx); err != nil {
			return err
		}
		if ids, err := tcIngressProgs(idx); err != nil || len(ids) != 1 || ids[0] != progID(d2.lxc.FromPod) {
			return fmt.Errorf("after restart: tc ingress %v (%v), want only the new from_pod %d", ids, err, progID(d2.lxc.FromPod))
		}
		// Switching to tcx replaces the filter with a link, and back.
		cfg.EndpointAttach = AttachTCX
		d3, err := Open(cfg)
		if err != nil {
			return err
		}
		defer d3.Close()
		if err := d3.AttachEndpoint(idx); err != nil {
			return err
		}
		if ids, _ := tcIngressProgs(idx); len(ids) != 0 {
			return fmt.Errorf("tcx mode left tc filters %v", ids)
		}
		if ids := tcxIngress(idx); len(ids) != 1 {
			return fmt.Errorf("tcx mode: tcx ingress %v", ids)
		}
		if err := d2.AttachEndpoint(idx); err != nil {
			return err
		}
		if ids := tcxIngress(idx); len(ids) != 0 {
			return fmt.Errorf("tc mode left the tcx link %v", ids)
		}
		for range 2 {
			if err := d2.DetachEndpoint(idx); err != nil {
				return err
			}
		}
		if ids, err := tcIngressProgs(idx); err != nil || len(ids) != 0 {
			return fmt.Errorf("after detach: tc ingress %v (%v)", ids, err)
		}
		if err := d2.DetachEndpoint(12345); err != nil {
			return fmt.Errorf("detach of a missing interface: %w", err)
		}
		return nil
	})
}
