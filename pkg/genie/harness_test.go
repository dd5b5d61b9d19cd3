package genie

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

// specVersions are the CNI versions every case runs under.
var specVersions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// cniBinDir is where the real reference plugins are; the test skips when
// they have not been built.
func cniBinDir(t testing.TB) string {
	dir := testenv.CNIBinDir(t)
	testenv.RequireBinaries(t, filepath.Join(dir, "bridge"), filepath.Join(dir, "host-local"), filepath.Join(dir, "macvlan"))
	return dir
}

// noopPlugin builds the CNI project's own test plugin (it records every
// command and its stdin) into a test temp dir, used to observe what genie
// hands a delegate on GC and STATUS.
func noopPlugin(t testing.TB) string {
	p := filepath.Join(t.TempDir(), "noop")
	cmd := exec.Command("go", "build", "-o", p, "github.com/containernetworking/cni/plugins/test/noop")
	cmd.Dir = testenv.ModuleRoot(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("building noop plugin: %v: %s", err, out)
	}
	return p
}

// testEnv is a "host" netns with a bridge/macvlan-ready setup, a conf dir
// of real delegate configs, and genie's own config, all at one CNI version.
type testEnv struct {
	t        testing.TB
	version  string
	host     ns.NetNS
	binDir   string
	confDir  string
	stateDir string
	ipamDir  string
	logFile  string
	sfx      string
	extra    map[string]any // extra genie config keys
}

func newTestEnv(t testing.TB, version string) *testEnv {
	testenv.RequireRoot(t, "creates network namespaces and links")
	e := &testEnv{t: t, version: version, binDir: cniBinDir(t), sfx: testenv.RandSuffix(), extra: map[string]any{}}
	dir := t.TempDir()
	e.confDir = filepath.Join(dir, "net.d")
	e.stateDir = filepath.Join(dir, "state")
	e.ipamDir = filepath.Join(dir, "ipam")
	e.logFile = filepath.Join(dir, "genie.log")
	if err := os.MkdirAll(e.confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.host = testenv.NewNS(t)
	// The macvlan master lives in the test's host netns.
	err := e.host.Do(func(ns.NetNS) error {
		// A veth end (the dummy driver may be missing).
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: e.master()}, PeerName: "gmp" + e.sfx}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		return netlink.LinkSetUp(v)
	})
	if err != nil {
		t.Fatalf("creating macvlan master: %v", err)
	}
	e.writeConf("00-genie.conflist", map[string]any{
		"cniVersion": version, "name": "genie-test",
		"plugins": []any{map[string]any{"type": "genie"}},
	})
	e.writeConf("10-br-a.conf", e.bridgeConf("br-a", "gba"+e.sfx, "10.10.0.0/24", true, nil))
	e.writeConf("20-mv.conf", map[string]any{
		"cniVersion": version, "name": "mv", "type": "macvlan", "master": e.master(), "mode": "bridge",
		"ipam": e.hostLocal("10.20.0.0/24", nil),
	})
	e.writeConf("30-br-b.conflist", map[string]any{
		"cniVersion": version, "name": "br-b",
		"plugins": []any{e.bridgeConf("", "gbb"+e.sfx, "10.30.0.0/24", false,
			[]any{map[string]any{"dst": "10.99.0.0/16"}})},
	})
	bad := e.bridgeConf("bad-ipam", "gbx"+e.sfx, "10.40.0.0/24", false, nil)
	bad["ipam"].(map[string]any)["ranges"] = []any{[]any{map[string]any{"subnet": "10.40.0.0/24", "rangeStart": "10.41.0.5"}}}
	e.writeConf("40-bad-ipam.conf", bad)
	e.writeConf("50-missing.conf", map[string]any{"cniVersion": version, "name": "missing", "type": "genie-test-no-such-plugin"})
	return e
}

func (e *testEnv) master() string { return "gmv" + e.sfx }

func (e *testEnv) hostLocal(subnet string, routes []any) map[string]any {
	ipam := map[string]any{"type": "host-local", "dataDir": e.ipamDir,
		"ranges": []any{[]any{map[string]any{"subnet": subnet}}}}
	if routes != nil {
		ipam["routes"] = routes
	}
	return ipam
}

