package datapath

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// The previous release's data plane (testdata/v7448fa3, see the README
// there) with its map layouts frozen here: these structs are what that
// release wrote, whatever the current bpf/ says.
type (
	v1EndpointKey  struct{ Vni, Ip uint32 }
	v1EndpointInfo struct {
		Ifindex, NodeIp uint32
		Mac             [6]uint8
		Pad             uint16
	}
	v1LxcInfo struct {
		Vni, Ip uint32
		Mac     [6]uint8
		Flags   uint16
	}
	v1NodeConfig struct {
		UnderlayIp, UplinkIfindex uint32
		UplinkMac, GwMac          [6]uint8
	}
	v1SvcKey struct {
		Vni, Vip uint32
		Port     uint16
		Proto    uint8
		Pad      uint8
	}
	v1SvcInfo struct {
		Table, M                         uint32
		Flags, Backends, TargetPort, Pad uint16
	}
	v1Backend struct {
		Ip        uint32
		Port, Pad uint16
	}
)

// oldDataPlane is the previous release loaded with its maps pinned.
type oldDataPlane struct {
	lxc, uplink *ebpf.Collection
}

func (o *oldDataPlane) close() {
	o.lxc.Close()
	o.uplink.Close()
}

// loadOld loads testdata/v7448fa3's objects pinned under pin, as that
// release's agent did, and writes the fixture world the way it wrote it:
// local redA and redB, remote redR, the node config and svcWeb (7 slots to
// redB:8080).
func loadOld(t *testing.T, pin string, ifindex int) *oldDataPlane {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(pin, linksDir), 0o700); err != nil {
		t.Fatal(err)
	}
	o := &oldDataPlane{}
	for _, obj := range []struct {
		file string
		coll **ebpf.Collection
	}{{"lxc_bpfel.o", &o.lxc}, {"uplink_bpfel.o", &o.uplink}} {
		spec, err := ebpf.LoadCollectionSpec(filepath.Join("testdata", "v7448fa3", obj.file))
		if err != nil {
			t.Fatal(err)
		}
		c, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pin}})
		if err != nil {
			t.Fatalf("load previous release's %s: %v", obj.file, err)
		}
		*obj.coll = c
	}
	t.Cleanup(o.close)
	m := o.lxc.Maps
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	vnis := map[uint32]uint32{}
	for _, ep := range []LocalEndpoint{redA, redB} {
		k := v1EndpointKey{ep.VNI, ip4(ep.IP)}
		v := v1EndpointInfo{Ifindex: uint32(ep.HostIfindex)}
		copy(v.Mac[:], ep.MAC)
		must(m["genie_endpoints"].Update(&k, &v, ebpf.UpdateAny))
		li := v1LxcInfo{Vni: ep.VNI, Ip: ip4(ep.IP)}
		copy(li.Mac[:], ep.MAC)
		must(m["genie_lxc"].Update(uint32(ep.HostIfindex), &li, ebpf.UpdateAny))
		vnis[ep.VNI]++
	}
	for vni, n := range vnis {
		must(m["genie_vnis"].Update(vni, n, ebpf.UpdateAny))
	}
	k := v1EndpointKey{redR.VNI, ip4(redR.IP)}
	v := v1EndpointInfo{NodeIp: ip4(redR.NodeIP)}
	copy(v.Mac[:], redR.MAC)
	must(m["genie_endpoints"].Update(&k, &v, ebpf.UpdateAny))
	nc := v1NodeConfig{UnderlayIp: ip4(nodeA), UplinkIfindex: uint32(ifindex)}
	copy(nc.UplinkMac[:], uplinkMAC)
	copy(nc.GwMac[:], gwMAC)
	must(m["genie_config"].Update(uint32(0), &nc, ebpf.UpdateAny))

	inner, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 7, Flags: unix.BPF_F_INNER_MAP})
	must(err)
	defer inner.Close()
	for i := range uint32(7) {
		must(inner.Update(i, v1Backend{Ip: ip4(ip2), Port: htons(8080)}, ebpf.UpdateAny))
	}
	must(m["genie_maglev"].Update(uint32(77), inner, ebpf.UpdateAny))
	sk := v1SvcKey{Vni: vniRed, Vip: ip4(vipWeb), Port: htons(80), Proto: protoTCP}
	must(m["genie_svc"].Update(&sk, v1SvcInfo{Table: 77, M: 7, Backends: 1, TargetPort: htons(8080)}, ebpf.UpdateAny))
	must(m["genie_lb_ports"].Update(uint32(80), uint8(lbPortFrontend), ebpf.UpdateAny))
	must(m["genie_lb_ports"].Update(uint32(8080), uint8(lbPortTarget), ebpf.UpdateAny))
	return o
}

