package qos

import (
	"errors"
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The HTB tree's handles: root qdisc 1:, inner class 1:1, the class leaves
// 1:10/1:20/1:30 (Class.Minor), pod classes 1:100-1:fff.
const (
	Major    = 1
	rootMin  = 1
	podFirst = 0x100
	// PodLast is the largest pod class minor (lxc_info.flags holds 12 bits).
	PodLast = 0xfff
	// Quantum is every leaf's HTB quantum: the bytes a leaf may send per
	// round when leaves of one priority share spare bandwidth. At least
	// one GSO super-packet (64 KiB), or HTB splits unfairly.
	Quantum = 64 * 1024
	// minBurst is the smallest burst (buffer, cbuffer) of a class: two GSO
	// super-packets, so a class at its rate can send one whole.
	minBurst = 128 * 1024
)

// ErrNoTree means a pod asked for a rate limit on a node whose uplink has
// no QoS tree (the agent was started without --qos-uplink-rate).
var ErrNoTree = errors.New("qos is not configured on this node's uplink")

// ErrFull means every pod class minor is taken.
var ErrFull = errors.New("no free htb class for a pod rate limit")

// Handle returns the tc handle 1:minor.
func Handle(minor uint16) uint32 { return netlink.MakeHandle(Major, minor) }

// Tree is the HTB tree on a node's uplink egress. Every class may borrow up
// to the link rate (ceil), so the tree is work-conserving: a class alone
// gets the whole link. Under contention each class first gets its assured
// rate (Class.Weight percent of the link), and spare goes to the highest
// priority that wants it. Unclassified traffic (the node's own, pods
// without a class) lands in the default class, normal's leaf.
type Tree struct {
	nl   *netlink.Handle // in the uplink's netns, usable from any goroutine
	link netlink.Link
	rate uint64 // bits/s

	mu   sync.Mutex
	used map[uint16]bool // pod class minors in use
}

// Install puts the tree on link's root egress for a link of rate bits/s,
// replacing whatever root qdisc was there, or updating ours in place (its
// pod classes stay, and are remembered as in use).
func Install(link netlink.Link, rate uint64) (*Tree, error) {
	if rate < MinRate {
		return nil, fmt.Errorf("qos uplink rate %d bit/s is below the minimum %d", rate, MinRate)
	}
	idx := link.Attrs().Index
	q := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: idx, Handle: Handle(0), Parent: netlink.HANDLE_ROOT})
	q.Defcls = uint32(Normal.Minor())
	ours, err := haveTree(link)
	if err != nil {
		return nil, err
	}
	// HTB cannot change its own parameters (EINVAL): ours stays as it is.
	if !ours {
		if err := netlink.QdiscReplace(q); err != nil {
			return nil, fmt.Errorf("installing htb on %s: %w", link.Attrs().Name, err)
		}
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	t := &Tree{nl: nl, link: link, rate: rate, used: map[uint16]bool{}}
	success := false
	defer func() {
		if !success {
			nl.Close()
		}
	}()
	if err := t.class(rootMin, Handle(0), rate, rate, 0); err != nil {
		return nil, err
	}
	for _, c := range Classes {
		if err := t.class(c.Minor(), Handle(rootMin), rate*uint64(c.Weight())/100, rate, c.Prio()); err != nil {
			return nil, err
		}
	}
	classes, err := nl.ClassList(link, Handle(0))
	if err != nil {
		return nil, fmt.Errorf("listing htb classes on %s: %w", link.Attrs().Name, err)
	}
	for _, c := range classes {
		if m := uint16(c.Attrs().Handle); m >= podFirst && m <= PodLast {
			t.used[m] = true
		}
	}
	success = true
	return t, nil
}

// haveTree reports whether link's root qdisc is our HTB 1: with our default.
func haveTree(link netlink.Link) (bool, error) {
	qs, err := netlink.QdiscList(link)
	if err != nil {
		return false, fmt.Errorf("listing qdiscs of %s: %w", link.Attrs().Name, err)
	}
	for _, q := range qs {
		if h, ok := q.(*netlink.Htb); ok && h.Parent == netlink.HANDLE_ROOT && h.Handle == Handle(0) &&
			h.Defcls == uint32(Normal.Minor()) {
			return true, nil
		}
	}
	return false, nil
}

// class creates or updates class 1:minor under parent (the qdisc 1: for
// the inner class, 1:1 for the others).
func (t *Tree) class(minor uint16, parent uint32, rate, ceil uint64, prio uint32) error {
	burst := uint32(max(ceil/8/1000, minBurst)) // a millisecond at ceil
	c := netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: t.link.Attrs().Index, Handle: Handle(minor), Parent: parent},
		netlink.HtbClassAttrs{Rate: rate, Ceil: ceil, Buffer: burst, Cbuffer: burst, Quantum: Quantum, Prio: prio})
	if err := t.nl.ClassReplace(c); err != nil {
		return fmt.Errorf("htb class 1:%x on %s: %w", minor, t.link.Attrs().Name, err)
	}
	return nil
}

