package datapath

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// TestPrivilegedConntrackGC: expired pairs go, a pair with one live side
// stays unless the expired side carried a RST, a lone expired entry goes;
// fill is reported.
func TestPrivilegedConntrackGC(t *testing.T) {
	d := newWorld(t)
	now := monotonicNow()
	past, future := uint64(now-time.Second), uint64(now+time.Hour)
	put := func(k lxcCtKey, v lxcCtEntry) {
		t.Helper()
		if err := d.lxc.GenieCt.Update(&k, &v, ebpf.UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	// A DNAT flow client:port -> vip:80 to backend:8080 and its reply.
	pair := func(sport uint16, fwdExp, revExp uint64) (lxcCtKey, lxcCtKey) {
		fk := lxcCtKey{Vni: vniRed, Saddr: ip4(ip1), Daddr: ip4(vipWeb), Sport: htons(sport), Dport: htons(80), Proto: 6}
		fv := lxcCtEntry{Expires: fwdExp, Flags: ctFlagDNAT, DstAddr: ip4(ip2), DstPort: htons(8080), Vni: vniRed}
		rk := partnerKey(fk, fv)
		rv := lxcCtEntry{Expires: revExp, Flags: ctFlagSNAT | ctFlagReply, SrcAddr: ip4(vipWeb), SrcPort: htons(80), Vni: vniRed}
		if pk := partnerKey(rk, rv); pk != fk {
			t.Fatalf("partner of the reply %+v is %+v, want the forward key %+v", rk, pk, fk)
		}
		put(fk, fv)
		put(rk, rv)
		return fk, rk
	}
	deadF, deadR := pair(1000, past, past)
	halfF, halfR := pair(1001, past, future)
	liveF, liveR := pair(1002, future, future)
	lone, _ := pair(1003, past, past)
	_ = d.lxc.GenieCt.Delete(partnerKey(lone, lxcCtEntry{Flags: ctFlagDNAT, DstAddr: ip4(ip2), DstPort: htons(8080)}))
	// A reset flow: its expired RST direction takes the live other one.
	reset := func(k lxcCtKey) {
		t.Helper()
		var v lxcCtEntry
		if err := d.lxc.GenieCt.Lookup(&k, &v); err != nil {
			t.Fatal(err)
		}
		v.Flags |= ctFlagRST
		put(k, v)
	}
	resetF, resetR := pair(1004, past, future)
	reset(resetF)
	// ... but not a live entry of another flow under its partner key: the
	// expired entry is alone then, and goes by itself.
	strangerF, strangerR := pair(1005, past, future)
	reset(strangerF)
	put(strangerR, lxcCtEntry{Expires: future, Flags: ctFlagSNAT | ctFlagReply, SrcAddr: ip4(vipWeb), SrcPort: htons(81), Vni: vniRed})

	st, err := d.GCConntrack()
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted != 6 || st.Entries != 5 || st.Capacity != int(d.lxc.GenieCt.MaxEntries()) {
		t.Errorf("stats %+v, want 6 deleted, 5 left", st)
	}
	present := func(k lxcCtKey) bool {
		var v lxcCtEntry
		return d.lxc.GenieCt.Lookup(&k, &v) == nil
	}
	for name, k := range map[string]lxcCtKey{"expired forward": deadF, "expired reply": deadR, "lone expired": lone,
		"expired reset forward": resetF, "live reply of a reset flow": resetR, "expired reset forward of a stranger": strangerF} {
		if present(k) {
			t.Errorf("%s entry survived gc", name)
		}
	}
	for name, k := range map[string]lxcCtKey{"quiet forward of a live reply": halfF, "live reply": halfR, "live forward": liveF, "live reply of a live flow": liveR,
		"another flow's live entry under a reset entry's partner key": strangerR} {
		if !present(k) {
			t.Errorf("%s entry was deleted", name)
		}
	}
}

// TestPrivilegedConntrackHandle: a separate handle on the pins sees and
// collects the data plane's entries.
func TestPrivilegedConntrackHandle(t *testing.T) {
	d := newServiceWorld(t)
	if ret, _ := runSKB(t, d.lxc.FromPod, frame(gwMAC, redA.MAC, udpIP(ip1, 33000, vipDNS, 53, nil)), redA.HostIfindex); ret != tcActRedirect {
		t.Fatalf("verdict %d", ret)
	}
	c, err := OpenConntrack(d.cfg.PinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.GCConntrack()
	if err != nil || st.Entries != 2 || st.Deleted != 0 {
		t.Fatalf("gc through the pinned handle: %+v, %v; want the flow's 2 live entries", st, err)
	}
}
