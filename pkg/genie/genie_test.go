package genie

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/selection"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"g","type":"genie"}`), "/a:/b")
	if err != nil {
		t.Fatal(err)
	}
	if c.ConfDir != DefaultConfDir || c.StateDir != DefaultStateDir || c.BinDir != "/a:/b" ||
		c.AgentSocket != agentapi.DefaultSocket || c.LogLevel != DefaultLogLevel || c.Kubeconfig != "" ||
		c.AttachParallelism != DefaultAttachParallelism {
		t.Fatalf("defaults: %+v", c)
	}
	if p := c.binPaths(); !slices.Equal(p, []string{"/a", "/b"}) {
		t.Fatalf("bin paths %v", p)
	}
	c, _ = ParseConfig([]byte(`{"cniVersion":"0.3.1","name":"g","type":"genie"}`), "")
	if c.BinDir != DefaultBinDir {
		t.Fatalf("bin dir without CNI_PATH: %q", c.BinDir)
	}
	for _, bad := range []string{
		`{"cniVersion":"1.1.0","logLevel":"loud"}`,
		`{"cniVersion":"1.1.0","stateDir":"relative"}`,
		`{"cniVersion":"x.y"}`,
		`{"cniVersion":"1.1.0","defaultNetworks":[""]}`,
		`{"cniVersion":"1.1.0","attachParallelism":-1}`,
		`{"confDir":5}`,
		`not json`,
	} {
		if _, err := ParseConfig([]byte(bad), ""); err == nil {
			t.Errorf("%s: want error", bad)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"g","type":"genie","confDir":"/etc/cni/net.d","defaultNetworks":["a"],"logLevel":"debug"}`))
	f.Add([]byte(`{"cniVersion":"0.3.1","runtimeConfig":{"portMappings":[]},"cni.dev/valid-attachments":[{"containerID":"c","ifname":"eth0"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data, "")
		if err != nil {
			return
		}
		if c.ConfDir == "" || c.StateDir == "" || c.BinDir == "" || c.AgentSocket == "" ||
			!filepath.IsAbs(c.StateDir) || !filepath.IsAbs(c.ConfDir) {
			t.Fatalf("defaults not applied: %+v", c)
		}
		if _, err := parseLevel(c.LogLevel); err != nil {
			t.Fatalf("accepted bad level %q", c.LogLevel)
		}
	})
}

