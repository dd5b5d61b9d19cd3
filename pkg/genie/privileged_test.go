package genie

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

func forEachVersion(t *testing.T, fn func(t *testing.T, v string)) {
	for _, v := range specVersions {
		t.Run("cni-"+v, func(t *testing.T) { fn(t, v) })
	}
}

// inSubnet reports whether every address in addrs is in prefix (a string
// prefix of the dotted quad such as "10.20.0.").
func oneAddrIn(addrs []string, prefix string) bool {
	return len(addrs) == 1 && strings.HasPrefix(addrs[0], prefix) && strings.HasSuffix(addrs[0], "/24")
}

// resultIfaceOf returns the name of the interface an IP of res points at.
func resultIPsByIface(res *current.Result) map[string][]string {
	out := map[string][]string{}
	for _, ip := range res.IPs {
		name := "?"
		if ip.Interface != nil && *ip.Interface < len(res.Interfaces) {
			name = res.Interfaces[*ip.Interface].Name
			if res.Interfaces[*ip.Interface].Sandbox == "" {
				name = "host:" + name
			}
		}
		out[name] = append(out[name], ip.Address.String())
	}
	return out
}

// TestPrivilegedThreeInterfaces attaches bridge, macvlan@eth3 and bridge
// again (two plugins, three interfaces), checks addresses, routes and the
// merged result, then deletes and checks nothing is left.
func TestPrivilegedThreeInterfaces(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v string) {
		e := newTestEnv(t, v)
		pod := testenv.NewNS(t)
		a := e.cmdArgs("c3-"+e.sfx, pod, "IgnoreUnknown=1;GENIE_NETWORKS=br-a,mv@eth3,br-b")
		res, err := e.add(a)
		if err != nil {
			e.dumpLog()
			t.Fatalf("add: %v", err)
		}
		st := readPod(t, pod)
		if !oneAddrIn(st.addrs["eth0"], "10.10.0.") || !oneAddrIn(st.addrs["eth3"], "10.20.0.") ||
			!oneAddrIn(st.addrs["net1"], "10.30.0.") || len(st.addrs) != 3 {
			t.Fatalf("pod addresses: %v", st.addrs)
		}
		if d := st.defaultRoutes(); len(d) != 1 || d[0] != "via 10.10.0.1 dev eth0" {
			t.Fatalf("default routes: %v", d)
		}
		if !st.hasRoute("10.99.0.0/16", "10.30.0.1", "net1") {
			t.Fatalf("route 10.99.0.0/16 via 10.30.0.1 dev net1 missing: %+v", st.routes)
		}
		got := resultIPsByIface(res)
		for ifname, prefix := range map[string]string{"eth0": "10.10.0.", "eth3": "10.20.0.", "net1": "10.30.0."} {
			if len(got[ifname]) != 1 || !strings.HasPrefix(got[ifname][0], prefix) ||
				!slices.Contains(st.addrs[ifname], got[ifname][0]) {
				t.Errorf("result IPs of %s: %v, pod has %v", ifname, got[ifname], st.addrs[ifname])
			}
		}
		if len(e.allocations()) != 3 || len(e.records()) != 1 {
			t.Fatalf("allocations %v records %v", e.allocations(), e.records())
		}

		if err := e.del(a); err != nil {
			t.Fatalf("del: %v", err)
		}
		if st := readPod(t, pod); len(st.addrs) != 0 {
			t.Fatalf("interfaces left after DEL: %v", st.addrs)
		}
		if al := e.allocations(); len(al) != 0 {
			t.Fatalf("allocations left after DEL: %v", al)
		}
		if r := e.records(); len(r) != 0 {
			t.Fatalf("records left after DEL: %v", r)
		}
		if err := e.del(a); err != nil {
			t.Fatalf("second DEL (idempotent): %v", err)
		}
	})
}

// TestPrivilegedDelFromRecord deletes with no selection source left: no
// GENIE_NETWORKS in CNI_ARGS, the conf files removed, and (second case) the
// pod netns already gone. Only the record can say what to delete.
func TestPrivilegedDelFromRecord(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v string) {
		for _, netnsGone := range []bool{false, true} {
			e := newTestEnv(t, v)
			pod := testenv.NewNS(t)
			a := e.cmdArgs("cr-"+e.sfx, pod, "IgnoreUnknown=1;GENIE_NETWORKS=mv,br-b@eth7")
			if _, err := e.add(a); err != nil {
				e.dumpLog()
				t.Fatalf("add: %v", err)
			}
			if len(e.allocations()) != 2 {
				t.Fatalf("allocations after add: %v", e.allocations())
			}
			for _, f := range []string{"20-mv.conf", "30-br-b.conflist"} {
				if err := os.Remove(filepath.Join(e.confDir, f)); err != nil {
					t.Fatal(err)
				}
			}
			del := e.cmdArgs(a.ContainerID, pod, "")
			if netnsGone {
				del.Netns = ""
			}
			if err := e.del(del); err != nil {
				e.dumpLog()
				t.Fatalf("del (netns gone %v): %v", netnsGone, err)
			}
			if al := e.allocations(); len(al) != 0 {
				t.Fatalf("allocations left (netns gone %v): %v", netnsGone, al)
			}
			if !netnsGone {
				if st := readPod(t, pod); len(st.addrs) != 0 {
					t.Fatalf("interfaces left: %v", st.addrs)
				}
			}
		}
	})
}

