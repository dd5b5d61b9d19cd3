package genie

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func TestAttachWaves(t *testing.T) {
	for _, tc := range []struct {
		n, par int
		want   string
	}{
		{1, 4, "[[0]]"},
		{2, 4, "[[0] [1]]"},
		{4, 4, "[[0] [1 2 3]]"},
		{6, 2, "[[0] [1 2 3 4 5]]"}, // the bound is on goroutines, not waves
		{3, 1, "[[0] [1] [2]]"},
		{0, 4, "[]"},
	} {
		if got := fmt.Sprint(attachWaves(tc.n, tc.par)); got != tc.want {
			t.Errorf("attachWaves(%d, %d) = %s, want %s", tc.n, tc.par, got, tc.want)
		}
	}
}

// gateAgent is an in-test node agent behind the real socket protocol whose
// VPC attachments can wait for each other (proving they run at once),
// finish in an order of the test's choosing, and fail with a given code.
type gateAgent struct {
	mu       sync.Mutex
	cond     *sync.Cond
	inFlight int
	// gate: an attachment other than eth0 waits until this many are in
	// flight at once (0: no wait); after gateWait it fails instead.
	gate     int
	gateWait time.Duration
	delay    map[string]time.Duration // by VPC, after the gate
	fail     map[string]uint          // by VPC: the CNI code to fail with
	attached []string                 // containerID/ifname, in order of completion
	detached []string
	maxSeen  int
}

func startGateAgent(t *testing.T, socket string) *gateAgent {
	a := &gateAgent{delay: map[string]time.Duration{}, fail: map[string]uint{}, gateWait: 10 * time.Second}
	a.cond = sync.NewCond(&a.mu)
	l, err := agentapi.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: agentapi.Handler(a)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return a
}

// vpcIP is the address the agent gives an attachment of vpc: one per VPC,
// so a result's order can be read from its addresses.
func vpcIP(vpc string) net.IP { return net.IPv4(10, 77, vpc[0], 5) }

func (a *gateAgent) Attach(_ context.Context, r *agentapi.AttachRequest) (*current.Result, error) {
	a.mu.Lock()
	a.inFlight++
	a.maxSeen = max(a.maxSeen, a.inFlight)
	a.cond.Broadcast()
	gated := a.gate > 0 && r.IfName != "eth0"
	if gated {
		deadline := time.Now().Add(a.gateWait)
		go func() { time.Sleep(a.gateWait); a.cond.Broadcast() }()
		for a.maxSeen < a.gate && time.Now().Before(deadline) {
			a.cond.Wait()
		}
	}
	reached := !gated || a.maxSeen >= a.gate
	delay, code := a.delay[r.VPC], a.fail[r.VPC]
	a.mu.Unlock()
	time.Sleep(delay)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inFlight--
	if !reached {
		return nil, &types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf("%s: only %d attachments at once, want %d", r.IfName, a.maxSeen, a.gate)}
	}
	if code != 0 {
		return nil, &types.Error{Code: code, Msg: "vpc " + r.VPC + " refused"}
	}
	a.attached = append(a.attached, r.ContainerID+"/"+r.IfName)
	idx := 0
	return &current.Result{CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: r.IfName, Sandbox: r.Netns}},
		IPs:        []*current.IPConfig{{Interface: &idx, Address: net.IPNet{IP: vpcIP(r.VPC), Mask: net.CIDRMask(24, 32)}}},
	}, nil
}

func (a *gateAgent) Detach(_ context.Context, r *agentapi.DetachRequest) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.detached = append(a.detached, r.ContainerID+"/"+r.IfName)
	return nil
}
func (a *gateAgent) Check(context.Context, *agentapi.CheckRequest) error { return nil }
func (a *gateAgent) GC(context.Context, *agentapi.GCRequest) (*agentapi.GCResponse, error) {
	return &agentapi.GCResponse{}, nil
}
func (a *gateAgent) Status(context.Context) (*agentapi.StatusResponse, error) {
	return &agentapi.StatusResponse{Ready: true}, nil
}

// setParallelism sets attachParallelism in a genie stdin config.
func setParallelism(t *testing.T, stdin []byte, p int) []byte {
	conf := map[string]any{}
	if err := json.Unmarshal(stdin, &conf); err != nil {
		t.Fatal(err)
	}
	conf["attachParallelism"] = p
	out, _ := json.Marshal(conf)
	return out
}