func (e *testEnv) bridgeConf(name, br, subnet string, def bool, routes []any) map[string]any {
	c := map[string]any{"cniVersion": e.version, "type": "bridge", "bridge": br,
		"isGateway": true, "isDefaultGateway": def, "ipam": e.hostLocal(subnet, routes)}
	if name != "" {
		c["name"] = name
	}
	return c
}

func (e *testEnv) writeConf(file string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.confDir, file), data, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// genieConf is genie's stdin configuration.
func (e *testEnv) genieConf(version string) []byte {
	c := map[string]any{
		"cniVersion": version, "name": "genie-test", "type": "genie",
		"confDir": e.confDir, "stateDir": e.stateDir, "binDir": e.binDir,
		"logFile": e.logFile, "logLevel": "debug",
	}
	for k, v := range e.extra {
		c[k] = v
	}
	data, _ := json.Marshal(c)
	return data
}

func (e *testEnv) cmdArgs(cid string, pod ns.NetNS, cniArgs string) *skel.CmdArgs {
	a := &skel.CmdArgs{ContainerID: cid, IfName: "eth0", Args: cniArgs, Path: e.binDir, StdinData: e.genieConf(e.version)}
	if pod != nil {
		a.Netns = pod.Path()
	}
	return a
}

// inHost runs fn with the calling thread in the host netns, so delegate
// processes start there and create their host-side links there.
func (e *testEnv) inHost(fn func() error) error {
	return e.host.Do(func(ns.NetNS) error { return fn() })
}

func (e *testEnv) add(a *skel.CmdArgs) (*current.Result, error) {
	var res types.Result
	err := e.inHost(func() (err error) { res, err = Add(a); return err })
	if err != nil {
		return nil, err
	}
	var conf struct {
		CNIVersion string `json:"cniVersion"`
	}
	_ = json.Unmarshal(a.StdinData, &conf)
	if res.Version() != conf.CNIVersion {
		e.t.Fatalf("result version %s, want %s", res.Version(), conf.CNIVersion)
	}
	return current.NewResultFromResult(res)
}

func (e *testEnv) del(a *skel.CmdArgs) error   { return e.inHost(func() error { return CmdDel(a) }) }
func (e *testEnv) check(a *skel.CmdArgs) error { return e.inHost(func() error { return CmdCheck(a) }) }

// allocations lists the IPs host-local holds under the test's dataDir.
func (e *testEnv) allocations() []string { return testenv.HostLocalAllocations(e.ipamDir) }

func (e *testEnv) records() []string {
	var out []string
	entries, _ := os.ReadDir(e.stateDir)
	for _, en := range entries {
		if strings.HasSuffix(en.Name(), ".json") {
			out = append(out, en.Name())
		}
	}
	return out
}

func (e *testEnv) dumpLog() {
	if data, err := os.ReadFile(e.logFile); err == nil {
		e.t.Logf("genie log:\n%s", data)
	}
}

// podState is what a pod netns holds: IPv4 addresses per link (lo
// excluded) and its IPv4 routes.
type podState struct {
	addrs  map[string][]string
	routes []netlink.Route
	names  map[int]string
}

func readPod(t testing.TB, pod ns.NetNS) podState {
	st := podState{addrs: map[string][]string{}, names: map[int]string{}}
	err := pod.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			st.names[l.Attrs().Index] = l.Attrs().Name
			if l.Attrs().Name == "lo" {
				continue
			}
			addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			st.addrs[l.Attrs().Name] = nil
			for _, a := range addrs {
				st.addrs[l.Attrs().Name] = append(st.addrs[l.Attrs().Name], a.IPNet.String())
			}
		}
		st.routes, err = netlink.RouteList(nil, netlink.FAMILY_V4)
		return err
	})
	if err != nil {
		t.Fatalf("reading pod netns: %v", err)
	}
	return st
}

func (s podState) defaultRoutes() []string {
	var out []string
	for _, r := range s.routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			out = append(out, fmt.Sprintf("via %s dev %s", r.Gw, s.names[r.LinkIndex]))
		}
	}
	return out
}

func (s podState) hasRoute(dst, gw, dev string) bool {
	for _, r := range s.routes {
		if r.Dst != nil && r.Dst.String() == dst && r.Gw.String() == gw && s.names[r.LinkIndex] == dev {
			return true
		}
	}
	return false
}