// pins lists the names pinned directly under dir.
func pins(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestPrivilegedUpgradeFrom7448fa3: the previous release's data plane,
// pinned and carrying endpoints, a service, a tracked flow and drop
// counts, is opened by this one on the same pin dir. Open succeeds, maps
// the roles say to keep are the same maps, the drop counters (32 -> 64
// entries) are carried over and caught up, the new program forwards the
// flow's next packet and a pod-to-pod packet byte for byte like the old
// one, and no upgrade pin is left.
func TestPrivilegedUpgradeFrom7448fa3(t *testing.T) {
	needBPF(t)
	n, ifindex := newUnderlay(t)
	worldNS = n
	t.Cleanup(func() { worldNS = nil })
	pin := testPinDir(t)
	old := loadOld(t, pin, ifindex)
	oldFromPod := old.lxc.Programs["from_pod"]

	// Traffic on the old data plane: a service flow (SYN to the VIP:
	// conntrack pair created by the old program) and three drops.
	syn := frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, vipWeb, 80, tcpSYN, nil))
	if ret, _ := runSKB(t, oldFromPod, syn, redA.HostIfindex); ret != tcActRedirect {
		t.Fatalf("old program: SYN to the VIP: verdict %d, want redirect", ret)
	}
	spoof := podIP(redB.MAC, ip1, ip2, ipOpts{}) // redB's MAC from redA's veth
	for range 3 {
		if ret, _ := runSKB(t, oldFromPod, spoof, redA.HostIfindex); ret != tcActShot {
			t.Fatalf("old program: spoofed MAC: verdict %d, want drop", ret)
		}
	}
	oldCT, _, err := entries(old.lxc.Maps["genie_ct"])
	if err != nil || len(oldCT) != 2 {
		t.Fatalf("old conntrack: %d entries, %v; want the flow's pair", len(oldCT), err)
	}
	oldEndpointsID := mapID(t, old.lxc.Maps["genie_endpoints"])

	cfg := testConfig(pin)
	cfg.UplinkIfindex = ifindex
	d, err := Open(cfg)
	if err != nil {
		t.Fatalf("open over the previous release's pins: %v", err)
	}
	defer d.Close()

	// The role table at work: only genie_drops changed (32 -> 64).
	migs := d.Migrations()
	if len(migs) != 1 || migs[0].Map != "genie_drops" || migs[0].Role != MapCounter ||
		migs[0].Old.MaxEntries != 32 || migs[0].New.MaxEntries != 64 || migs[0].Kept != 1 || migs[0].Lost != 0 {
		t.Fatalf("migrations %v, want genie_drops (counter) 32 -> 64 with its one non-zero counter kept", migs)
	}
	t.Logf("migrated: %v", migs[0])
	if !d.UpgradePending() {
		t.Fatal("upgrade not pending after a migration")
	}
	if id := mapID(t, d.lxc.GenieEndpoints); id != oldEndpointsID {
		t.Errorf("genie_endpoints (compatible) was replaced: id %d, was %d", id, oldEndpointsID)
	}
	drops, err := d.Drops()
	if err != nil || drops[DropSpoofedMAC] != 3 {
		t.Fatalf("drop counter after the upgrade: %d (%v), want the old program's 3", drops[DropSpoofedMAC], err)
	}
	ct, err := d.Conntrack()
	if err != nil || len(ct) != 2 {
		t.Fatalf("conntrack after the upgrade: %v, %v; want the old flow's pair", ct, err)
	}

	// Same packet, same place: the flow's next segment and a pod-to-pod
	// packet, through the old and the new program.
	ack := frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, vipWeb, 80, tcpACK|tcpPSH, payload(37)))
	direct := podIP(redA.MAC, ip1, ip2, ipOpts{})
	for _, pkt := range []struct {
		name string
		in   []byte
	}{{"established service flow", ack}, {"pod to pod", direct}} {
		retOld, outOld := runSKB(t, oldFromPod, pkt.in, redA.HostIfindex)
		retNew, outNew := runSKB(t, d.lxc.FromPod, pkt.in, redA.HostIfindex)
		if retOld != tcActRedirect || retNew != retOld || !bytes.Equal(outOld, outNew) {
			t.Errorf("%s: old program %d %x\nnew program %d %x", pkt.name, retOld, outOld, retNew, outNew)
		}
	}
	// The old program still counts into the old map until it is
	// replaced: FinishUpgrade adds that.
	if ret, _ := runSKB(t, oldFromPod, spoof, redA.HostIfindex); ret != tcActShot {
		t.Fatal("old program: spoofed MAC not dropped")
	}
	if ret, _ := runSKB(t, d.lxc.FromPod, spoof, redA.HostIfindex); ret != tcActShot {
		t.Fatal("new program: spoofed MAC not dropped")
	}
	cu, err := d.FinishUpgrade()
	if err != nil || cu.Counters != 1 {
		t.Fatalf("finish upgrade: %+v, %v; want one counter caught up", cu, err)
	}
	if drops, _ := d.Drops(); drops[DropSpoofedMAC] != 5 {
		t.Errorf("drop counter after the catch-up: %d, want 3 + 1 (old program) + 1 (new)", drops[DropSpoofedMAC])
	}
	if d.UpgradePending() {
		t.Error("upgrade still pending after FinishUpgrade")
	}
	if got := pins(t, pin); slices.Contains(got, upgradeDir) {
		t.Errorf("pins after the upgrade: %v, want no %s dir", got, upgradeDir)
	}
	// A same-version restart migrates nothing.
	d.Close()
	d2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if m := d2.Migrations(); m != nil || d2.UpgradePending() {
		t.Errorf("same-version reopen: migrations %v, pending %v", m, d2.UpgradePending())
	}
}

