package sandbox

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// nsHandle opens a netlink handle bound to the namespace at path. The
// handle's socket lives in that namespace, so no thread has to switch.
func nsHandle(path string) (*netlink.Handle, netns.NsHandle, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, 0, fmt.Errorf("open netns %s: %w", path, err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		return nil, 0, fmt.Errorf("netlink handle in %s: %w", path, err)
	}
	return nl, h, nil
}

// linkUp sets a link up in the current thread's namespace.
func linkUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %q: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %q up: %w", name, err)
	}
	return nil
}

// vethBetween creates a veth pair: aName in the namespace at aPath and
// bName in the namespace at bPath, both up. mtu 0 keeps the default.
func vethBetween(aPath, aName, bPath, bName string, mtu int) error {
	a, ah, err := nsHandle(aPath)
	if err != nil {
		return err
	}
	defer a.Close()
	defer ah.Close()
	b, bh, err := nsHandle(bPath)
	if err != nil {
		return err
	}
	defer b.Close()
	defer bh.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = aName
	attrs.MTU = mtu
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: bName, PeerNamespace: netlink.NsFd(int(bh))}
	if mtu > 0 {
		veth.PeerMTU = uint32(mtu)
	}
	if err := a.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s/%s: %w", aName, bName, err)
	}
	for _, side := range []struct {
		h    *netlink.Handle
		name string
	}{{a, aName}, {b, bName}} {
		l, err := side.h.LinkByName(side.name)
		if err != nil {
			return fmt.Errorf("veth %s: %w", side.name, err)
		}
		if err := side.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", side.name, err)
		}
	}
	return nil
}

// withLink runs fn with a netlink handle in the namespace at path and the
// link named link there.
func withLink(path, link string, fn func(h *netlink.Handle, l netlink.Link) error) error {
	h, nh, err := nsHandle(path)
	if err != nil {
		return err
	}
	defer h.Close()
	defer nh.Close()
	l, err := h.LinkByName(link)
	if err != nil {
		return fmt.Errorf("link %q: %w", link, err)
	}
	return fn(h, l)
}

// addAddr adds an address (CIDR form) to a link in the namespace at path.
func addAddr(path, link, cidr string) error {
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return fmt.Errorf("address %q: %w", cidr, err)
	}
	return withLink(path, link, func(h *netlink.Handle, l netlink.Link) error {
		if err := h.AddrAdd(l, a); err != nil {
			return fmt.Errorf("add %s to %s: %w", cidr, link, err)
		}
		return nil
	})
}

// linkMAC returns the MAC of a link in the namespace at path.
func linkMAC(path, link string) (mac net.HardwareAddr, err error) {
	err = withLink(path, link, func(_ *netlink.Handle, l netlink.Link) error {
		mac = l.Attrs().HardwareAddr
		return nil
	})
	return mac, err
}

// SetSysctl writes a sysctl such as "net/ipv4/ip_forward" inside the
// network namespace at path.
func SetSysctl(path, key, value string) error {
	return inNetns(path, func() error {
		if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}

// addBridge creates a linux bridge, up, in the namespace at path.
func addBridge(path, name string) error {
	h, nh, err := nsHandle(path)
	if err != nil {
		return err
	}
	defer h.Close()
	defer nh.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	br := &netlink.Bridge{LinkAttrs: attrs}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge %q: %w", name, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("set bridge %q up: %w", name, err)
	}
	return nil
}

// setMaster enslaves link to master in the namespace at path.
func setMaster(path, link, master string) error {
	return withLink(path, link, func(h *netlink.Handle, l netlink.Link) error {
		m, err := h.LinkByName(master)
		if err != nil {
			return fmt.Errorf("link %q: %w", master, err)
		}
		if err := h.LinkSetMaster(l, m); err != nil {
			return fmt.Errorf("attach %q to %q: %w", link, master, err)
		}
		return nil
	})
}