func FuzzParseNetwork(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"a","type":"bridge"}`), "nad")
	f.Add([]byte(`{"cniVersion":"1.0.0","plugins":[{"type":"macvlan"},{"type":"tuning"}]}`), "n")
	f.Add([]byte(`{"cniVersion":"1.1.0","type":"genie-vpc","vpc":"blue","subnet":"web"}`), "v")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		n, err := ParseNetwork(data, name, "fuzz")
		if err != nil {
			return
		}
		if n.Name == "" || (n.List == nil) == (n.VPC == "") {
			t.Fatalf("inconsistent network %+v", n)
		}
		if n.List != nil && len(n.List.Plugins) == 0 {
			t.Fatalf("list without plugins")
		}
	})
}

// unprivEnv is a conf dir and state dir without namespaces: for failures
// that happen before anything is attached, and for VPC networks served by an
// in-test agent.
type unprivEnv struct {
	dir, confDir, stateDir, socket string
}

func newUnprivEnv(t *testing.T) *unprivEnv {
	dir := t.TempDir()
	e := &unprivEnv{dir: dir, confDir: filepath.Join(dir, "net.d"), stateDir: filepath.Join(dir, "state"),
		socket: filepath.Join(dir, "agent.sock")}
	os.MkdirAll(e.confDir, 0o755)
	// A stand-in for the pod's netns: ADD only checks that it exists; the
	// in-test agent and the failing delegates never enter it.
	os.WriteFile(e.netns(), nil, 0o644)
	return e
}

func (e *unprivEnv) netns() string { return filepath.Join(e.dir, "netns") }

func (e *unprivEnv) write(t *testing.T, file, body string) {
	if err := os.WriteFile(filepath.Join(e.confDir, file), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (e *unprivEnv) args(cid, cniArgs, binDir string) *skel.CmdArgs {
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "genie", "type": "genie",
		"confDir": e.confDir, "stateDir": e.stateDir, "binDir": binDir, "agentSocket": e.socket,
		"logFile": filepath.Join(e.dir, "genie.log")})
	return &skel.CmdArgs{ContainerID: cid, IfName: "eth0", Netns: e.netns(),
		Args: cniArgs, Path: binDir, StdinData: conf}
}

// TestBadInput checks refusals that must happen before anything is
// attached: the error is a CNI error naming the network and step, and no
// record is written.
func TestBadInput(t *testing.T) {
	bin := cniBinDir(t)
	e := newUnprivEnv(t)
	e.write(t, "10-a.conf", `{"cniVersion":"1.1.0","name":"net-a","type":"bridge","ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}`)
	e.write(t, "20-b.conf", `{"cniVersion":"1.1.0","name":"net-b","type":"macvlan","ipam":{"type":"no-such-ipam"}}`)
	e.write(t, "30-c.conf", `{"cniVersion":"1.1.0","name":"net-c","type":"no-such-plugin"}`)
	for _, tc := range []struct {
		args, want string
		code       uint
	}{
		{"GENIE_NETWORKS=net-a,unknown-net", `"unknown-net"`, types.ErrInvalidNetworkConfig},
		{"GENIE_NETWORKS=net-a,net-a@eth0", `interface "eth0"`, types.ErrInvalidNetworkConfig},
		{"GENIE_NETWORKS=net-a,net-c", "missing plugin binary", types.ErrInvalidNetworkConfig},
		{"GENIE_NETWORKS=net-a,net-b", "missing ipam plugin binary", types.ErrInvalidNetworkConfig},
		{"GENIE_NETWORKS=net-a,,net-b", "element 2 is empty", types.ErrInvalidEnvironmentVariables},
		{"GENIE_NETWORKS=ns/net-a", "namespaces are not allowed", types.ErrInvalidEnvironmentVariables},
		{"GENIE_NETWORKS=a=b", "CNI_ARGS", types.ErrInvalidEnvironmentVariables},
	} {
		_, err := Add(e.args("bad", tc.args, bin))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != tc.code || !strings.Contains(te.Msg, tc.want) {
			t.Errorf("%s: want code %d containing %q, got %v", tc.args, tc.code, tc.want, err)
		}
		if recs, _ := filepath.Glob(filepath.Join(e.stateDir, "*.json")); len(recs) != 0 {
			t.Fatalf("%s: record left behind: %v", tc.args, recs)
		}
	}
	// No conf at all and no default: an error, never a hard-coded plugin.
	empty := newUnprivEnv(t)
	if _, err := Add(empty.args("c", "", bin)); err == nil || !strings.Contains(err.Error(), "no default network") {
		t.Fatalf("empty conf dir: %v", err)
	}
}

// TestDefaultNetworkSelection checks the default is genie-independent: the
// configured defaultNetworks, else the first valid conf that is not genie's.
func TestDefaultNetworkSelection(t *testing.T) {
	e := newUnprivEnv(t)
	e.write(t, "00-genie.conflist", `{"cniVersion":"1.1.0","name":"genie","plugins":[{"type":"genie"}]}`)
	e.write(t, "05-broken.conf", `{"cniVersion":"1.1.0","name":"broken"`)
	e.write(t, "10-first.conf", `{"cniVersion":"1.1.0","name":"first","type":"bridge"}`)
	e.write(t, "20-second.conflist", `{"cniVersion":"1.1.0","name":"second","plugins":[{"type":"ptp"},{"type":"tuning"}]}`)
	cd, err := loadConfDir(e.confDir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	d, err := cd.defaults(nil)
	if err != nil || d[0].Name != "first" {
		t.Fatalf("default: %v %v", d, err)
	}
	d, err = cd.defaults([]string{"second", "bridge"})
	if err != nil || d[0].Name != "second" || d[1].Name != "first" {
		t.Fatalf("configured defaults (by name, then by type): %v %v", d, err)
	}
	if n, err := cd.lookup("ptp"); err != nil || n.Name != "second" {
		t.Fatalf("lookup by type: %v %v", n, err)
	}
}

// vpcAgent is an in-test agent backend behind the real agentapi handler and
// socket: the protocol boundary genie talks to.
type vpcAgent struct {
	mu       sync.Mutex
	attached []string // containerID/ifname in attach order
	detached []string
	attachRq []agentapi.AttachRequest
	gcValid  []agentapi.Attachment
	failVPC  string
	ready    bool
}

func (a *vpcAgent) Attach(_ context.Context, r *agentapi.AttachRequest) (*current.Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.VPC == a.failVPC {
		return nil, &types.Error{Code: types.ErrInvalidNetworkConfig, Msg: "subnet " + r.Subnet + " is full"}
	}
	a.attached = append(a.attached, r.ContainerID+"/"+r.IfName)
	a.attachRq = append(a.attachRq, *r)
	idx := 0
	ip := net.IPv4(10, 77, byte(len(a.attached)), 5)
	return &current.Result{CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: r.IfName, Sandbox: r.Netns, Mac: "02:00:00:00:00:0" + string(rune('0'+len(a.attached)))}},
		IPs:        []*current.IPConfig{{Interface: &idx, Address: net.IPNet{IP: ip, Mask: net.CIDRMask(24, 32)}}},
	}, nil
}