func mapID(t *testing.T, m *ebpf.Map) ebpf.MapID {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

// TestPrivilegedUpgradeDerivedRebuilt: a derived map that changed (here
// genie_endpoints resized, as an operator's --map-sizes does) replaces
// every derived map by an empty one, keeps flow state and counters, and
// leaves the old programs forwarding on the old maps until the agent has
// refilled the new ones.
func TestPrivilegedUpgradeDerivedRebuilt(t *testing.T) {
	d := newServiceWorld(t)
	cfg := d.cfg
	oldFromPod := d.lxc.FromPod
	oldProg, err := oldFromPod.Clone()
	if err != nil {
		t.Fatal(err)
	}
	defer oldProg.Close()
	syn := frame(gwMAC, redA.MAC, tcpIP(ip1, 40000, vipWeb, 80, tcpSYN, nil))
	if ret, _ := runSKB(t, oldProg, syn, redA.HostIfindex); ret != tcActRedirect {
		t.Fatalf("SYN to the VIP: verdict %d", ret)
	}
	direct := podIP(redA.MAC, ip1, ip2, ipOpts{})
	_, want := runSKB(t, oldProg, direct, redA.HostIfindex)
	d.Close()

	cfg.MapSizes.Endpoints = 2 * DefaultMapSizes().Endpoints
	d2, err := Open(cfg)
	if err != nil {
		t.Fatalf("open with a bigger endpoints map: %v", err)
	}
	defer d2.Close()
	got := map[string]MapRole{}
	for _, m := range d2.Migrations() {
		got[m.Map] = m.Role
	}
	for _, name := range []string{"genie_endpoints", "genie_lxc", "genie_vnis", "genie_svc", "genie_maglev", "genie_lb_ports", "genie_config"} {
		if role, ok := got[name]; !ok || role != MapDerived {
			t.Errorf("%s not rebuilt (migrations %v)", name, d2.Migrations())
		}
	}
	if _, ok := got["genie_ct"]; ok {
		t.Error("genie_ct (flow, compatible) was replaced")
	}
	if eps, _ := d2.Endpoints(); len(eps) != 0 || d2.MapSizes().Endpoints != cfg.MapSizes.Endpoints {
		t.Errorf("rebuilt endpoints map: %d entries, size %d", len(eps), d2.MapSizes().Endpoints)
	}
	if ct, _ := d2.Conntrack(); len(ct) != 2 {
		t.Errorf("conntrack: %d entries, want the flow's 2 kept", len(ct))
	}
	// Until the agent refills, the old program (the one attached) still
	// forwards and the new one would not: attach only after the refill.
	if ret, out := runSKB(t, oldProg, direct, redA.HostIfindex); ret != tcActRedirect || !bytes.Equal(out, want) {
		t.Errorf("old program during the upgrade: %d %x", ret, out)
	}
	if ret, _ := runSKB(t, d2.lxc.FromPod, direct, redA.HostIfindex); ret != tcActShot {
		t.Errorf("new program before the refill: verdict %d, want a drop", ret)
	}
	for _, ep := range []LocalEndpoint{redA, redB} {
		if err := d2.UpsertLocalEndpoint(ep); err != nil {
			t.Fatal(err)
		}
	}
	if ret, out := runSKB(t, d2.lxc.FromPod, direct, redA.HostIfindex); ret != tcActRedirect || !bytes.Equal(out, want) {
		t.Errorf("new program after the refill: %d %x, want %x", ret, out, want)
	}
	if _, err := d2.FinishUpgrade(); err != nil {
		t.Fatal(err)
	}
}

// TestPrivilegedUpgradeShrinkRefused: shrinking a derived map below what it
// holds is refused before anything changes; a shrink that fits migrates.
func TestPrivilegedUpgradeShrinkRefused(t *testing.T) {
	needBPF(t)
	pin := testPinDir(t)
	cfg := testConfig(pin)
	cfg.MapSizes.Endpoints = 8
	d, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		ep := redR
		ep.IP = netip.AddrFrom4([4]byte{10, 1, 9, byte(i + 1)})
		if err := d.UpsertRemoteEndpoint(ep); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	before := pins(t, pin)
	cfg.MapSizes.Endpoints = 4
	if d, err := Open(cfg); err == nil {
		d.Close()
		t.Fatal("shrinking genie_endpoints below its 5 entries succeeded")
	} else if !strings.Contains(err.Error(), "genie_endpoints holds 5 entries, more than its new size 4") {
		t.Fatalf("shrink error: %v", err)
	}
	if after := pins(t, pin); !slices.Equal(before, after) {
		t.Errorf("a refused migration changed the pins: %v -> %v", before, after)
	}
	cfg.MapSizes.Endpoints = 6
	d, err = Open(cfg)
	if err != nil {
		t.Fatalf("shrink to 6 over 5 entries: %v", err)
	}
	defer d.Close()
	if d.MapSizes().Endpoints != 6 {
		t.Errorf("endpoints map size %d, want 6", d.MapSizes().Endpoints)
	}
}

// ctSpecWithout returns the current genie_ct spec with the value's last n
// fields removed: the layout of a release before they were added.
func ctSpecWithout(t *testing.T, n int, extra *btf.Member) *ebpf.MapSpec {
	t.Helper()
	spec, err := loadLxc()
	if err != nil {
		t.Fatal(err)
	}
	ms := spec.Maps["genie_ct"].Copy()
	st := btf.Copy(ms.Value).(*btf.Struct)
	st.Members = st.Members[:len(st.Members)-n]
	last := st.Members[len(st.Members)-1]
	sz, _ := btf.Sizeof(last.Type)
	st.Size = (last.Offset.Bytes() + uint32(sz) + 7) &^ 7
	if extra != nil {
		extra.Offset = btf.Bits(st.Size * 8)
		st.Members = append(st.Members, *extra)
		esz, _ := btf.Sizeof(extra.Type)
		st.Size += uint32(esz)
	}
	ms.Value = st
	ms.ValueSize = st.Size
	ms.Pinning = ebpf.PinNone
	return ms
}

// TestPrivilegedUpgradeFlowConverted: a conntrack map of an older layout
// (ct_entry without vni and svc_table, 24 bytes) is copied into the new
// one with the new fields zero; a layout whose field the new one lacks
// converts nothing and reports every entry lost.
func TestPrivilegedUpgradeFlowConverted(t *testing.T) {
	needBPF(t)
	for _, tc := range []struct {
		name  string
		extra *btf.Member
		kept  bool
	}{
		{"value grown", nil, true},
		{"field removed", &btf.Member{Name: "legacy", Type: &btf.Array{Index: &btf.Int{Name: "u32", Size: 4}, Type: &btf.Int{Name: "u64", Size: 8}, Nelems: 2}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pin := testPinDir(t)
			if err := os.MkdirAll(pin, 0o700); err != nil {
				t.Fatal(err)
			}
			ms := ctSpecWithout(t, 2, tc.extra)
			oldCT, err := ebpf.NewMap(ms)
			if err != nil {
				t.Fatal(err)
			}
			defer oldCT.Close()
			if err := oldCT.Pin(filepath.Join(pin, "genie_ct")); err != nil {
				t.Fatal(err)
			}
			key := lxcCtKey{Vni: vniRed, Saddr: ip4(ip1), Daddr: ip4(vipWeb), Sport: htons(40000), Dport: htons(80), Proto: protoTCP}
			val := make([]byte, ms.ValueSize)
			// expires (0), dst_port (18), flags (20), state (21)
			val[0] = 0x42
			copy(val[18:20], []byte{0x1f, 0x90})
			val[20] = ctFlagDNAT
			val[21] = byte(ConntrackEstablished)
			if err := oldCT.Update(&key, val, ebpf.UpdateAny); err != nil {
				t.Fatal(err)
			}
			d, err := Open(testConfig(pin))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			migs := d.Migrations()
			if len(migs) != 1 || migs[0].Map != "genie_ct" || migs[0].Entries != 1 {
				t.Fatalf("migrations %v", migs)
			}
			var got lxcCtEntry
			err = d.lxc.GenieCt.Lookup(&key, &got)
			if !tc.kept {
				if migs[0].Lost != 1 || !errors.Is(err, ebpf.ErrKeyNotExist) {
					t.Errorf("unconvertible entry: migration %v, lookup %v", migs[0], err)
				}
				return
			}
			want := lxcCtEntry{Expires: 0x42, DstPort: htons(8080), Flags: ctFlagDNAT, State: uint8(ConntrackEstablished)}
			if err != nil || got != want || migs[0].Kept != 1 {
				t.Errorf("converted entry %+v (%v), want %+v; migration %v", got, err, want, migs[0])
			}
		})
	}
}

func TestPlanFields(t *testing.T) {
	u32 := &btf.Int{Name: "u32", Size: 4}
	u16 := &btf.Int{Name: "u16", Size: 2}
	u64 := &btf.Int{Name: "u64", Size: 8}
	st := func(size uint32, ms ...btf.Member) *btf.Struct { return &btf.Struct{Size: size, Members: ms} }
	m := func(name string, t btf.Type, off uint32) btf.Member {
		return btf.Member{Name: name, Type: t, Offset: btf.Bits(off * 8)}
	}
	old := st(8, m("a", u32, 0), m("b", u16, 4), m("pad", u16, 6))
	for _, tc := range []struct {
		name   string
		newT   btf.Type
		in     []byte
		want   []byte
		errSub string
	}{
		{"appended", st(12, m("a", u32, 0), m("b", u16, 4), m("pad", u16, 6), m("c", u32, 8)),
			[]byte{1, 2, 3, 4, 5, 6, 7, 8}, []byte{1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0}, ""},
		{"reordered", st(8, m("b", u16, 0), m("c", u16, 2), m("a", u32, 4)),
			[]byte{1, 2, 3, 4, 5, 6, 7, 8}, []byte{5, 6, 0, 0, 1, 2, 3, 4}, ""},
		{"widened", st(12, m("a", u64, 0), m("b", u16, 8)), nil, nil, "field a changed"},
		{"removed", st(4, m("a", u32, 0)), nil, nil, "field b was removed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sz, _ := btf.Sizeof(tc.newT)
			f, err := planFields("value", old, tc.newT, 8, sz)
			if tc.errSub != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errSub) {
					t.Fatalf("err %v, want %q", err, tc.errSub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.apply(tc.in); !bytes.Equal(got, tc.want) {
				t.Errorf("converted %x, want %x", got, tc.want)
			}
		})
	}
	if _, err := planFields("key", nil, nil, 8, 12); err == nil {
		t.Error("a size change without BTF converted")
	}
	if f, err := planFields("key", u32, u64, 4, 8); err != nil || !bytes.Equal(f.apply([]byte{1, 2, 3, 4}), []byte{1, 2, 3, 4, 0, 0, 0, 0}) {
		t.Errorf("u32 -> u64: %v", err)
	}
}

// TestMapRoles: every map of the objects has a role in mapRoles (a new
// feature's map must say what an upgrade does with it), every listed map
// exists, and the kinds agree with the roles: unpinned maps (created by
// every load) and ring buffers are transient, LRU and per-CPU maps are
// not silently derived unless the table says why (checked by reading it).
func TestMapRoles(t *testing.T) {
	lxc, err := loadLxc()
	if err != nil {
		t.Fatal(err)
	}
	up, err := loadUplink()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, cs := range []*ebpf.CollectionSpec{lxc, up} {
		for name, ms := range cs.Maps {
			if strings.HasPrefix(name, ".") || seen[name] {
				continue // .rodata, .bss: the object's own globals
			}
			seen[name] = true
			role, ok := mapRoles[name]
			if !ok {
				t.Errorf("map %s (%s) has no role in mapRoles (migrate.go): decide whether an upgrade rebuilds it (derived), converts it (flow), carries it (counter) or drops it (transient)", name, ms.Type)
				continue
			}
			switch {
			case ms.Pinning != ebpf.PinByName && role != MapTransient:
				t.Errorf("map %s is not pinned (every load creates its own) but its role is %s, want transient", name, role)
			case ms.Type == ebpf.RingBuf && role != MapTransient:
				t.Errorf("ring buffer %s has role %s, want transient", name, role)
			case role == MapCounter && ms.Type != ebpf.PerCPUArray && ms.Type != ebpf.Array:
				t.Errorf("counter map %s is a %s, want an array", name, ms.Type)
			}
		}
	}
	for name := range mapRoles {
		if !seen[name] {
			t.Errorf("mapRoles lists %s, which no object has: remove it", name)
		}
	}
	if mapRoles["genie_ct"] != MapFlow || mapRoles["genie_drops"] != MapCounter || roleOf("genie_anything_new") != MapDerived {
		t.Error("role table")
	}
}