// TestPrivilegedRollback makes the third of four networks fail (bad IPAM
// range at ADD time, or a missing plugin binary found at planning time) and
// checks no interface, allocation or record is left: the second and fourth
// are attached at the same time as the third (after the first) and must be
// rolled back with it.
func TestPrivilegedRollback(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v string) {
		for _, third := range []string{"bad-ipam", "missing"} {
			e := newTestEnv(t, v)
			pod := testenv.NewNS(t)
			a := e.cmdArgs("rb-"+e.sfx, pod, "IgnoreUnknown=1;GENIE_NETWORKS=br-a,mv,"+third+",br-b")
			_, err := e.add(a)
			var te *types.Error
			if !errors.As(err, &te) || !strings.Contains(te.Msg, third) {
				t.Fatalf("%s: want a CNI error naming the network, got %v", third, err)
			}
			t.Logf("%s: code %d: %s", third, te.Code, te.Msg)
			if st := readPod(t, pod); len(st.addrs) != 0 {
				t.Fatalf("%s: interfaces left: %v", third, st.addrs)
			}
			if al := e.allocations(); len(al) != 0 {
				t.Fatalf("%s: allocations left: %v", third, al)
			}
			if r := e.records(); len(r) != 0 {
				t.Fatalf("%s: records left: %v", third, r)
			}
		}
	})
}

// TestPrivilegedCheck checks a healthy attachment, then breaks one interface
// and expects CHECK to name the broken network. CHECK exists from 0.4.0.
func TestPrivilegedCheck(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v string) {
		if v == "0.3.1" {
			t.Skip("CHECK is not part of CNI 0.3.1 (skel refuses it before genie runs)")
		}
		e := newTestEnv(t, v)
		pod := testenv.NewNS(t)
		a := e.cmdArgs("ck-"+e.sfx, pod, "IgnoreUnknown=1;GENIE_NETWORKS=br-a,mv@eth3")
		if _, err := e.add(a); err != nil {
			e.dumpLog()
			t.Fatalf("add: %v", err)
		}
		t.Cleanup(func() { _ = e.del(a) })
		if err := e.check(a); err != nil {
			e.dumpLog()
			t.Fatalf("check of a healthy pod: %v", err)
		}
		err := pod.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName("eth3")
			if err != nil {
				return err
			}
			return netlink.LinkDel(l)
		})
		if err != nil {
			t.Fatal(err)
		}
		err = e.check(a)
		var te *types.Error
		if !errors.As(err, &te) || !strings.Contains(te.Msg, `"mv"`) || !strings.Contains(te.Msg, "check") {
			t.Fatalf("check after deleting eth3: want error naming network mv, got %v", err)
		}
	})
}

