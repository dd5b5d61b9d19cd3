package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/cni-genie/cni-genie/pkg/testutil/testenv"
)

var specVersions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// tools returns the reference plugin dir and the cnitool path, skipping
// when they have not been built.
func tools(t testing.TB) (cniBin, cnitool string) {
	cniBin = testenv.CNIBinDir(t)
	cnitool = filepath.Join(testenv.BinDir(t), "cnitool")
	testenv.RequireBinaries(t, filepath.Join(cniBin, "bridge"), filepath.Join(cniBin, "host-local"), cnitool)
	return cniBin, cnitool
}

var (
	buildOnce sync.Once
	genieDir  string
	buildErr  error
)

// genieBinary builds cmd/genie once per test process into a temp dir (which
// holds only genie, so it can be prepended to CNI_PATH).
func genieBinary(t testing.TB) string {
	buildOnce.Do(func() {
		genieDir, buildErr = os.MkdirTemp("", "genie-bin-")
		if buildErr != nil {
			return
		}
		// passthru is the benchmark's floor: a minimal exec-only meta-plugin.
		// Both are built as the Makefile ships genie (static, stripped), so
		// the benchmark measures what is installed.
		for name, pkg := range map[string]string{"genie": "./cmd/genie", "passthru": "./test/integration/testdata/passthru"} {
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(genieDir, name), pkg)
			cmd.Dir = testenv.ModuleRoot(t)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("building %s: %v: %s", name, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return genieDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if genieDir != "" {
		os.RemoveAll(genieDir)
	}
	os.Exit(code)
}

// node is a test "host" netns with a conf dir holding genie's conflist and
// real delegate confs, as a runtime's node would have.
type node struct {
	t        testing.TB
	version  string
	host     ns.NetNS
	cniBin   string
	cnitool  string
	cniPath  string
	confDir  string
	stateDir string
	ipamDir  string
	sfx      string
}

func newNode(t testing.TB, version string, genieKeys map[string]any) *node {
	testenv.RequireRoot(t, "creates network namespaces and links")
	cniBin, cnitool := tools(t)
	n := &node{t: t, version: version, cniBin: cniBin, cnitool: cnitool, sfx: testenv.RandSuffix()}
	n.cniPath = genieBinary(t) + string(os.PathListSeparator) + cniBin
	dir := t.TempDir()
	n.confDir, n.stateDir, n.ipamDir = filepath.Join(dir, "net.d"), filepath.Join(dir, "state"), filepath.Join(dir, "ipam")
	os.MkdirAll(n.confDir, 0o755)
	n.host = testenv.NewNS(t)
	err := n.host.Do(func(ns.NetNS) error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "gmv" + n.sfx}, PeerName: "gmp" + n.sfx}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		return netlink.LinkSetUp(v)
	})
	if err != nil {
		t.Fatalf("creating macvlan master: %v", err)
	}
	genie := map[string]any{"type": "genie", "confDir": n.confDir, "stateDir": n.stateDir,
		"logFile": filepath.Join(dir, "genie.log"), "logLevel": "info"}
	for k, v := range genieKeys {
		genie[k] = v
	}
	n.write("00-genie.conflist", map[string]any{"cniVersion": version, "name": "genie-net", "plugins": []any{genie}})
	n.write("10-br-a.conf", n.bridge("br-a", "gba"+n.sfx, "10.10.0.0/24", true))
	n.write("20-mv.conf", map[string]any{"cniVersion": version, "name": "mv", "type": "macvlan",
		"master": "gmv" + n.sfx, "mode": "bridge", "ipam": n.hostLocal("10.20.0.0/24")})
	n.write("30-br-b.conf", n.bridge("br-b", "gbb"+n.sfx, "10.30.0.0/24", false))
	return n
}

func (n *node) hostLocal(subnet string) map[string]any {
	return map[string]any{"type": "host-local", "dataDir": n.ipamDir,
		"ranges": []any{[]any{map[string]any{"subnet": subnet}}}}
}

func (n *node) bridge(name, br, subnet string, def bool) map[string]any {
	return map[string]any{"cniVersion": n.version, "name": name, "type": "bridge", "bridge": br,
		"isGateway": true, "isDefaultGateway": def, "ipam": n.hostLocal(subnet)}
}

func (n *node) write(file string, v any) {
	data, _ := json.Marshal(v)
	if err := os.WriteFile(filepath.Join(n.confDir, file), data, 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// cnitool runs the real cnitool in the host netns, exactly as a runtime
// would drive a plugin: network name, netns path, CNI_ARGS in env.
func (n *node) run(verb, network string, pod ns.NetNS, cniArgs string) ([]byte, error) {
	var out []byte
	var err error
	podPath := "/nonexistent"
	if pod != nil {
		podPath = pod.Path()
	}
	derr := n.host.Do(func(ns.NetNS) error {
		cmd := exec.Command(n.cnitool, verb, network, podPath)
		cmd.Env = append(os.Environ(), "NETCONFPATH="+n.confDir, "CNI_PATH="+n.cniPath, "CNI_ARGS="+cniArgs)
		out, err = cmd.CombinedOutput()
		return nil
	})
	if derr != nil {
		n.t.Fatal(derr)
	}
	return out, err
}

func (n *node) allocations() []string { return testenv.HostLocalAllocations(n.ipamDir) }

func podLinks(t testing.TB, pod ns.NetNS) map[string][]string {
	out := map[string][]string{}
	err := pod.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Attrs().Name == "lo" {
				continue
			}
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
			out[l.Attrs().Name] = nil
			for _, a := range addrs {
				out[l.Attrs().Name] = append(out[l.Attrs().Name], a.IPNet.String())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