// Close releases the tree's netlink socket; the tree stays on the link.
func (t *Tree) Close() { t.nl.Close() }

// Rate is the link rate the tree was installed for, in bits/s.
func (t *Tree) Rate() uint64 { return t.rate }

// AddPod creates a class of its own for a pod of class c limited to rate
// bits/s of its L3 bytes and returns its minor (for lxc_info.flags). The
// class has c's priority; its ceil is WireRate(rate, mtu), mtu the pod's
// MTU, so that the limit holds for what the pod sends, not for the
// encapsulated frames HTB counts; its assured rate is the smaller of that
// and c's share.
func (t *Tree) AddPod(c Class, rate uint64, mtu int) (uint16, error) {
	if c == None {
		c = Normal
	}
	if rate < MinRate {
		return 0, fmt.Errorf("egress rate %d bit/s is below the minimum %d", rate, MinRate)
	}
	wire := WireRate(rate, mtu)
	t.mu.Lock()
	defer t.mu.Unlock()
	for m := uint16(podFirst); m <= PodLast; m++ {
		if t.used[m] {
			continue
		}
		assured := min(wire, t.rate*uint64(c.Weight())/100)
		if err := t.class(m, Handle(rootMin), assured, wire, c.Prio()); err != nil {
			return 0, err
		}
		t.used[m] = true
		return m, nil
	}
	return 0, ErrFull
}

// Prune deletes the pod classes whose minor keep does not hold: the
// classes of attachments that no longer exist (an agent that crashed
// between creating a class and recording it, or lost its state). It
// returns the minors deleted.
func (t *Tree) Prune(keep map[uint16]bool) ([]uint16, error) {
	classes, err := t.nl.ClassList(t.link, Handle(0))
	if err != nil {
		return nil, fmt.Errorf("listing htb classes on %s: %w", t.link.Attrs().Name, err)
	}
	var pruned []uint16
	var errs []error
	for _, c := range classes {
		m := uint16(c.Attrs().Handle)
		if c.Attrs().Handle>>16 != Major || m < podFirst || m > PodLast || keep[m] {
			continue
		}
		if err := t.DeletePod(m); err != nil {
			errs = append(errs, err)
			continue
		}
		pruned = append(pruned, m)
	}
	return pruned, errors.Join(errs...)
}

// DeletePod removes a pod class; an absent one is not an error.
func (t *Tree) DeletePod(minor uint16) error {
	if minor < podFirst || minor > PodLast {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	c := netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: t.link.Attrs().Index, Handle: Handle(minor), Parent: Handle(rootMin)}, netlink.HtbClassAttrs{})
	if err := t.nl.ClassDel(c); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("deleting htb class 1:%x on %s: %w", minor, t.link.Attrs().Name, err)
	}
	delete(t.used, minor)
	return nil
}

// Remove takes our tree off the uplink (back to the kernel's default
// qdisc); another root qdisc is left alone.
func Remove(link netlink.Link) error {
	if ours, err := haveTree(link); err != nil || !ours {
		return err
	}
	q := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: Handle(0), Parent: netlink.HANDLE_ROOT})
	if err := netlink.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("removing htb from %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// ClassStats are the counters of one HTB class.
type ClassStats struct {
	// Minor is the class's minor (1:minor); Class is set for the class
	// leaves, None for the inner class and pod classes.
	Minor uint16
	Class Class
	// Bytes and Packets sent, Drops, and Overlimits (times the class was
	// throttled). HTB counts a GSO packet as its gso_segs, which
	// bpf_skb_adjust_room zeroes when from_pod encapsulates: the pods' GSO
	// packets count 0 packets (their bytes are right, every segment's
	// headers included).
	Bytes, Packets    uint64
	Drops, Overlimits uint32
}

// Stats reads the counters of every class of the tree.
func (t *Tree) Stats() ([]ClassStats, error) {
	classes, err := t.nl.ClassList(t.link, Handle(0))
	if err != nil {
		return nil, fmt.Errorf("listing htb classes on %s: %w", t.link.Attrs().Name, err)
	}
	var out []ClassStats
	for _, c := range classes {
		a := c.Attrs()
		if a.Handle>>16 != Major {
			continue
		}
		s := ClassStats{Minor: uint16(a.Handle)}
		for _, k := range Classes {
			if k.Minor() == s.Minor {
				s.Class = k
			}
		}
		if st := a.Statistics; st != nil {
			if st.Basic != nil {
				s.Bytes, s.Packets = st.Basic.Bytes, uint64(st.Basic.Packets)
			}
			if st.Queue != nil {
				s.Drops, s.Overlimits = st.Queue.Drops, st.Queue.Overlimits
			}
		}
		out = append(out, s)
	}
	return out, nil
}
