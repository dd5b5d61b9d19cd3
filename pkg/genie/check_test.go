package genie

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

// ageRecords moves the Created time of every record d into the past, as
// if the ADDs had happened that long ago.
func (e *testEnv) ageRecords(d time.Duration) { ageRecords(e.t, e.stateDir, d) }

func ageRecords(t testing.TB, stateDir string, d time.Duration) {
	t.Helper()
	st := store{dir: stateDir}
	recs, err := st.list()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		r.Created = r.Created.Add(-d)
		if err := st.save(r); err != nil {
			t.Fatal(err)
		}
	}
}

func vpcResult() *current.Result {
	_, dst, _ := net.ParseCIDR("10.99.0.0/16")
	_, def, _ := net.ParseCIDR("0.0.0.0/0")
	addr := net.IPNet{IP: net.ParseIP("10.1.0.5").To4(), Mask: net.CIDRMask(24, 32)}
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: "gv1234", Mac: "aa:bb:cc:dd:ee:01"},
			{Name: "eth1", Mac: "02:00:0a:01:00:05", Mtu: 1450, Sandbox: "/var/run/netns/p"},
		},
		IPs:    []*current.IPConfig{{Interface: current.Int(1), Address: addr, Gateway: net.ParseIP("10.1.0.1")}},
		Routes: []*types.Route{{Dst: *dst, GW: net.ParseIP("10.1.0.1")}, {Dst: *def, GW: net.ParseIP("10.1.0.1")}},
	}
}

func checkInv(t *testing.T, version string, prev *current.Result) *invocation {
	t.Helper()
	conf := map[string]any{"cniVersion": version, "name": "genie-test", "type": "genie"}
	if prev != nil {
		r, err := prev.GetAsVersion(version)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(r)
		var raw map[string]any
		_ = json.Unmarshal(data, &raw)
		conf["prevResult"] = raw
	}
	data, _ := json.Marshal(conf)
	c, err := ParseConfig(data, "")
	if err != nil {
		t.Fatal(err)
	}
	return &invocation{conf: c}
}

// CHECK compares the runtime's prevResult with the recorded result: a
// changed route, MTU, address or MAC is an error naming what differs; the
// same result (in any version) passes.
func TestCheckPrevResult(t *testing.T) {
	recorded, _ := json.Marshal(vpcResult())
	rec := &Record{ContainerID: "c1", IfName: "eth0", Result: recorded}
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		if err := checkInv(t, v, vpcResult()).checkPrevResult(rec); err != nil {
			t.Errorf("%s: the same result: %v", v, err)
		}
	}
	cases := []struct {
		name   string
		change func(r *current.Result)
		want   []string
		onlyV1 bool // a 0.4.0 result has no MTU
	}{
		{"route gone", func(r *current.Result) { r.Routes = r.Routes[:1] },
			[]string{"route 0.0.0.0/0 via 10.1.0.1: in the attachment, missing from prevResult"}, false},
		{"route gateway", func(r *current.Result) { r.Routes[0].GW = net.ParseIP("10.1.0.254") },
			[]string{"route 10.99.0.0/16 via 10.1.0.254: in prevResult", "route 10.99.0.0/16 via 10.1.0.1: in the attachment"}, false},
		{"route mtu", func(r *current.Result) { r.Routes[0].MTU = 1400 },
			[]string{"route 10.99.0.0/16 via 10.1.0.1 mtu 1400: in prevResult"}, false},
		{"interface mtu", func(r *current.Result) { r.Interfaces[1].Mtu = 1500 },
			[]string{"interface 1 (eth1): mtu 1500, the attachment has 1450"}, true},
		{"address", func(r *current.Result) { r.IPs[0].Address.IP = net.ParseIP("10.1.0.6").To4() },
			[]string{"address 10.1.0.6/24 gw 10.1.0.1 on interface 1: in prevResult"}, false},
		{"mac", func(r *current.Result) { r.Interfaces[1].Mac = "02:00:0a:01:00:06" },
			[]string{`interface 1 (eth1): mac "02:00:0a:01:00:06"`}, false},
	}
	for _, c := range cases {
		for _, v := range []string{"0.4.0", "1.1.0"} {
			prev := vpcResult()
			c.change(prev)
			err := checkInv(t, v, prev).checkPrevResult(rec)
			if c.onlyV1 && v == "0.4.0" {
				if err != nil {
					t.Errorf("%s %s: a 0.4.0 prevResult cannot carry an MTU, yet: %v", c.name, v, err)
				}
				continue
			}
			var te *types.Error
			if !errors.As(err, &te) {
				t.Errorf("%s %s: err = %v, want a CNI error", c.name, v, err)
				continue
			}
			for _, w := range c.want {
				if !strings.Contains(te.Msg, w) {
					t.Errorf("%s %s: error %q does not say %q", c.name, v, te.Msg, w)
				}
			}
		}
	}
	// No prevResult, or a record without a result: nothing to compare.
	if err := checkInv(t, "1.1.0", nil).checkPrevResult(rec); err != nil {
		t.Errorf("no prevResult: %v", err)
	}
	if err := checkInv(t, "1.1.0", vpcResult()).checkPrevResult(&Record{}); err != nil {
		t.Errorf("no recorded result: %v", err)
	}
}