// TestConcurrentAttachOrder: after the first network, the others are
// attached at once (the agent holds each until all three are in flight)
// and finish in reverse order, yet the merged result, the record and the
// IPs' interface indexes follow the selection. With attachParallelism 1
// they are attached strictly in order, one at a time.
func TestConcurrentAttachOrder(t *testing.T) {
	e := newUnprivEnv(t)
	agent := startGateAgent(t, e.socket)
	bin := t.TempDir()
	sel := "GENIE_NETWORKS=vpc:a/s,vpc:b/s,vpc:c/s@eth9,vpc:d/s"
	wantIfs := []string{"eth0", "net1", "eth9", "net2"}
	wantIPs := []string{"10.77.97.5/24", "10.77.98.5/24", "10.77.99.5/24", "10.77.100.5/24"}
	check := func(t *testing.T, cid string, r *current.Result) {
		t.Helper()
		var ifs, ips []string
		for _, i := range r.Interfaces {
			ifs = append(ifs, i.Name)
		}
		for k, ip := range r.IPs {
			ips = append(ips, ip.Address.String())
			if ip.Interface == nil || *ip.Interface != k {
				t.Errorf("IP %s points at interface %v, want %d", ip.Address.String(), ip.Interface, k)
			}
		}
		if !slices.Equal(ifs, wantIfs) || !slices.Equal(ips, wantIPs) {
			t.Fatalf("merged result interfaces %v IPs %v, want %v %v", ifs, ips, wantIfs, wantIPs)
		}
		rec, err := store{dir: e.stateDir}.load(cid, "eth0")
		if err != nil || rec == nil {
			t.Fatalf("record: %v %v", rec, err)
		}
		var recRes current.Result
		if err := json.Unmarshal(rec.Result, &recRes); err != nil || len(recRes.IPs) != 4 ||
			recRes.IPs[3].Address.String() != wantIPs[3] || rec.Networks[2].IfName != "eth9" {
			t.Fatalf("recorded result %s (%v), networks %+v", rec.Result, err, rec.Networks)
		}
	}

	agent.gate = 3
	agent.delay = map[string]time.Duration{"b": 200 * time.Millisecond, "c": 100 * time.Millisecond}
	res, err := Add(e.args("par", sel, bin))
	if err != nil {
		t.Fatalf("add: %v", err)
	}
	if want := []string{"par/eth0", "par/net2", "par/eth9", "par/net1"}; !slices.Equal(agent.attached, want) {
		t.Fatalf("agent finished %v, want %v (the delays reverse the order)", agent.attached, want)
	}
	check(t, "par", res.(*current.Result))
	if err := CmdDel(e.args("par", "", bin)); err != nil {
		t.Fatalf("del: %v", err)
	}
	if want := []string{"par/net2", "par/eth9", "par/net1", "par/eth0"}; !slices.Equal(agent.detached, want) {
		t.Fatalf("DEL order %v, want %v", agent.detached, want)
	}

	agent.gate, agent.maxSeen, agent.attached = 0, 0, nil
	a := e.args("seq", sel, bin)
	a.StdinData = setParallelism(t, a.StdinData, 1)
	if res, err = Add(a); err != nil {
		t.Fatalf("add with attachParallelism 1: %v", err)
	}
	if want := []string{"seq/eth0", "seq/net1", "seq/eth9", "seq/net2"}; !slices.Equal(agent.attached, want) || agent.maxSeen != 1 {
		t.Fatalf("attachParallelism 1: attached %v, %d at once", agent.attached, agent.maxSeen)
	}
	check(t, "seq", res.(*current.Result))
}

// noopNet writes a conf for a noop-plugin network (the CNI project's test
// plugin, a real process) that returns ip or fails with code; it returns
// the path of the network's command log.
func noopNet(t *testing.T, e *unprivEnv, name, ip string, code uint) string {
	dbg := filepath.Join(e.dir, name+".debug")
	log := filepath.Join(e.dir, name+".log")
	d := map[string]any{}
	if code != 0 {
		d["ReportError"], d["ReportErrorCode"] = name+" broke", code
	} else {
		res, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0",
			"interfaces": []any{map[string]any{"name": name}},
			"ips":        []any{map[string]any{"interface": 0, "address": ip + "/24"}}})
		d["ReportResult"] = string(res)
	}
	data, _ := json.Marshal(d)
	os.WriteFile(dbg, data, 0o644)
	os.WriteFile(log, []byte(`[]`), 0o644)
	e.write(t, "10-"+name+".conf", `{"cniVersion":"1.1.0","name":"`+name+`","type":"noop",`+
		`"debugFile":"`+dbg+`","commandLog":"`+log+`"}`)
	return log
}