// TestPrivilegedGC attaches two pods, runs GC with only the first valid, and
// checks the second's record, interfaces and addresses are gone while the
// first is intact; a 1.1.0 delegate (the CNI project's noop test plugin) must
// receive the first pod's delegate attachments as cni.dev/valid-attachments.
func TestPrivilegedGC(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v string) {
		e := newTestEnv(t, v)
		noop := noopPlugin(t)
		if err := os.Symlink(noop, filepath.Join(filepath.Dir(e.confDir), "noop")); err != nil {
			t.Fatal(err)
		}
		e.binDir = e.binDir + string(os.PathListSeparator) + filepath.Dir(e.confDir)
		debugFile := filepath.Join(e.stateDir+"-noop", "debug.json")
		cmdLog := filepath.Join(e.stateDir+"-noop", "cmds.json")
		if err := os.MkdirAll(filepath.Dir(debugFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(debugFile, []byte(`{"ReportResult":"{\"cniVersion\":\"1.1.0\"}"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cmdLog, []byte(`[]`), 0o644); err != nil {
			t.Fatal(err)
		}
		e.writeConf("60-observer.conf", map[string]any{"cniVersion": "1.1.0", "name": "observer", "type": "noop",
			"debugFile": debugFile, "commandLog": cmdLog})

		podA, podB := testenv.NewNS(t), testenv.NewNS(t)
		a := e.cmdArgs("gca-"+e.sfx, podA, "IgnoreUnknown=1;GENIE_NETWORKS=br-a,mv,observer")
		b := e.cmdArgs("gcb-"+e.sfx, podB, "IgnoreUnknown=1;GENIE_NETWORKS=br-a,br-b")
		if _, err := e.add(a); err != nil {
			e.dumpLog()
			t.Fatalf("add a: %v", err)
		}
		t.Cleanup(func() { _ = e.del(a) })
		if _, err := e.add(b); err != nil {
			e.dumpLog()
			t.Fatalf("add b: %v", err)
		}
		if n := len(e.allocations()); n != 4 {
			t.Fatalf("allocations before GC: %v", e.allocations())
		}
		gcConf := map[string]any{}
		_ = json.Unmarshal(e.genieConf("1.1.0"), &gcConf)
		gcConf["cni.dev/valid-attachments"] = []any{map[string]any{"containerID": a.ContainerID, "ifname": "eth0"}}
		gcArgs := *a
		gcArgs.StdinData, _ = json.Marshal(gcConf)
		gcArgs.ContainerID, gcArgs.Netns, gcArgs.IfName, gcArgs.Args = "", "", "", ""
		// Pod b was added after the valid list could have been computed:
		// a GC now must keep it (the GC/ADD race, see CmdGC).
		if err := e.inHost(func() error { return CmdGC(&gcArgs) }); err != nil {
			e.dumpLog()
			t.Fatalf("gc: %v", err)
		}
		if r := e.records(); len(r) != 2 {
			t.Fatalf("records after a GC racing b's ADD: %v, want both", r)
		}
		if st := readPod(t, podB); len(st.addrs) != 2 {
			t.Fatalf("pod b interfaces after a GC racing its ADD: %v", st.addrs)
		}
		e.ageRecords(gcGrace + time.Minute)
		if err := e.inHost(func() error { return CmdGC(&gcArgs) }); err != nil {
			e.dumpLog()
			t.Fatalf("gc: %v", err)
		}
		if r := e.records(); len(r) != 1 || !strings.HasPrefix(r[0], a.ContainerID+"+") {
			t.Fatalf("records after GC: %v", r)
		}
		if st := readPod(t, podB); len(st.addrs) != 0 {
			t.Fatalf("pod b interfaces after GC: %v", st.addrs)
		}
		if st := readPod(t, podA); len(st.addrs) != 2 { // the observer creates no interface
			t.Fatalf("pod a interfaces after GC: %v", st.addrs)
		}
		al := e.allocations()
		if len(al) != 2 || !slices.ContainsFunc(al, func(s string) bool { return strings.HasPrefix(s, "br-a/") }) ||
			!slices.ContainsFunc(al, func(s string) bool { return strings.HasPrefix(s, "mv/") }) {
			t.Fatalf("allocations after GC: %v (want pod a's br-a and mv)", al)
		}
		var log []struct {
			Command string
			CmdArgs struct{ StdinData []byte }
		}
		data, err := os.ReadFile(cmdLog)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &log); err != nil {
			t.Fatal(err)
		}
		var gcSeen bool
		for _, entry := range log {
			if entry.Command != "GC" {
				continue
			}
			gcSeen = true
			var in struct {
				Valid []types.GCAttachment `json:"cni.dev/valid-attachments"`
			}
			if err := json.Unmarshal(entry.CmdArgs.StdinData, &in); err != nil {
				t.Fatal(err)
			}
			want := []types.GCAttachment{{ContainerID: a.ContainerID, IfName: "net2"}}
			if !slices.Equal(in.Valid, want) {
				t.Fatalf("observer got valid attachments %+v, want %+v", in.Valid, want)
			}
		}
		if !gcSeen {
			t.Fatalf("observer delegate never received GC; log %s", data)
		}
	})
}

// TestPrivilegedStatus runs STATUS against real delegates, then makes one
// delegate report "not available" and expects genie to report code 50.
func TestPrivilegedStatus(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v string) {
		e := newTestEnv(t, v)
		for _, f := range []string{"40-bad-ipam.conf", "50-missing.conf"} {
			os.Remove(filepath.Join(e.confDir, f))
		}
		status := func() error {
			a := e.cmdArgs("", nil, "")
			a.StdinData = e.genieConf("1.1.0")
			return e.inHost(func() error { return CmdStatus(a) })
		}
		if err := status(); err != nil {
			t.Fatalf("status with healthy delegates: %v", err)
		}
		// An uninstalled non-default network does not matter; an
		// uninstalled default network does.
		e.writeConf("50-missing.conf", map[string]any{"cniVersion": v, "name": "missing", "type": "genie-test-no-such-plugin"})
		if err := status(); err != nil {
			t.Fatalf("status with an uninstalled non-default network: %v", err)
		}
		e.extra["defaultNetworks"] = []string{"missing"}
		var te *types.Error
		if err := status(); !errors.As(err, &te) || te.Code != 50 || !strings.Contains(te.Msg, `"missing"`) {
			t.Fatalf("status with an uninstalled default network: want code 50, got %v", err)
		}
		delete(e.extra, "defaultNetworks")
		noop := noopPlugin(t)
		binDir := filepath.Join(filepath.Dir(e.confDir), "bin2")
		os.MkdirAll(binDir, 0o755)
		if err := os.Symlink(noop, filepath.Join(binDir, "noop")); err != nil {
			t.Fatal(err)
		}
		e.binDir += string(os.PathListSeparator) + binDir
		debugFile := filepath.Join(binDir, "debug.json")
		os.WriteFile(debugFile, []byte(`{"ReportError":"backend down","ReportErrorCode":50}`), 0o644)
		e.writeConf("60-sick.conf", map[string]any{"cniVersion": "1.1.0", "name": "sick", "type": "noop", "debugFile": debugFile})
		err := status()
		if !errors.As(err, &te) || te.Code != 50 || !strings.Contains(te.Msg, `"sick"`) {
			t.Fatalf("status with a sick delegate: want code 50 naming it, got %v", err)
		}
		os.WriteFile(debugFile, []byte(`{"ReportError":"backend down","ReportErrorCode":51}`), 0o644)
		if err := status(); !errors.As(err, &te) || te.Code != 51 {
			t.Fatalf("status with a delegate reporting 51: got %v", err)
		}
	})
}

// TestPrivilegedDelWithoutRecord: an attachment genie has no record of (ADD
// never completed through genie) is deleted from the default network under
// CNI_IFNAME, best effort, and DEL succeeds.
func TestPrivilegedDelWithoutRecord(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v string) {
		e := newTestEnv(t, v)
		pod := testenv.NewNS(t)
		a := e.cmdArgs("norec-"+e.sfx, pod, "IgnoreUnknown=1;GENIE_NETWORKS=br-a")
		if _, err := e.add(a); err != nil {
			t.Fatalf("add: %v", err)
		}
		// Forget the record, as if genie had crashed before writing it.
		if err := os.Remove(filepath.Join(e.stateDir, a.ContainerID+"+eth0.json")); err != nil {
			t.Fatal(err)
		}
		if len(e.allocations()) != 1 {
			t.Fatalf("allocations %v", e.allocations())
		}
		if err := e.del(e.cmdArgs(a.ContainerID, pod, "")); err != nil {
			t.Fatalf("del without record: %v", err)
		}
		if al := e.allocations(); len(al) != 0 {
			t.Fatalf("allocations left: %v", al)
		}
		if st := readPod(t, pod); len(st.addrs) != 0 {
			t.Fatalf("interfaces left: %v", st.addrs)
		}
		// Nothing at all to delete is still a success.
		if err := e.del(e.cmdArgs("never-added-"+e.sfx, nil, "")); err != nil {
			t.Fatalf("del of an unknown container: %v", err)
		}
	})
}

// TestPrivilegedAddAfterUnfinishedAdd: a record left by an ADD that never
// returned (genie killed) is cleaned up by the next ADD of the same
// attachment, so a changed selection leaks nothing.
func TestPrivilegedAddAfterUnfinishedAdd(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v string) {
		e := newTestEnv(t, v)
		pod := testenv.NewNS(t)
		first := e.cmdArgs("again-"+e.sfx, pod, "IgnoreUnknown=1;GENIE_NETWORKS=br-a,mv")
		if _, err := e.add(first); err != nil {
			t.Fatalf("first add: %v", err)
		}
		second := e.cmdArgs(first.ContainerID, pod, "IgnoreUnknown=1;GENIE_NETWORKS=br-a,br-b")
		if _, err := e.add(second); err != nil {
			e.dumpLog()
			t.Fatalf("second add: %v", err)
		}
		al := e.allocations()
		if len(al) != 2 || slices.ContainsFunc(al, func(s string) bool { return strings.HasPrefix(s, "mv/") }) {
			t.Fatalf("allocations %v, want br-a and br-b only", al)
		}
		if err := e.del(second); err != nil {
			t.Fatal(err)
		}
		if al := e.allocations(); len(al) != 0 {
			t.Fatalf("allocations after DEL: %v", al)
		}
	})
}