// End to end: ADD records its result; CHECK with that result as prevResult
// passes; CHECK with a route the pod never got fails naming it.
func TestPrivilegedCheckPrevResult(t *testing.T) {
	e := newTestEnv(t, "1.1.0")
	pod := testenv.NewNS(t)
	a := e.cmdArgs("cp-"+e.sfx, pod, "IgnoreUnknown=1;GENIE_NETWORKS=br-a,br-b")
	res, err := e.add(a)
	if err != nil {
		e.dumpLog()
		t.Fatalf("add: %v", err)
	}
	t.Cleanup(func() { _ = e.del(a) })
	withPrev := func(r *current.Result) {
		conf := map[string]any{}
		_ = json.Unmarshal(e.genieConf("1.1.0"), &conf)
		data, _ := json.Marshal(r)
		var raw map[string]any
		_ = json.Unmarshal(data, &raw)
		conf["prevResult"] = raw
		a.StdinData, _ = json.Marshal(conf)
	}
	withPrev(res)
	if err := e.check(a); err != nil {
		e.dumpLog()
		t.Fatalf("check with ADD's own result as prevResult: %v", err)
	}
	if len(res.Routes) == 0 {
		t.Fatalf("br-b's result has no route to drop: %+v", res)
	}
	bad, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	dropped := bad.Routes[len(bad.Routes)-1].Dst.String()
	bad.Routes = bad.Routes[:len(bad.Routes)-1]
	withPrev(bad)
	err = e.check(a)
	if err == nil || !strings.Contains(err.Error(), "route "+dropped) || !strings.Contains(err.Error(), "missing from prevResult") {
		t.Fatalf("check with a route missing from prevResult: err = %v, want one naming route %s", err, dropped)
	}
	// The result lives in the record (written atomically with the rest).
	data, err := os.ReadFile(filepath.Join(e.stateDir, a.ContainerID+"+eth0.json"))
	if err != nil || !strings.Contains(string(data), `"result"`) {
		t.Fatalf("record without result: %v %s", err, data)
	}
}

// The GC/ADD race, deterministically: the runtime computes its valid
// list (pod a only), then pod b's ADD runs to completion, then GC runs
// with the old list. b must survive; once b's record is older than
// gcGrace, a GC that still does not list it collects it.
func TestPrivilegedGCSparesAddAfterValidList(t *testing.T) {
	e := newTestEnv(t, "1.1.0")
	podA, podB := testenv.NewNS(t), testenv.NewNS(t)
	a := e.cmdArgs("ra-"+e.sfx, podA, "IgnoreUnknown=1;GENIE_NETWORKS=br-a")
	b := e.cmdArgs("rb-"+e.sfx, podB, "IgnoreUnknown=1;GENIE_NETWORKS=br-a")
	if _, err := e.add(a); err != nil {
		e.dumpLog()
		t.Fatalf("add a: %v", err)
	}
	t.Cleanup(func() { _ = e.del(a) })
	gcConf := map[string]any{}
	_ = json.Unmarshal(e.genieConf("1.1.0"), &gcConf)
	gcConf["cni.dev/valid-attachments"] = []any{map[string]any{"containerID": a.ContainerID, "ifname": "eth0"}} // computed now
	gcArgs := *a
	gcArgs.StdinData, _ = json.Marshal(gcConf)
	gcArgs.ContainerID, gcArgs.Netns, gcArgs.IfName, gcArgs.Args = "", "", "", ""
	if _, err := e.add(b); err != nil { // the ADD racing the GC
		e.dumpLog()
		t.Fatalf("add b: %v", err)
	}
	t.Cleanup(func() { _ = e.del(b) })
	if err := e.inHost(func() error { return CmdGC(&gcArgs) }); err != nil {
		e.dumpLog()
		t.Fatalf("gc: %v", err)
	}
	if st := readPod(t, podB); len(st.addrs["eth0"]) != 1 {
		t.Fatalf("pod b lost its interface to a GC whose valid list predates its ADD: %v", st.addrs)
	}
	if r := e.records(); len(r) != 2 {
		t.Fatalf("records: %v", r)
	}
	e.ageRecords(gcGrace + time.Second)
	if err := e.inHost(func() error { return CmdGC(&gcArgs) }); err != nil {
		e.dumpLog()
		t.Fatalf("gc: %v", err)
	}
	if st := readPod(t, podB); len(st.addrs) != 0 {
		t.Fatalf("pod b not collected once older than the grace period: %v", st.addrs)
	}
	if st := readPod(t, podA); len(st.addrs["eth0"]) != 1 {
		t.Fatalf("pod a collected: %v", st.addrs)
	}
}
