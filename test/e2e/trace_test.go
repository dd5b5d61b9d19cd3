package e2e

import (
	"bufio"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/cni-genie/cni-genie/pkg/agentapi"
	"github.com/cni-genie/cni-genie/pkg/sandbox"
	"github.com/cni-genie/cni-genie/pkg/sandbox/sandboxtest"
)

// traceClient is a running `geniectl trace -o json`.
type traceClient struct {
	cmd    *exec.Cmd
	events chan agentapi.TraceEvent
	stderr *strings.Builder
}

// startTrace runs geniectl trace with args and waits until the agent has
// switched tracing on (its first message).
func startTrace(t *testing.T, sb *sandbox.Sandbox, args ...string) *traceClient {
	t.Helper()
	full := append([]string{"--sandbox", sb.Name(), "trace", "-o", "json"}, args...)
	cmd := exec.Command(filepath.Join(sandboxtest.BinDir(), "geniectl"), full...)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := &traceClient{cmd: cmd, events: make(chan agentapi.TraceEvent, 100), stderr: &strings.Builder{}}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.stderr.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "tracing drops") {
				close(ready)
			}
		}
	}()
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev agentapi.TraceEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Errorf("geniectl trace printed %q: %v", sc.Text(), err)
				continue
			}
			c.events <- ev
		}
		close(c.events)
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatalf("geniectl trace %v did not start: %s", args, c.stderr)
	}
	return c
}

// sendUDP sends one datagram from the pod's namespace (its current
// address, spoofed or not, is the source).
func sendUDP(t *testing.T, p *sandbox.Pod, to netip.Addr, port int) {
	t.Helper()
	err := sandbox.InNetns(p.Netns, func() error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(to, uint16(port)).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("trace me"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// traceFlag reads the data plane's trace flag of a node from its pin.
func traceFlag(t *testing.T, sb *sandbox.Sandbox, node string) uint32 {
	t.Helper()
	n, err := sb.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(n.PinDir, "genie_trace_state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var st struct {
		Enabled, Pad uint32
		Lost         uint64
	}
	if err := m.Lookup(uint32(0), &st); err != nil {
		t.Fatal(err)
	}
	return st.Enabled
}

// TestPrivilegedTrace: `geniectl trace` shows a pod's spoofed packet live
// with the right reason, pod, VPC and addresses; --pod leaves out another
// pod's drops on the same node; two clients trace at once; the data plane's
// trace flag is on exactly while someone traces.
func TestPrivilegedTrace(t *testing.T) {
	sb := newSandbox(t, 2)
	mkVPC(t, sb, "blue", "10.10.0.0/16", "10.10.1.0/24")
	a := addPod(t, sb, "a", "node1", "blue/web")
	b := addPod(t, sb, "b", "node2", "blue/web")
	c := addPod(t, sb, "c", "node1", "blue/web")
	bIP := ipOf(t, b, "eth0")
	mustReach(t, "a->b", ep(a, ""), ep(b, ""), bIP, 8000)
	if f := traceFlag(t, sb, "node1"); f != 0 {
		t.Fatalf("trace flag %d before any client", f)
	}

	ofA := startTrace(t, sb, "--pod", "a", "--reason", "SPOOFED_IP", "--count", "1")
	all := startTrace(t, sb, "--node", "node1", "--vpc", "blue")
	if f := traceFlag(t, sb, "node1"); f != 1 {
		t.Fatalf("trace flag %d with two clients", f)
	}
	if f := traceFlag(t, sb, "node2"); f != 0 {
		t.Errorf("trace flag %d on node2, traced by nobody", f)
	}

	// c's forged packet first: the pod filter must leave it out.
	spoofC := netip.MustParseAddr("10.10.1.251")
	setAddr(t, c.Netns, ipOf(t, c, "eth0"), spoofC)
	sendUDP(t, c, bIP, 9000)
	var ev agentapi.TraceEvent
	select {
	case ev = <-all.events:
	case <-time.After(10 * time.Second):
		t.Fatalf("no drop traced on node1 after c's forged packet; stderr: %s", all.stderr)
	}
	if ev.Reason != "SPOOFED_IP" || ev.Pod == nil || ev.Pod.ContainerID != c.ContainerID || ev.Src != spoofC.String() {
		t.Errorf("c's drop traced as %+v (pod %+v)", ev, ev.Pod)
	}

	spoofA := netip.MustParseAddr("10.10.1.250")
	setAddr(t, a.Netns, ipOf(t, a, "eth0"), spoofA)
	var got agentapi.TraceEvent
	deadline := time.After(10 * time.Second)
wait:
	for {
		sendUDP(t, a, bIP, 9001)
		select {
		case e, ok := <-ofA.events:
			if !ok {
				t.Fatalf("trace of pod a ended without an event: %s", ofA.stderr)
			}
			got = e
			break wait
		case <-deadline:
			t.Fatalf("no SPOOFED_IP drop of pod a traced; stderr: %s", ofA.stderr)
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Logf("traced: %+v pod %+v", got, got.Pod)
	if got.Reason != "SPOOFED_IP" || got.Direction != "from-pod" || got.Node != "node1" || got.VPC != "blue" || got.VNI == 0 ||
		got.Pod == nil || got.Pod.ContainerID != a.ContainerID || got.Pod.Interface != "eth0" || got.Src != spoofA.String() {
		t.Errorf("pod a's forged packet traced as %+v (pod %+v)", got, got.Pod)
	}
	if got.Protocol == "udp" && (got.Dst != bIP.String() || got.DstPort != 9001) {
		t.Errorf("forged datagram traced to %s:%d, sent to %s:9001", got.Dst, got.DstPort, bIP)
	}
	// --count 1: that client exits by itself; the other still traces.
	done := make(chan error, 1)
	go func() { done <- ofA.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("geniectl trace --count 1: %v: %s", err, ofA.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("geniectl trace --count 1 did not exit")
	}
	if f := traceFlag(t, sb, "node1"); f != 1 {
		t.Errorf("trace flag %d with one client left", f)
	}
	all.cmd.Process.Signal(os.Interrupt)
	all.cmd.Wait()
	waitFor(t, "trace flag cleared after the last client", 5*time.Second, func() bool { return traceFlag(t, sb, "node1") == 0 })

	// A filter naming nothing on the node is an error, not silence.
	out, err := exec.Command(filepath.Join(sandboxtest.BinDir(), "geniectl"), "--sandbox", sb.Name(), "trace", "--node", "node2", "--pod", "a").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no VPC attachment on node node2") {
		t.Errorf("trace of a pod on another node: %v\n%s", err, out)
	}
	out, err = exec.Command(filepath.Join(sandboxtest.BinDir(), "geniectl"), "--sandbox", sb.Name(), "trace", "--node", "1", "--reason", "NOPE").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unknown drop reason "NOPE"`) {
		t.Errorf("trace with a bad reason: %v\n%s", err, out)
	}
}