// commands reads a noop command log: the verbs in order.
func commands(t *testing.T, log string) []string {
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	var entries []struct{ Command string }
	if err := json.Unmarshal(data, &entries); err != nil {
		t.Fatalf("%s: %v", log, err)
	}
	var out []string
	for _, en := range entries {
		out = append(out, en.Command)
	}
	return out
}

// TestConcurrentAttachRollback: a concurrent wave with two failures (a
// noop plugin failing fast with code 7, a VPC failing later with code 11,
// earlier in the selection) reports the VPC's error, the first in
// attachment order, with its code; every attachment that ran (the ones
// that succeeded and the ones that failed) is deleted and the record
// removed. A failure of the first network starts nothing else. DEL after
// either succeeds.
func TestConcurrentAttachRollback(t *testing.T) {
	noop := noopPlugin(t)
	bin := filepath.Dir(noop)
	e := newUnprivEnv(t)
	agent := startGateAgent(t, e.socket)
	ok0 := noopNet(t, e, "ok0", "10.1.0.2", 0)
	ok1 := noopNet(t, e, "ok1", "10.1.1.2", 0)
	bad := noopNet(t, e, "bad", "", types.ErrInvalidNetworkConfig)
	first := noopNet(t, e, "first", "", types.ErrTryAgainLater)
	agent.fail["red"] = types.ErrTryAgainLater
	agent.delay["red"] = 300 * time.Millisecond // fails after bad did

	a := e.args("rb", "GENIE_NETWORKS=ok0,vpc:blue/web,vpc:red/db,ok1,bad", bin)
	_, err := Add(a)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, `"vpc:red/db" (net2): add`) {
		t.Fatalf("want the VPC's error (code %d, net2), got %v", types.ErrTryAgainLater, err)
	}
	if te.Details != "" {
		t.Fatalf("rollback reported a problem: %s", te.Details)
	}
	for name, log := range map[string]string{"ok0": ok0, "ok1": ok1, "bad": bad} {
		if got := commands(t, log); !slices.Equal(got, []string{"ADD", "DEL"}) {
			t.Errorf("%s: commands %v, want ADD then DEL", name, got)
		}
	}
	if got := commands(t, first); len(got) != 0 {
		t.Errorf("unselected network ran %v", got)
	}
	// Reverse record order: net2 (red, failed) then net1 (blue).
	if want := []string{"rb/net2", "rb/net1"}; !slices.Equal(agent.detached, want) {
		t.Fatalf("agent detached %v, want %v", agent.detached, want)
	}
	if rec, err := (store{dir: e.stateDir}).load("rb", "eth0"); rec != nil || err != nil {
		t.Fatalf("record of the failed ADD left: %+v %v", rec, err)
	}
	if err := CmdDel(e.args("rb", "", bin)); err != nil {
		t.Fatalf("DEL after the failed ADD: %v", err)
	}

	// The first network fails: nothing else starts.
	agent.detached = nil
	for _, log := range []string{ok0, ok1} {
		os.WriteFile(log, []byte(`[]`), 0o644)
	}
	_, err = Add(e.args("rb2", "GENIE_NETWORKS=first,ok0,vpc:blue/web,ok1", bin))
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, `"first" (eth0): add`) {
		t.Fatalf("want first's error, got %v", err)
	}
	if got := commands(t, first); !slices.Equal(got, []string{"ADD", "DEL"}) {
		t.Errorf("first: commands %v, want ADD then DEL", got)
	}
	for name, log := range map[string]string{"ok0": ok0, "ok1": ok1} {
		if got := commands(t, log); len(got) != 0 {
			t.Errorf("%s ran %v after the first network failed", name, got)
		}
	}
	if len(agent.detached) != 0 {
		t.Errorf("agent detached %v after the first network failed", agent.detached)
	}
	if err := CmdDel(e.args("rb2", "", bin)); err != nil {
		t.Fatalf("DEL after the failed ADD: %v", err)
	}

	// A VPC first, then two delegates at once (under -race: nothing
	// libcni sets up lazily is shared between them).
	res, err := Add(e.args("mix", "GENIE_NETWORKS=vpc:blue/web,ok0,ok1", bin))
	if err != nil {
		t.Fatalf("add: %v", err)
	}
	r := res.(*current.Result)
	if len(r.IPs) != 3 || r.IPs[1].Address.String() != "10.1.0.2/24" || r.IPs[2].Address.String() != "10.1.1.2/24" ||
		*r.IPs[2].Interface != 2 || r.Interfaces[2].Name != "ok1" {
		t.Fatalf("merged result %+v", r)
	}
	if err := CmdDel(e.args("mix", "", bin)); err != nil {
		t.Fatalf("del: %v", err)
	}
}
