package datapath

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// tcxIngress returns the program IDs attached to tcx ingress of ifindex (in
// the current netns). Called inside ns.Do, so it cannot t.Fatal: a query
// error shows up as a bogus ID 0 in the comparison.
func tcxIngress(ifindex int) []ebpf.ProgramID {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return []ebpf.ProgramID{0}
	}
	var ids []ebpf.ProgramID
	for _, p := range res.Programs {
		ids = append(ids, p.ID)
	}
	return ids
}

func progID(p *ebpf.Program) ebpf.ProgramID {
	info, err := p.Info()
	if err != nil {
		return 0
	}
	id, _ := info.ID()
	return id
}

func addVeth(name string) (int, error) {
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
		return 0, fmt.Errorf("create veth %s: %w", name, err)
	}
	l, err := setUp(name, "", 0)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}

func TestPrivilegedAttachLifecycle(t *testing.T) {
	needBPF(t)
	pin := testPinDir(t)
	netns := newNetNS(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	inNS(t, netns, func() error {
		d, err := Open(testConfig(pin))
		if err != nil {
			return err
		}
		defer d.Close()
		idx, err := addVeth("lxctest")
		if err != nil {
			return err
		}
		for range 2 { // idempotent
			if err := d.AttachEndpoint(idx); err != nil {
				return err
			}
		}
		if ids := tcxIngress(idx); len(ids) != 1 || ids[0] != progID(d.lxc.FromPod) {
			return fmt.Errorf("after attach: tcx ingress %v, want only from_pod %d", ids, progID(d.lxc.FromPod))
		}
		if _, err := os.Stat(filepath.Join(pin, linksDir, fmt.Sprintf("lxc-%d", idx))); err != nil {
			return fmt.Errorf("link not pinned: %w", err)
		}

		// A restarted agent replaces the program through the pinned link.
		if err := d.Close(); err != nil {
			return err
		}
		if ids := tcxIngress(idx); len(ids) != 1 {
			return fmt.Errorf("program detached when the agent closed: %v", ids)
		}
		d2, err := Open(testConfig(pin))
		if err != nil {
			return err
		}
		defer d2.Close()
		if err := d2.AttachEndpoint(idx); err != nil {
			return err
		}
		if ids := tcxIngress(idx); len(ids) != 1 || ids[0] != progID(d2.lxc.FromPod) {
			return fmt.Errorf("after re-attach: tcx ingress %v, want only the new from_pod %d", ids, progID(d2.lxc.FromPod))
		}

		// Detach is idempotent and leaves nothing attached or pinned.
		for range 2 {
			if err := d2.DetachEndpoint(idx); err != nil {
				return err
			}
		}
		if ids := tcxIngress(idx); len(ids) != 0 {
			return fmt.Errorf("after detach: tcx ingress %v", ids)
		}

		// A pinned link whose interface vanished is stale: re-attaching
		// (e.g. to a new veth with the same ifindex) replaces it.
		if err := d2.AttachEndpoint(idx); err != nil {
			return err
		}
		if err := netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lxctest"}}); err != nil {
			return err
		}
		idx2, err := addVeth("lxctest2")
		if err != nil {
			return err
		}
		if err := d2.AttachEndpoint(idx2); err != nil {
			return err
		}
		if err := d2.DetachEndpoint(idx); err != nil {
			return fmt.Errorf("detach of a vanished interface: %w", err)
		}
		if ids := tcxIngress(idx2); len(ids) != 1 {
			return fmt.Errorf("new veth: tcx ingress %v", ids)
		}

		// Uplink: tcx + XDP, then Remove takes everything away.
		up, err := addVeth("uptest")
		if err != nil {
			return err
		}
		if err := d2.AttachUplink(up); err != nil {
			return err
		}
		if err := d2.AttachUplinkPrefilter(up); err != nil {
			return err
		}
		if ids := tcxIngress(up); len(ids) != 1 || ids[0] != progID(d2.uplink.FromUplink) {
			return fmt.Errorf("uplink tcx ingress %v", ids)
		}
		l, err := netlink.LinkByIndex(up)
		if err != nil {
			return err
		}
		if x := l.Attrs().Xdp; x == nil || !x.Attached {
			return fmt.Errorf("xdp prefilter not attached: %+v", x)
		}
		for range 2 {
			if err := d2.DetachUplinkPrefilter(up); err != nil {
				return err
			}
		}
		if l, _ = netlink.LinkByIndex(up); l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
			return fmt.Errorf("xdp still attached after DetachUplinkPrefilter")
		}
		if ids := tcxIngress(up); len(ids) != 1 {
			return fmt.Errorf("DetachUplinkPrefilter touched the tcx program: %v", ids)
		}
		if err := d2.AttachUplinkPrefilter(up); err != nil {
			return err
		}
		// A restarted agent that no longer wants the prefilter
		// (--xdp-prefilter=false) detaches the one an earlier run pinned,
		// from a fresh handle.
		d2.Close()
		d3, err := Open(testConfig(pin))
		if err != nil {
			return err
		}
		defer d3.Close()
		if err := d3.DetachUplinkPrefilter(up); err != nil {
			return err
		}
		if l, _ = netlink.LinkByIndex(up); l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
			return fmt.Errorf("xdp pinned by an earlier handle still attached after DetachUplinkPrefilter")
		}
		if _, err := os.Stat(d3.linkPin("prefilter", up)); !os.IsNotExist(err) {
			return fmt.Errorf("prefilter pin left after detach: %v", err)
		}
		if err := d3.AttachUplinkPrefilter(up); err != nil {
			return err
		}
		if err := Remove(pin); err != nil {
			return err
		}
		if ids := tcxIngress(up); len(ids) != 0 {
			return fmt.Errorf("uplink tcx ingress after Remove: %v", ids)
		}
		if ids := tcxIngress(idx2); len(ids) != 0 {
			return fmt.Errorf("endpoint tcx ingress after Remove: %v", ids)
		}
		if l, _ = netlink.LinkByIndex(up); l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
			return fmt.Errorf("xdp still attached after Remove")
		}
		if _, err := os.Stat(pin); !os.IsNotExist(err) {
			return fmt.Errorf("pin dir left after Remove: %v", err)
		}
		return nil
	})
}