func (a *vpcAgent) Detach(_ context.Context, r *agentapi.DetachRequest) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.detached = append(a.detached, r.ContainerID+"/"+r.IfName)
	return nil
}
func (a *vpcAgent) Check(context.Context, *agentapi.CheckRequest) error { return nil }
func (a *vpcAgent) GC(_ context.Context, r *agentapi.GCRequest) (*agentapi.GCResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gcValid = r.Valid
	return &agentapi.GCResponse{}, nil
}
func (a *vpcAgent) Status(context.Context) (*agentapi.StatusResponse, error) {
	return &agentapi.StatusResponse{Ready: a.ready, Message: "warming up"}, nil
}

func startAgent(t *testing.T, socket string) *vpcAgent {
	l, err := agentapi.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	a := &vpcAgent{ready: true}
	srv := &http.Server{Handler: agentapi.Handler(a)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return a
}

// TestVPCNetworks drives VPC networks (shorthand and conf file) through the
// real agent socket protocol: ADD order and ifnames, merged result, rollback,
// DEL order, GC forwarding and STATUS.
func TestVPCNetworks(t *testing.T) {
	e := newUnprivEnv(t)
	e.write(t, "10-blue-web.conf", `{"cniVersion":"1.1.0","name":"blue-web","type":"genie-vpc","vpc":"blue","subnet":"web"}`)
	agent := startAgent(t, e.socket)
	bin := t.TempDir()

	a := e.args("vpc1", "IgnoreUnknown=1;GENIE_NETWORKS=blue-web,vpc:red/db@eth9,vpc:green/app", bin)
	res, err := Add(a)
	if err != nil {
		t.Fatalf("add: %v", err)
	}
	// The first network alone, then the others at once (any order).
	if len(agent.attached) != 3 || agent.attached[0] != "vpc1/eth0" ||
		!slices.Contains(agent.attached, "vpc1/eth9") || !slices.Contains(agent.attached, "vpc1/net1") {
		t.Fatalf("attached %v, want eth0 then eth9 and net1", agent.attached)
	}
	for _, rq := range agent.attachRq {
		if want := map[string]string{"eth0": "blue/web", "eth9": "red/db", "net1": "green/app"}[rq.IfName]; rq.VPC+"/"+rq.Subnet != want {
			t.Fatalf("attach request of %s: %s/%s, want %s", rq.IfName, rq.VPC, rq.Subnet, want)
		}
	}
	r := res.(*current.Result)
	if len(r.Interfaces) != 3 || len(r.IPs) != 3 {
		t.Fatalf("merged result %+v", r)
	}
	for i, ip := range r.IPs {
		if *ip.Interface != i || r.Interfaces[i].Name != []string{"eth0", "eth9", "net1"}[i] {
			t.Fatalf("IP %d points at interface %d (%s)", i, *ip.Interface, r.Interfaces[*ip.Interface].Name)
		}
	}

	// A second pod whose second network fails: the first is detached again.
	agent.failVPC = "red"
	_, err = Add(e.args("vpc2", "GENIE_NETWORKS=vpc:blue/web,vpc:red/db", bin))
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, "vpc:red/db") ||
		!strings.Contains(te.Msg, "is full") {
		t.Fatalf("failing attach: %v", err)
	}
	if !slices.Equal(agent.detached, []string{"vpc2/net1", "vpc2/eth0"}) {
		t.Fatalf("rollback detached %v", agent.detached)
	}
	if _, err := os.Stat(filepath.Join(e.stateDir, "vpc2+eth0.json")); !os.IsNotExist(err) {
		t.Fatalf("record of failed ADD left: %v", err)
	}

	// GC: vpc1 valid; a stale record is detached and the agent gets the
	// valid VPC attachments.
	agent.failVPC = ""
	if _, err := Add(e.args("vpc3", "GENIE_NETWORKS=vpc:blue/web", bin)); err != nil {
		t.Fatal(err)
	}
	agent.detached = nil
	ageRecords(t, e.stateDir, gcGrace+time.Second) // not an ADD racing the GC
	gc := e.args("", "", bin)
	conf := map[string]any{}
	json.Unmarshal(gc.StdinData, &conf)
	conf["cni.dev/valid-attachments"] = []map[string]string{{"containerID": "vpc1", "ifname": "eth0"}}
	gc.StdinData, _ = json.Marshal(conf)
	if err := CmdGC(gc); err != nil {
		t.Fatalf("gc: %v", err)
	}
	if !slices.Equal(agent.detached, []string{"vpc3/eth0"}) {
		t.Fatalf("gc detached %v", agent.detached)
	}
	want := []agentapi.Attachment{{ContainerID: "vpc1", IfName: "eth0"}, {ContainerID: "vpc1", IfName: "eth9"}, {ContainerID: "vpc1", IfName: "net1"}}
	if !slices.Equal(agent.gcValid, want) {
		t.Fatalf("agent gc valid %+v, want %+v", agent.gcValid, want)
	}

	// STATUS follows the agent.
	if err := CmdStatus(e.args("", "", bin)); err != nil {
		t.Fatalf("status: %v", err)
	}
	agent.ready = false
	if err := CmdStatus(e.args("", "", bin)); !errors.As(err, &te) || te.Code != agentapi.ErrCodeNotAvailable {
		t.Fatalf("status with agent not ready: %v", err)
	}

	// DEL in reverse order, then idempotent.
	agent.detached = nil
	if err := CmdDel(a); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(agent.detached, []string{"vpc1/net1", "vpc1/eth9", "vpc1/eth0"}) {
		t.Fatalf("del order %v", agent.detached)
	}
	if err := CmdDel(a); err != nil {
		t.Fatalf("second del: %v", err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestRuntimeConfigOnlyToDefault: the runtime's capability arguments reach
// the default network (when it declares them) and no other network; the
// CNI project's noop plugin records what each delegate got.
func TestRuntimeConfigOnlyToDefault(t *testing.T) {
	noop := noopPlugin(t)
	e := newUnprivEnv(t)
	bin := filepath.Dir(noop)
	for _, name := range []string{"first", "second"} {
		dbg := filepath.Join(e.dir, name+".debug")
		log := filepath.Join(e.dir, name+".log")
		os.WriteFile(dbg, []byte(`{"ReportResult":"{\"cniVersion\":\"1.1.0\"}"}`), 0o644)
		os.WriteFile(log, []byte(`[]`), 0o644)
		e.write(t, "10-"+name+".conf", `{"cniVersion":"1.1.0","name":"`+name+`","type":"noop","capabilities":{"portMappings":true},`+
			`"debugFile":"`+dbg+`","commandLog":"`+log+`"}`)
	}
	a := e.args("rtc", "GENIE_NETWORKS=first,second", bin)
	conf := map[string]any{}
	json.Unmarshal(a.StdinData, &conf)
	conf["runtimeConfig"] = map[string]any{"portMappings": []any{map[string]any{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}}}
	a.StdinData, _ = json.Marshal(conf)
	if _, err := Add(a); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"first": true, "second": false} {
		data, _ := os.ReadFile(filepath.Join(e.dir, name+".log"))
		var entries []struct {
			Command string
			CmdArgs struct {
				StdinData []byte
				Args      string
			}
		}
		json.Unmarshal(data, &entries)
		if len(entries) != 1 || entries[0].Command != "ADD" {
			t.Fatalf("%s: log %s", name, data)
		}
		var in struct {
			RuntimeConfig map[string]any `json:"runtimeConfig"`
		}
		json.Unmarshal(entries[0].CmdArgs.StdinData, &in)
		if _, got := in.RuntimeConfig["portMappings"]; got != want {
			t.Errorf("%s: got portMappings %v, want %v (stdin %s)", name, got, want, entries[0].CmdArgs.StdinData)
		}
		if strings.Contains(entries[0].CmdArgs.Args, "GENIE_NETWORKS") {
			t.Errorf("%s: GENIE_NETWORKS leaked to the delegate: %q", name, entries[0].CmdArgs.Args)
		}
	}
	if err := CmdDel(a); err != nil {
		t.Fatal(err)
	}
}

// TestPerNetworkRequests: NPWG ips/mac/bandwidth become runtimeConfig for the
// delegate and cni-args become args.cni in every plugin of its conflist.
func TestPerNetworkRequests(t *testing.T) {
	n, err := ParseNetwork([]byte(`{"cniVersion":"1.1.0","name":"x","plugins":[{"type":"macvlan","capabilities":{"ips":true}},{"type":"tuning","capabilities":{"mac":true},"args":{"cni":{"keep":"me"}}}]}`), "", "t")
	if err != nil {
		t.Fatal(err)
	}
	elems, err := selection.ParseNetworks(`[{"name":"x","ips":["10.9.0.5/24"],"mac":"02:00:00:00:00:09","cni-args":{"mtu":"9000"},"bandwidth":{"ingressRate":1,"ingressBurst":2,"egressRate":3,"egressBurst":4}}]`)
	if err != nil {
		t.Fatal(err)
	}
	inv := &invocation{conf: &NetConf{RuntimeConfig: map[string]any{"portMappings": []any{}}}, log: discardLogger()}
	p := &planned{Attachment: selection.Attachment{Element: elems[0], IfName: "net1"}, Network: n, Label: "ns/x"}
	rn, err := inv.recordNetwork(1, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rn.CapabilityArgs["portMappings"]; ok {
		t.Errorf("runtime config given to a non-default network: %v", rn.CapabilityArgs)
	}
	if rn.CapabilityArgs["mac"] != "02:00:00:00:00:09" || len(rn.CapabilityArgs["ips"].([]string)) != 1 || rn.CapabilityArgs["bandwidth"] == nil {
		t.Errorf("capability args %v", rn.CapabilityArgs)
	}
	var list struct {
		Plugins []struct {
			Args struct {
				CNI map[string]any `json:"cni"`
			} `json:"args"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(rn.Config, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Plugins) != 2 || list.Plugins[0].Args.CNI["mtu"] != "9000" || list.Plugins[1].Args.CNI["mtu"] != "9000" ||
		list.Plugins[1].Args.CNI["keep"] != "me" {
		t.Errorf("cni-args not injected into every plugin: %s", rn.Config)
	}
}

// TestConfDirLazyParse checks that parsing files only when a lookup reaches
// them keeps the eager semantics: an invalid file is skipped as if absent
// (a later file of the same name, then a type match, is used), genie's own
// conf is never a candidate, and all() lists exactly the valid networks.
func TestConfDirLazyParse(t *testing.T) {
	e := newUnprivEnv(t)
	e.write(t, "00-genie.conf", `{"cniVersion":"1.1.0","name":"dup","type":"genie"}`)
	e.write(t, "10-dup-bad.conf", `{"cniVersion":"1.1.0","name":"dup"}`) // no type: libcni refuses it
	e.write(t, "20-dup.conf", `{"cniVersion":"1.1.0","name":"dup","type":"ptp"}`)
	e.write(t, "30-other.conflist", `{"cniVersion":"1.1.0","name":"other","plugins":[{"type":"macvlan"}]}`)
	e.write(t, "40-garbage.json", `not json`)
	cd, err := loadConfDir(e.confDir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if n, err := cd.lookup("dup"); err != nil || n.firstType() != "ptp" {
		t.Fatalf("lookup dup: %v %v, want the valid 20-dup.conf", n, err)
	}
	if n, err := cd.lookup("macvlan"); err != nil || n.Name != "other" {
		t.Fatalf("lookup by type: %v %v", n, err)
	}
	if _, err := cd.lookup("genie"); err == nil {
		t.Fatal("genie's own conf was found by type")
	}
	var names []string
	for _, n := range cd.all() {
		names = append(names, n.Name)
	}
	if strings.Join(names, ",") != "dup,other" {
		t.Fatalf("all() = %v, want [dup other]", names)
	}
}

// TestLogFileOpenedOnFirstRecord checks that a call logging nothing leaves
// the log file alone, and that the first record creates it (and its dir).
func TestLogFileOpenedOnFirstRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "genie.log")
	log, done := newLogger(&NetConf{LogFile: path, LogLevel: "warn"})
	log.Info("below the level")
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("log file touched before any record: %v", err)
	}
	log.Warn("first record", "k", "v")
	done()
	data, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(data), "first record") || strings.Contains(string(data), "below") {
		t.Fatalf("log file = %q, %v", data, err)
	}
}

// A pod whose netns is gone fails ADD with code 8 before genie records
// anything, asks any delegate or the agent.
func TestAddMissingNetns(t *testing.T) {
	e := newUnprivEnv(t)
	agent := startAgent(t, e.socket)
	a := e.args("nons", "IgnoreUnknown=1;GENIE_NETWORKS=vpc:blue/web", t.TempDir())
	a.Netns = filepath.Join(e.dir, "gone")
	_, err := Add(a)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrInvalidNetNS || !strings.Contains(te.Msg, "open netns") || !strings.Contains(te.Msg, a.Netns) {
		t.Fatalf("add with a missing netns: %v, want code 8 naming the netns", err)
	}
	if len(agent.attached) != 0 || len(agent.attachRq) != 0 {
		t.Fatalf("the agent was asked to attach: %v", agent.attached)
	}
	if r, _ := os.ReadDir(e.stateDir); len(r) > 1 { // the lock file only
		t.Fatalf("state left: %v", r)
	}
}
